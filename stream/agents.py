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

from .app import agent, current, on_shutdown, task, timer
from .logwatch import CHECK_INTERVAL_S
from .messages import dead_letter
from .pipeline import RawItem, encode, score_batch
from .resilience import describe, isolate, retry_infra, stop_worker
from .services import worker_env_summary

log = logging.getLogger(__name__)


async def _send(topic, messages: list[tuple[bytes | None, bytes]]) -> None:
    futures = [await topic.send(key=k, value=v, force=True) for k, v in messages]
    if futures:
        # shielded: a worker stopping while a batch is produced cancels the agent, not the sends
        # (the producer completes them as it stops; cancelling them made Faust's publish callback
        # print a traceback on every such shutdown)
        await asyncio.shield(asyncio.gather(*futures))


async def _produce(topic, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Send and wait until the broker acknowledged every message; broker outages are waited out
    (:func:`~finpulse.stream.resilience.retry_infra`: a retry may send a message twice, which every
    consumer of our topics tolerates: ids are deterministic)."""
    if messages:
        await retry_infra(lambda: _send(topic, messages), what=f"produce to {topic.get_topic_name()}",
                          give_up_after_s=current().settings.infra_retry_s)


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
    for d in dead:
        log.warning("dead-lettered %s[%s]@%s: %s", d["topic"], d["partition"], d["offset"], d["reason"][:300])


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
    oldest_ts = settings.oldest_event_ts()
    inflight: deque[asyncio.Task] = deque()

    async def finish(events, scoring: asyncio.Future, previous: asyncio.Task | None) -> None:
        batch = await scoring
        if previous is not None:
            await previous  # keep output order; a failed predecessor fails this batch too
        await _produce(topics.scored, [(m["id"].encode(), v) for m, v in zip(batch.scored, batch.encoded, strict=True)])
        if batch.dead:
            _log_dead(batch.dead)
            await _produce(topics.dlq, [(None, encode(d)) for d in batch.dead])
        await _count(classified=len(batch.scored), dead_lettered=len(batch.dead))
        await _ack(stream, events)

    try:
        async for events in stream.noack_take(settings.batch_max, settings.batch_within):
            items = [RawItem(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                             e.message.key) for e in events]
            scoring = loop.run_in_executor(
                services.executor,
                lambda items=items: score_batch(items, clf.classify, max_bytes=settings.max_payload_bytes,
                                                future_tolerance_s=settings.future_tolerance_s,
                                                oldest_ts=oldest_ts))
            inflight.append(asyncio.ensure_future(finish(events, scoring, inflight[-1] if inflight else None)))
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
    give_up = settings.infra_retry_s
    async for events in stream.noack_take(settings.batch_max * 4, settings.batch_within):
        now = time.time()
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

        async def record(idx, articles=articles, invalid=invalid, partitions=partitions) -> None:
            res = await store.record([articles[i] for i in idx], [partitions[i] for i in idx])
            for j, reason in res.invalid:  # parsable JSON but not a usable scored article
                invalid[idx[j]] = reason

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
            await _produce(topics.alerts, [(a["alert_id"].encode(), encode(a)) for a in alerts])
            await retry_infra(lambda alerts=alerts: detector.mark_emitted(alerts), what="detector in Redis",
                              give_up_after_s=give_up)
            for a in alerts:
                log.warning("ALERT %s %s %s rate=%.2f n=%s", a["status"], a["rule"], a["scope"],
                            a["negative_rate"], a["count"])
        # record() itself counts counted / duplicates / syndicated / late / invalid in the same hash
        await _count(alerts_emitted=len(alerts), dead_lettered=len(dead))
        await _ack(stream, events)


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
        await _produce(w.topics.alerts, [(a["alert_id"].encode(), encode(a)) for a in alerts])
        await detector.mark_emitted(alerts)


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
        await _count(dead_lettered=len(dead))
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
