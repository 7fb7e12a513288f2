"""The Faust agents: thin wiring around the plain functions of :mod:`finpulse.stream.pipeline` and
:mod:`finpulse.alerts`.

* ``classify``: ``news.raw`` -> micro-batches -> ONNX in inference threads (pipelined) -> ``news.scored``
  (+ ``news.dlq``)
* ``aggregate``: ``news.scored`` -> Redis windows -> detector -> ``alerts``
* ``deliver``: ``alerts`` -> durable webhook queue in Redis; a background task delivers it.

Offsets: the classify agent acknowledges a batch's events itself (``noack_take`` + ``stream.ack``)
after its outputs were acknowledged by the broker; the other agents use ``take_events``, which acks
a batch only after the loop body finished, and every produce in a body is awaited until the broker
acknowledged it. So an offset is committed only after the messages derived from it are durable. A
crash before the commit redelivers the batch; Redis de-duplicates by article id (first labels
win), and alert ids are deterministic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque

from finpulse.core.constants import metrics_key
from finpulse.core.heartbeat import BEAT_INTERVAL_S, beat, heartbeat_path
from finpulse.core.metrics import metrics
from finpulse.core.opsserver import start_ops_server, tcp_check
from finpulse.core.stackstate import resolve_bootstrap
from finpulse.models import Classifier
from finpulse.models.lifecycle import compare

from .app import agent, current, on_shutdown, task, timer
from .logwatch import CHECK_INTERVAL_S
from .messages import dead_letter
from .pipeline import RawItem, encode, score_batch
from .resilience import describe, isolate, retry_infra, stop_worker
from .services import worker_env_summary

log = logging.getLogger(__name__)

DRIFT_CHECK_S = 60.0
"""How often the worker compares its recent predictions with the model's reference."""
_drift_logged: dict[str, float] = {}

RAW_TS_HEADER = "finpulse-raw-ts"
"""Header of a ``news.scored`` record: when its ``news.raw`` record was appended (epoch seconds)."""


async def _send(topic, messages: list[tuple]) -> None:
    futures = [await topic.send(key=m[0], value=m[1], headers=m[2] if len(m) > 2 else None, force=True)
               for m in messages]
    if futures:
        # shielded: a worker stopping while a batch is produced cancels the agent, not the sends
        # (the producer completes them as it stops; cancelling them made Faust's publish callback
        # print a traceback on every such shutdown)
        await asyncio.shield(asyncio.gather(*futures))


async def _produce(topic, messages: list[tuple]) -> None:
    """Send ``(key, value[, headers])`` messages and wait until the broker acknowledged every one;
    broker outages are waited out
    (:func:`~finpulse.stream.resilience.retry_infra`: a retry may send a message twice, which every
    consumer of our topics tolerates: ids are deterministic)."""
    if messages:
        await retry_infra(lambda: _send(topic, messages), what=f"produce to {topic.get_topic_name()}",
                          give_up_after_s=current().settings.infra_retry_s)


def _by_reason(dead: list[dict]) -> dict[str, int]:
    """Dead letters per ``dlq:<stage>:<reason code>`` field of the metrics hash (the dashboard's table)."""
    out: dict[str, int] = {}
    for d in dead:
        k = f"dlq:{d.get('stage', '')}:{d['reason'].split(':', 1)[0]}"
        out[k] = out.get(k, 0) + 1
    return out


async def _count(**fields: int) -> None:
    """Add to the namespace's metrics hash (Redis outages are waited out)."""
    w = current()
    if not any(fields.values()):
        return

    async def incr() -> None:
        r = await w.services.redis()
        pipe = r.pipeline(transaction=False)
        for name, n in fields.items():
            if n:
                pipe.hincrby(metrics_key(w.settings.namespace), name, n)
        await pipe.execute()

    await retry_infra(incr, what="metrics in Redis", give_up_after_s=w.settings.infra_retry_s)


async def _ack(stream, events) -> None:
    """Acknowledge processed events (their offsets may now be committed) and note them for the log watch."""
    lw = await current().services.logwatch()
    for e in events:
        await stream.ack(e)
        lw.saw(e.message.topic, e.message.partition, e.message.offset)


def _log_dead(dead: list[dict]) -> None:
    """Log each dead letter and count it by stage and reason code."""
    m = metrics()
    for d in dead:
        log.warning("dead-lettered %s[%s]@%s: %s", d["topic"], d["partition"], d["offset"], d["reason"][:300])
        m.headlines_dead_lettered.labels(stage=d.get("stage", ""), reason=d["reason"].split(":", 1)[0]).inc()


def _observe_batch(stage: str, events, started: float) -> None:
    """Batch duration of ``stage``, and how old the newest message of the batch was (consumer lag)."""
    m = metrics()
    now = time.time()
    m.batch_duration.labels(stage=stage).observe(time.perf_counter() - started)
    stamps = [e.message.timestamp for e in events if e.message.timestamp]
    if stamps:
        m.consumer_lag.labels(topic=events[0].message.topic).set(max(0.0, now - max(stamps)))


def _raw_ts(message) -> float | None:
    """The ``news.raw`` append time a scored record carries in its headers (for the end-to-end lag)."""
    headers = message.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    for k, v in items:
        if k == RAW_TS_HEADER:
            try:
                return float(v.decode() if isinstance(v, bytes) else v)
            except ValueError:
                return None
    return None


def _dead(m, reason: str, stage: str, now: float) -> dict:
    """A dead letter for the consumed message ``m`` (a Faust ``Message``)."""
    return dead_letter(m.value, reason, topic=m.topic, partition=m.partition, offset=m.offset, stage=stage, now=now)


@agent("raw", concurrency=1)
async def classify(stream):
    """Classify micro-batches of raw headlines, pipelined.

    While batch N is in an inference thread, the agent already collects batch N+1, and the
    scored output of batch N-1 is produced: ``settings.infer_workers`` batches are classified at
    once and one more is collected or produced. Batches are finished strictly in order (outputs
    keep partition order), and a batch's offsets are acknowledged only after its outputs were
    acknowledged by the broker (``noack_take`` + manual ``stream.ack``). Unfinished batches of a
    stopping worker are never acknowledged, so they are redelivered.
    """
    w = current()
    settings, services, topics = w.settings, w.services, w.topics
    log.info("classify agent started: %s", worker_env_summary(settings))
    loop = asyncio.get_running_loop()
    clf = await services.classifier()
    control = await services.control()
    monitor = await services.monitor()
    m = metrics()
    m.model_info.labels(version=clf.model_version).set(1)
    oldest_ts = settings.oldest_event_ts()
    inflight: deque[asyncio.Task] = deque()

    def scorer(clf: Classifier, shadow: Classifier | None, agreement: dict[str, int]):
        """``classify`` for one batch: the version in force; the shadow version's labels only counted."""
        def classify(texts: list[str]) -> list[dict]:
            t0 = time.perf_counter()
            try:
                results = clf.classify(texts)
            finally:
                m.inference_duration.observe(time.perf_counter() - t0)
            if shadow is not None:
                try:
                    for k, v in compare(results, shadow.classify(texts)).items():
                        agreement[k] = agreement.get(k, 0) + v
                except Exception:  # noqa: BLE001 - the shadow never affects what is published
                    log.exception("shadow model %s failed on a batch; not compared", shadow.model_version)
            return results
        return classify

    async def finish(events, scoring: asyncio.Future, previous: asyncio.Task | None, started: float,
                     clf: Classifier, shadow: Classifier | None, agreement: dict[str, int]) -> None:
        batch = await scoring
        if previous is not None:
            await previous  # keep output order; a failed predecessor fails this batch too
        await _produce(topics.scored, [
            (msg["id"].encode(), v, [(RAW_TS_HEADER, str(src.timestamp).encode())] if src.timestamp else None)
            for msg, v, src in zip(batch.scored, batch.encoded, batch.sources, strict=True)])
        if batch.dead:
            _log_dead(batch.dead)
            await _produce(topics.dlq, [(None, encode(d)) for d in batch.dead])
        await _count(classified=len(batch.scored), dead_lettered=len(batch.dead), **_by_reason(batch.dead))
        await retry_infra(lambda: monitor.observe(batch.scored), what="model monitoring in Redis",
                          give_up_after_s=settings.infra_retry_s)
        if shadow is not None:
            await retry_infra(lambda: control.record_agreement(shadow.model_version, clf.model_version, agreement),
                              what="shadow agreement in Redis", give_up_after_s=settings.infra_retry_s)
            for result, field in (("compared", "n"), ("topic_agrees", "topic"), ("sentiment_agrees", "sentiment")):
                m.model_shadow.labels(shadow=shadow.model_version, result=result).inc(agreement.get(field, 0))
        m.headlines_classified.inc(len(batch.scored))
        await _ack(stream, events)
        _observe_batch("classify", events, started)

    try:
        async for events in stream.noack_take(settings.batch_max, settings.batch_within):
            started = time.perf_counter()
            items = [RawItem(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                             e.message.key, e.message.timestamp) for e in events]
            batch_clf, shadow = await retry_infra(services.scoring_models, what="model version in Redis",
                                                  give_up_after_s=settings.infra_retry_s)
            if batch_clf is not clf:
                m.model_info.remove(clf.model_version)
                m.model_info.labels(version=batch_clf.model_version).set(1)
                clf = batch_clf
            agreement: dict[str, int] = {}
            classify = scorer(batch_clf, shadow, agreement)
            scoring = loop.run_in_executor(
                services.executor,
                lambda items=items, classify=classify: score_batch(
                    items, classify, max_bytes=settings.max_payload_bytes,
                    future_tolerance_s=settings.future_tolerance_s, oldest_ts=oldest_ts))
            inflight.append(asyncio.ensure_future(finish(events, scoring, inflight[-1] if inflight else None,
                                                         started, batch_clf, shadow, agreement)))
            while inflight and (inflight[0].done() or len(inflight) > settings.infer_workers):
                await inflight.popleft()
    finally:
        for task in inflight:  # stopping: their offsets stay unacknowledged and are redelivered
            task.cancel()
        # collect them, so a batch that failed before the cancel does not log "exception never retrieved"
        await asyncio.gather(*inflight, return_exceptions=True)


@agent("scored", concurrency=1)
async def aggregate(stream):
    """Update the Redis windows, evaluate the rules, publish alerts.

    A batch is acknowledged only after it was recorded, its dead letters and alerts were
    acknowledged by the broker and its metrics written. Articles that make recording fail (a
    message fault) are found by bisection and dead-lettered; Redis and broker outages are retried
    and, past ``infra_retry_s``, stop the worker with the batch unacknowledged.
    """
    w = current()
    settings, services, topics = w.settings, w.services, w.topics
    store = await services.store()
    detector = await services.detector()
    history = await services.history()
    m = metrics()
    give_up = settings.infra_retry_s
    async for events in stream.noack_take(settings.batch_max * 4, settings.batch_within):
        now, started = time.time(), time.perf_counter()
        totals = {"counted": 0, "duplicates": 0, "syndicated": 0, "late": 0}
        articles, dead, ok_events = [], [], []
        for e in events:
            try:
                articles.append(json.loads(e.message.value))
                ok_events.append(e)
            except Exception as exc:  # noqa: BLE001 - not JSON, nested too deep, a number too long...
                dead.append(_dead(e.message, f"not_json: news.scored value is not JSON ({describe(exc)})",
                                  "aggregate", now))
        invalid: dict[int, str] = {}

        partitions = [e.message.partition for e in ok_events]

        async def record(idx, articles=articles, invalid=invalid, partitions=partitions, totals=totals) -> None:
            res = await store.record([articles[i] for i in idx], [partitions[i] for i in idx])
            for j, reason in res.invalid:  # parsable JSON but not a usable scored article
                invalid[idx[j]] = reason
            for k in totals:
                totals[k] += getattr(res, k)

        failed = await isolate(list(range(len(articles))), record, what="record in Redis", give_up_after_s=give_up)
        for i, reason in sorted(invalid.items()):
            dead.append(_dead(ok_events[i].message, f"invalid_scored: {reason}", "aggregate", now))
        for i, fault in failed:
            log.error("news.scored message at %s[%s]@%s cannot be recorded: %s", ok_events[i].message.topic,
                      ok_events[i].message.partition, ok_events[i].message.offset, describe(fault))
            dead.append(_dead(ok_events[i].message, f"unrecordable: {describe(fault)}", "aggregate", now))
        _log_dead(dead)
        await _produce(topics.dlq, [(None, encode(d)) for d in dead])
        alerts = await retry_infra(detector.evaluate, what="detector in Redis", give_up_after_s=give_up)
        if alerts:
            await _publish_alerts(alerts, detector, history, give_up)
        # record() itself counts counted / duplicates / syndicated / late / invalid in the same hash
        await _count(alerts_emitted=len(alerts), dead_lettered=len(dead), **_by_reason(dead))
        await _ack(stream, events)
        m.headlines_counted.inc(totals["counted"])
        m.headlines_duplicate.labels(kind="redelivered").inc(totals["duplicates"])
        m.headlines_duplicate.labels(kind="syndicated").inc(totals["syndicated"])
        m.headlines_late.inc(totals["late"])
        done = time.time()
        for e in ok_events:
            raw_ts = _raw_ts(e.message)
            if raw_ts is not None:
                m.end_to_end_lag.observe(max(0.0, done - raw_ts))
        _observe_batch("aggregate", events, started)


async def _publish_alerts(alerts: list[dict], detector, history, give_up: float) -> None:
    """Produce alert records, keep them in the history, then acknowledge them to the detector."""
    w = current()
    await _produce(w.topics.alerts, [(a["alert_id"].encode(), encode(a)) for a in alerts])
    await retry_infra(lambda: history.add(alerts), what="alert history in Redis", give_up_after_s=give_up)
    await retry_infra(lambda: detector.mark_emitted(alerts), what="detector in Redis", give_up_after_s=give_up)
    for a in alerts:
        metrics().alerts.labels(status=a["status"], severity=a["severity"]).inc()
        log.warning("ALERT %s %s %s rate=%.2f n=%s", a["status"], a["rule"], a["scope"],
                    a["negative_rate"], a["count"])


@task()
async def restore_root_log_level() -> None:
    """Undo Faust's startup-spinner logging once the worker runs.

    With ``-l warn`` or higher, Faust's worker sets the root logger to DEBUG so that its terminal
    spinner sees every record; every ``log.debug`` in aiokafka and Faust then built a record that
    the handlers threw away (2.5 % of the event loop's time at full load). The root goes back to
    the lowest level of its other handlers.
    """
    root = logging.getLogger()
    levels = [h.level for h in root.handlers if type(h).__name__ != "SpinnerHandler"]
    if levels and min(levels) > root.level:
        root.setLevel(min(levels))


@timer(interval=BEAT_INTERVAL_S)
async def heartbeat() -> None:
    """Touch the worker's heartbeat file (``finpulse health worker`` reads its age)."""
    w = current()
    beat(heartbeat_path(w.settings, "worker"))


@timer(interval=CHECK_INTERVAL_S)
async def watch_the_log() -> None:
    """Notice a Kafka log that went backwards (wiped broker, re-created topic, truncation) and follow
    the policy of :mod:`finpulse.stream.logwatch`: log, count, plan a rewind, stop the worker."""
    w = current()
    lw = await w.services.logwatch()
    consumer = w.app.consumer

    def log_ends() -> dict[tuple[str, int], int]:
        ends = {}
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is not None and hw >= 0:
                ends[(tp.topic, tp.partition)] = hw
        return ends

    try:
        resets = await lw.check(log_ends)
    except Exception as exc:  # noqa: BLE001 - an unreachable broker or Redis: the agents wait it out
        log.debug("log check skipped: %r", exc)
        return
    if resets:
        for r in resets:
            log.error("Kafka log of %s went backwards: %s; it will be re-read from its start", r.topic, r.why)
        stop_worker(f"the Kafka log went backwards ({', '.join(r.topic for r in resets)}); restart to rewind "
                    "and re-read it (docs/pipeline.md, offset resets)",
                    on_stop=lambda: w.faults.append("log reset"))


@timer(interval=15.0)
async def close_quiet_buckets():
    """Live mode: close event-time buckets when news is quiet, so alerts resolve on time; only when the
    consumer group has caught up with ``news.raw`` and ``news.scored`` (:meth:`LogWatch.caught_up`)."""
    w = current()
    if w.settings.namespace != "live":
        return
    # only once the group has caught up: closing buckets by the wall clock while a backlog (after
    # downtime) is still to be counted would skip the backlog's buckets for good
    if not await (await w.services.logwatch()).caught_up():
        log.debug("quiet-bucket closing waits: the consumer group has a backlog")
        return
    detector = await w.services.detector()
    alerts = await detector.tick(time.time())
    if alerts:
        await _publish_alerts(alerts, detector, await w.services.history(), w.settings.infra_retry_s)


@agent("alerts", concurrency=1)
async def deliver(stream):
    """Enqueue each alert for every matching webhook endpoint (durably, in Redis).

    An alert is acknowledged only after it was queued (or dead-lettered); Redis outages are retried
    and, past ``infra_retry_s``, stop the worker with the alert unacknowledged.
    """
    w = current()
    svc = await w.services.delivery()
    give_up = w.settings.infra_retry_s
    async for events in stream.noack_take(64, w.settings.batch_within):
        now = time.time()
        dead = []
        for e in events:
            m = e.message
            try:
                alert = json.loads(m.value)
                if not isinstance(alert, dict):
                    raise ValueError(f"alert is JSON {type(alert).__name__}, expected an object")
            except Exception as exc:  # noqa: BLE001
                dead.append(_dead(m, f"not_json: alert is not a JSON object ({describe(exc)})", "deliver", now))
                continue
            failed = await isolate([alert], lambda b: svc.enqueue(b[0]), what="queue webhooks in Redis",
                                   give_up_after_s=give_up)
            for _, fault in failed:
                dead.append(_dead(m, f"unqueueable: {describe(fault)}", "deliver", now))
        _log_dead(dead)
        await _produce(w.topics.dlq, [(None, encode(d)) for d in dead])
        await _count(dead_lettered=len(dead), **_by_reason(dead))
        await _ack(stream, events)


@task()
async def run_deliveries():
    """Deliver due webhooks until the worker stops (retries are scheduled in Redis)."""
    w = current()
    svc = await w.services.delivery()

    async def on_dead(record: dict) -> None:
        await _produce(w.topics.alerts_dlq, [(record.get("alert_id", "").encode() or None, encode(record))])

    await svc.run(on_dead)


@on_shutdown()
async def stop_deliveries(sender, **kwargs) -> None:
    """Worker shutdown: the delivery loop ends after its current attempt instead of mid-request."""
    current().services.stop_delivery()


@task()
async def serve_operations() -> None:
    """``/livez``, ``/readyz`` (Redis answers, the broker accepts connections, the model is loaded)
    and ``/metrics`` on ``worker_ops_port`` (:mod:`finpulse.core.opsserver`)."""
    w = current()
    settings, services = w.settings, w.services
    bootstrap = resolve_bootstrap(settings)

    async def redis_ok() -> None:
        await (await services.redis()).ping()

    async def broker_ok() -> None:
        await tcp_check(bootstrap)

    async def model_ok() -> None:
        if not services.model_loaded():
            raise RuntimeError("the model is not loaded yet")

    services.ops = await start_ops_server(settings.ops_host, settings.worker_ops_port,
                                          {"redis": redis_ok, "broker": broker_ok, "model": model_ok},
                                          metrics().registry, what="worker operations endpoints")


@timer(interval=DRIFT_CHECK_S)
async def watch_model_drift() -> None:
    """Compare the recent predictions of the model version in force with its reference
    (:mod:`finpulse.stream.monitoring`); export the PSI per distribution and log drift (hourly)."""
    w = current()
    clf = await w.services.classifier()
    monitor = await w.services.monitor()
    rep = await retry_infra(lambda: monitor.report(clf.model_version), what="model monitoring in Redis",
                            give_up_after_s=w.settings.infra_retry_s)
    m = metrics()
    for kind, v in rep["kinds"].items():
        m.model_drift.labels(kind=kind).set(v["psi"] if rep["judged"] else float("nan"))
    m.model_monitored.labels(window="reference").set(rep["n_reference"])
    m.model_monitored.labels(window="recent").set(rep["n_current"])
    now = time.monotonic()
    for kind in rep["drifted"]:
        if now - _drift_logged.get(kind, -1e9) >= 3600:
            _drift_logged[kind] = now
            log.error("model drift: %s of model %s has PSI %.2f against its reference (%d headlines) over the "
                      "last %d h (%d headlines); see docs/operations.md", kind, clf.model_version,
                      rep["kinds"][kind]["psi"], rep["n_reference"], rep["window_hours"], rep["n_current"])

