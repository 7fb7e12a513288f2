"""``finpulse backtest FILE --rules RULES --out DIR``: history through the real pipeline, with a report.

The file is replayed in event-time order into a fresh namespace (``bt-<hash of file and rules>-<time>``,
one partition per topic) of the embedded stack, or of the broker / Redis named by
``FINPULSE_KAFKA_BOOTSTRAP`` / ``FINPULSE_REDIS_URL``. A ``finpulse worker`` subprocess with RULES
(webhook endpoints removed: a backtest never pages anyone) classifies, aggregates and detects exactly
as in production. Once every row is processed (aggregated or dead-lettered), the worker is stopped
gracefully and :meth:`finpulse.alerts.detector.Detector.flush` closes the remaining event-time buckets
in-process. DIR then holds ``alerts.jsonl``, ``timeseries.csv``, ``summary.json``, ``report.png``
and ``worker.log``; see ``docs/backtest.md``.

With ``events=EVENTS.csv`` the alerts are scored against known events (:mod:`finpulse.evaluation`):
``summary.json`` gets an ``evaluation`` section and the report shades the events.

The time series and the report cost what the data costs, not what the span costs: each scope is read
only around the buckets where the pipeline counted its articles, so years of sparse history are fine.

``scored_input=True`` backtests *rules* on pre-scored news (e.g. an archive of ``news.scored``):
rows carry ``topic``, ``sentiment`` and ``sentiment_score`` and go straight to ``news.scored``, so
the classifier is not involved and the result depends only on the file and the rules.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
import math
import shutil
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from tqdm import tqdm

from finpulse.alerts.config import load_config
from finpulse.alerts.detector import Detector
from finpulse.alerts.exceptions import InvalidArticle
from finpulse.alerts.history import AlertHistory
from finpulse.alerts.rules import severity_rank, smoothed_rate
from finpulse.alerts.store import WindowStore, delete_namespace
from finpulse.alerts.windows import WindowStats, bucket_start, parse_time, scope_type, scopes_for
from finpulse.core.connections import async_redis, sync_redis
from finpulse.core.constants import SCORE_SCALE, metrics_key
from finpulse.core.errors import BadMessage
from finpulse.core.messages import validate
from finpulse.core.rfc3339 import format as format_time
from finpulse.core.settings import LIVE_NAMESPACE, Settings
from finpulse.ingest.producer import NewsProducer, ensure_topics
from finpulse.ingest.replay import ReplayError, read_history, replay

from .evaluation import EventsError, format_duration, load_events, score_alerts, stream_name
from .exceptions import AppError
from .report import DEFAULT_TOP_SCOPES, ScopeVolume, write_report
from .runner import TopicReader, WorkerProcess, run_settings, stack_from_env

log = logging.getLogger(__name__)

ALERTS_FILE = "alerts.jsonl"
TIMESERIES_FILE = "timeseries.csv"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.png"
WORKER_LOG = "worker.log"

TIMESERIES_COLUMNS = ("scope", "rule", "window_end", "short_window_s", "count", "negative", "negative_rate",
                      "mean_score", "baseline_window_s", "baseline_count", "baseline_negative", "baseline_rate")
DEFAULT_MAX_POINTS = 20_000
RUN_GAP_BUCKETS = 240
"""Buckets with data closer than this are read from Redis in one run (the empty ones between cost little)."""
MAX_RUN_BUCKETS = 100_000
"""Longest run of buckets read at once (below ``WindowStore``'s per-query limit)."""
MAX_BAD_IN_SUMMARY = 1000
PRESCORED_MODEL_VERSION = "prescored"
_STATUS_ORDER = {"fired": 0, "resolved": 1}
_SENTIMENTS = ("negative", "positive", "neutral")


class BacktestError(AppError, RuntimeError):
    """The backtest could not run (bad arguments, a namespace already in use, unreadable file)."""


# --- namespace and rules -------------------------------------------------------------------------

def default_namespace(path: str | Path, rules_path: str | Path, now: float | None = None) -> str:
    """``bt-<8 hex of sha256(file, rules)>-<UTC time to the millisecond>``.

    :param path: the history file.
    :param rules_path: the rules file.
    :param now: epoch seconds (default: now).
    """
    h = hashlib.sha256()
    for p in (path, rules_path):
        h.update(Path(p).read_bytes())
        h.update(b"\0")
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return f"bt-{h.hexdigest()[:8]}-{t:%Y%m%dT%H%M%S}{t.microsecond // 1000:03d}"


def dump_rules_toml(data: Mapping[str, Any]) -> str:
    """Write a parsed rules document back as TOML (``tomli_w``; ``tomllib`` reads it back unchanged).

    :param data: a document as :func:`tomllib.loads` returns it (``detector``, ``delivery``, ``rules``...).
    """
    return tomli_w.dumps(data)


def backtest_rules(rules_path: str | Path) -> tuple[str, Any]:
    """The rules a backtest runs: RULES without ``[[endpoints]]`` (no webhook is ever called).

    :param rules_path: the rules TOML.
    :returns: ``(toml text for the worker, loaded AlertsConfig)``.
    :raises alerts.exceptions.ConfigError: invalid rules.
    """
    data = tomllib.loads(Path(rules_path).read_text(encoding="utf-8"))
    data.pop("endpoints", None)
    text = dump_rules_toml(data)
    return text, load_config(data=tomllib.loads(text))


# --- pre-scored input ----------------------------------------------------------------------------

def _json_cell(v: Any) -> Any:
    if isinstance(v, str) and v.strip()[:1] in ("{", "["):
        try:
            return json.loads(v)
        except ValueError:
            raise ValueError(f"not JSON: {v[:60]!r}") from None
    return v


def scored_fields(row: Mapping[str, Any]) -> dict:
    """The classifier outputs of a pre-scored row (keys case-insensitive).

    Required: ``topic``, ``sentiment`` (negative/positive/neutral) and ``sentiment_score`` (in
    [-1, 1]). Optional: ``topic_score`` (default 1), ``topics_top3`` (default the topic),
    ``sentiment_probs`` (default derived from the score), ``model_version`` (default
    ``prescored``), ``classified_at``. JSON cells are accepted for the object fields in CSV files.

    :raises ValueError: with the reason.
    """
    low = {str(k).strip().lower(): v for k, v in row.items()}
    topic = low.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise ValueError("pre-scored row needs a topic")
    sentiment = str(low.get("sentiment") or "").strip().lower()
    if sentiment not in _SENTIMENTS:
        raise ValueError(f"sentiment must be one of {', '.join(_SENTIMENTS)}, got {low.get('sentiment')!r}")
    raw_score = low.get("sentiment_score")
    try:
        if isinstance(raw_score, bool) or raw_score is None or raw_score == "":
            raise ValueError
        score = float(raw_score)
    except (TypeError, ValueError):
        raise ValueError(f"sentiment_score must be a number, got {raw_score!r}") from None
    if not math.isfinite(score) or not -1 <= score <= 1:
        raise ValueError(f"sentiment_score must be in [-1, 1], got {raw_score!r}")
    ts_raw = low.get("topic_score")
    topic_score = 1.0 if ts_raw in (None, "") else float(ts_raw)
    probs = _json_cell(low.get("sentiment_probs"))
    if probs in (None, ""):
        probs = {"negative": max(-score, 0.0), "positive": max(score, 0.0), "neutral": 1.0 - abs(score)}
    top3 = _json_cell(low.get("topics_top3"))
    if top3 in (None, ""):
        top3 = [{"topic": topic.strip(), "score": topic_score}]
    mv = low.get("model_version")
    out = {"topic": topic.strip(), "topic_score": topic_score, "topics_top3": top3, "sentiment": sentiment,
           "sentiment_probs": probs, "sentiment_score": score,
           "model_version": str(mv).strip() if mv not in (None, "") else PRESCORED_MODEL_VERSION}
    if isinstance(low.get("classified_at"), str) and low["classified_at"].strip():
        out["classified_at"] = low["classified_at"].strip()
    return out


def read_scored_history(path: str | Path, **read_options: Any) -> tuple[list[dict], list[tuple[int, str]]]:
    """Read a pre-scored history file into ``news.scored`` messages in event-time order.

    Rows are read by :func:`finpulse.ingest.replay.read_history` (same columns, time parsing, ids and bad
    rows), which adds :func:`scored_fields` to each message and checks it as ``news.scored``; tickers
    are taken as given (not re-extracted from the text).

    :param path: JSONL / CSV / TSV (optionally ``.gz``).
    :param read_options: as :func:`finpulse.ingest.replay.read_history`.
    :returns: ``(messages, bad)`` with bad rows as ``(line_no, reason)``.
    """
    def scored(row: Mapping[str, Any], msg: dict[str, Any]) -> dict[str, Any]:
        out = {**msg, **scored_fields(row), "tickers": msg.get("tickers") or []}
        out.setdefault("classified_at", msg["published_at"])
        try:
            validate("news.scored", out)
        except BadMessage as exc:
            raise ValueError(exc.detail) from None
        return out

    return read_history(path, row_fields=scored, **read_options)


# --- the run -------------------------------------------------------------------------------------

def _say(progress: bool, text: str) -> None:
    if progress:
        tqdm.write(text, file=sys.stderr)


def _pin_model(settings: Settings, version: str | None) -> str:
    """The model version a backtest pins: ``version`` (checked), else the live namespace's version in force.

    :raises BacktestError: the version is not in the model directory or its files are corrupt.
    """
    from finpulse.models.exceptions import ModelError
    from finpulse.models.lifecycle import ModelControl
    from finpulse.models.registry import ModelRegistry

    registry = ModelRegistry.from_settings(settings)
    try:
        if not version:
            async def in_force() -> str:
                client = async_redis(settings.redis_url)
                try:
                    return await ModelControl(client, LIVE_NAMESPACE, registry.base_version()).in_force()
                finally:
                    await client.aclose()

            version = asyncio.run(in_force())
        return registry.get(version).version
    except ModelError as exc:
        raise BacktestError(f"cannot pin model version {version!r}: {exc}") from None


def _check_fresh_namespace(settings: Settings) -> None:
    r = sync_redis(settings.redis_url)
    try:
        if next(iter(r.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)), None) is not None:
            raise BacktestError(f"namespace {settings.namespace} already has Redis keys; use a new namespace")
    finally:
        r.close()


def _metrics(settings: Settings) -> dict[str, int]:
    r = sync_redis(settings.redis_url)
    try:
        raw = r.hgetall(metrics_key(settings.namespace))
    finally:
        r.close()
    return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}


def _processed(m: Mapping[str, int]) -> int:
    """Rows with a final outcome: counted, duplicate, syndicated, or dead-lettered (any stage)."""
    return m.get("counted", 0) + m.get("duplicates", 0) + m.get("syndicated", 0) + m.get("dead_lettered", 0)


def _alert_sort_key(a: Mapping[str, Any]) -> tuple:
    return (a["window_end"], a["rule"], a["scope"], _STATUS_ORDER.get(a["status"], 9), severity_rank(a["severity"]))


class _Collector:
    """What the backtest reads back from news.scored, news.dlq and alerts.

    Besides the counts, it keeps per scope the buckets that may hold a count (``buckets``): every
    bucket of every scored message's scopes, and of the scopes its id was first seen with (the
    window store counts a redelivery with its first labels). The time series reads only around them.
    """

    def __init__(self, settings: Settings, progress: bool):
        self.t_scored = settings.topic(settings.topic_scored)
        self.t_dlq = settings.topic(settings.topic_dlq)
        self.bucket_s = settings.bucket_seconds
        self.progress = progress
        self.first_scopes: dict[str, tuple[str, ...]] = {}
        self.buckets: defaultdict[str, set[int]] = defaultdict(set)
        self.activity: Counter = Counter()
        self.versions: Counter = Counter()
        self.dlq_reasons: Counter = Counter()
        self.alerts: dict[str, dict] = {}

    def take(self, items: list[tuple[str, Any]]) -> None:
        for topic, msg in items:
            if not isinstance(msg, dict):
                continue
            if topic == self.t_scored:
                aid = str(msg.get("id"))
                if isinstance(msg.get("model_version"), str):
                    self.versions[msg["model_version"]] += 1
                if msg.get("duplicate_of"):
                    continue
                scopes = tuple(scopes_for(msg))
                first = self.first_scopes.setdefault(aid, scopes)
                if first is scopes:
                    for sc in scopes:
                        self.activity[sc] += 1
                try:
                    b = bucket_start(parse_time(msg.get("published_at")), self.bucket_s)
                except InvalidArticle:
                    continue  # not counted (dead-lettered by the worker)
                for sc in {*scopes, *first}:
                    self.buckets[sc].add(b)
            elif topic == self.t_dlq:
                self.dlq_reasons[str(msg.get("reason", "?")).split(":")[0]] += 1
            else:
                self.add_alert(msg)

    def add_alert(self, a: dict) -> None:
        eid = a.get("event_id") or f"{a['alert_id']}.{a['status']}.{a['severity']}"
        if eid not in self.alerts:
            self.alerts[eid] = a
            _say(self.progress, f"ALERT {a['status']} [{a['severity']}] {a['rule']} {a['scope']} "
                                f"window_end={a['window_end']} negative {a['negative_count']}/{a['count']}")



def _produce_scored(settings: Settings, messages: list[dict], progress: bool) -> int:
    """Produce pre-scored messages to the namespace's ``news.scored`` in order; returns how many."""
    produced = 0
    with NewsProducer(settings, topic=settings.topic(settings.topic_scored), create_topics=False, validate=False,
                      client_id="finpulse-backtest") as producer:
        with tqdm(total=len(messages), unit="msg", desc=f"produce -> {producer.topic}", file=sys.stderr,
                  disable=not progress, dynamic_ncols=True) as bar:
            for i in range(0, len(messages), 1000):
                chunk = messages[i:i + 1000]
                produced += producer.wait([producer.send(m) for m in chunk])
                bar.update(len(chunk))
    return produced


def _wait_processed(settings: Settings, worker: Any, reader: Any, collector: _Collector, produced: int,
                    deadline: float, progress: bool) -> tuple[bool, str, float | None]:
    """Wait until every produced row is processed; returns ``(complete, why not, when)``."""
    with tqdm(total=produced, unit="msg", desc="pipeline", file=sys.stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        while True:
            collector.take(reader.poll(300))
            n = _processed(_metrics(settings))
            bar.update(max(0, min(n, produced) - bar.n))
            if n >= produced:
                return True, "", time.monotonic()
            if worker.returncode is not None:
                return False, f"the worker exited with code {worker.returncode}; see {worker.log_path}", None
            if time.monotonic() > deadline:
                return False, (f"processing did not complete within the timeout ({n}/{produced}); "
                               f"see {worker.log_path}"), None


def run_backtest(path: str | Path, rules_path: str | Path, out_dir: str | Path, namespace: str | None = None, *,
                 scored_input: bool = False, timeout_s: float | None = None, kafka_bootstrap: str | None = None,
                 redis_url: str | None = None, keep: bool = False, progress: bool = True,
                 top_scopes: int = DEFAULT_TOP_SCOPES, max_points: int = DEFAULT_MAX_POINTS,
                 events: str | Path | None = None, events_stream: str | None = None, events_grace_s: float = 0.0,
                 model_version: str | None = None, **read_options: Any) -> dict:
    """Run a history file through the real pipeline in its own namespace and write the report.

    :param path: JSONL / CSV / TSV (optionally ``.gz``) of headlines (see :func:`finpulse.ingest.replay.read_history`).
    :param rules_path: rules TOML (``[[endpoints]]`` are ignored).
    :param out_dir: output directory (created; existing outputs are replaced).
    :param namespace: run namespace (default :func:`default_namespace`); must not be ``live`` and
        must not have been used (no Redis keys, no topics).
    :param scored_input: the rows are pre-scored (``topic``, ``sentiment``, ``sentiment_score``;
        see :func:`scored_fields`): produce them to ``news.scored``, skipping classification.
    :param timeout_s: longest wait for processing after the worker starts (default
        ``90 + 0.05 * rows``); the run is then reported incomplete (``complete: false``).
    :param kafka_bootstrap: broker (default ``FINPULSE_KAFKA_BOOTSTRAP``; empty: embedded stack).
    :param redis_url: Redis (default ``FINPULSE_REDIS_URL``; empty: embedded stack).
    :param keep: keep the namespace's Redis keys (default: deleted after the report is written;
        topics are left, they are namespaced).
    :param progress: progress bars and alert lines on stderr.
    :param top_scopes: how many of the busiest scopes ``timeseries.csv`` covers (plus every alerted scope).
    :param max_points: most window ends per series (plus the scope's alert window ends); more active
        window ends use a step of several buckets.
    :param events: an events CSV (see :func:`finpulse.evaluation.load_events`): the alerts are scored
        against the events of this stream and ``summary.json`` gets ``evaluation``.
    :param events_stream: the stream whose events apply (default: the file's stem,
        :func:`finpulse.evaluation.stream_name`); events of other streams are ignored.
    :param events_grace_s: seconds after an event's end during which an alert still matches it.
    :param model_version: the model version the worker scores with, pinned for the whole run (a
        promotion during the backtest changes nothing); default: the version in force in the
        ``live`` namespace of the same Redis (the base model when none was promoted), so a backtest
        scores as live does. Recorded in ``summary.json`` (``model_version_pinned``).
    :param read_options: column and time options of :func:`finpulse.ingest.replay.read_history`.
    :returns: the summary (also written to ``summary.json``); ``ok`` is false when processing did
        not complete or nothing was produced.
    :raises BacktestError: ``live`` or a used namespace, an unreadable file or events file.
    :raises alerts.exceptions.ConfigError: invalid rules.
    """
    t_start = time.monotonic()
    started_at = datetime.now(UTC)
    path, rules_path, out = Path(path), Path(rules_path), Path(out_dir)
    if not path.is_file():
        raise BacktestError(f"{path}: no such file")
    ns = namespace or default_namespace(path, rules_path)
    if ns == LIVE_NAMESPACE:
        raise BacktestError("a backtest never runs in the live namespace")
    rules_text, config = backtest_rules(rules_path)
    known = _load_events(path, events, events_stream, events_grace_s) if events is not None else None
    scored_msgs: list[dict] = []
    bad: list[tuple[int, str]] = []
    if scored_input:
        try:
            scored_msgs, bad = read_scored_history(path, **read_options)
        except (ValueError, FileNotFoundError) as exc:
            raise BacktestError(str(exc)) from None
        for line, why in bad[:20]:  # as replay() logs them in classify mode
            log.warning("%s line %d skipped: %s", path.name, line, why)
        if len(bad) > 20:
            log.warning("%s: %d more bad rows (see summary.json)", path.name, len(bad) - 20)
    out.mkdir(parents=True, exist_ok=True)
    for name in (ALERTS_FILE, TIMESERIES_FILE, SUMMARY_FILE, REPORT_FILE, WORKER_LOG):
        (out / name).unlink(missing_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="finpulse-bt-"))
    rules_file = workdir / "rules.toml"
    rules_file.write_text(rules_text, encoding="utf-8")

    try:
        with stack_from_env(kafka_bootstrap, redis_url) as stack:
            settings = run_settings(stack, ns, rules_file=str(rules_file))
            pinned = None if scored_input else _pin_model(settings, model_version)
            settings = settings.with_overrides(model_version=pinned or "")
            _check_fresh_namespace(settings)
            created = ensure_topics(settings, settings.all_topics())
            if len(created) != len(settings.all_topics()):
                used = sorted(set(settings.all_topics()) - set(created))
                raise BacktestError(f"namespace {ns} already has topics ({', '.join(used)})")
            _say(progress, f"backtest {path.name}: namespace={ns} kafka={stack.kafka_bootstrap} "
                           f"redis={stack.redis_url} mode={'scored' if scored_input else 'classify'}"
                           + (f" model={pinned}" if pinned else ""))
            worker = WorkerProcess(settings, out / WORKER_LOG)
            collector = _Collector(settings, progress)
            complete, reason = False, ""
            rows_read = len(scored_msgs) + len(bad)
            produced = 0
            t_pipe = time.monotonic()
            t_done = None
            reader = None
            try:
                reader = TopicReader(stack.kafka_bootstrap, [settings.topic(settings.topic_scored),
                                                             settings.topic(settings.topic_dlq),
                                                             settings.topic(settings.topic_alerts)])
                t_pipe = time.monotonic()
                if scored_input:
                    produced = _produce_scored(settings, scored_msgs, progress)
                else:
                    try:
                        res = replay(path, settings, progress=progress, **read_options)
                    except ReplayError as exc:
                        raise BacktestError(str(exc)) from exc
                    except (ValueError, FileNotFoundError) as exc:
                        raise BacktestError(str(exc)) from None
                    rows_read, produced, bad = res.read, res.produced, res.bad
                limit = timeout_s if timeout_s is not None else 90.0 + 0.05 * rows_read
                complete, reason, t_done = _wait_processed(settings, worker, reader, collector, produced,
                                                           t_pipe + limit, progress)
                worker.stop(30)  # graceful: the last batch's alerts are produced (or left pending for flush)
                collector.take(reader.drain())
            finally:
                worker.stop(30)
                if reader is not None:
                    reader.close()
            if reason:
                _say(True, f"backtest incomplete: {reason}")
            model_version = ",".join(sorted(collector.versions)) or None
            flushed, oldest, newest, open_alerts = asyncio.run(_flush(settings, config, model_version))
            for a in flushed:
                collector.add_alert(a)
            alerts = sorted(collector.alerts.values(), key=_alert_sort_key)
            metrics = _metrics(settings)
            scopes = _select_scopes(collector.activity, alerts, top_scopes)
            t_series = time.monotonic()
            series, volume = (asyncio.run(_timeseries(settings, config, scopes, collector.buckets, alerts, oldest,
                                                      newest, max_points))
                              if oldest is not None else ({}, {}))
            log.info("time series: %d rows for %d scope(s) in %.2fs", sum(map(len, series.values())), len(series),
                     time.monotonic() - t_series)
            if not keep:
                asyncio.run(_delete(settings))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    pipe_s = (t_done or time.monotonic()) - t_pipe
    processed = _processed(metrics)
    by_scope: dict[str, dict[str, int]] = {}
    for a in alerts:
        d = by_scope.setdefault(a["scope"], {"fired": 0, "resolved": 0})
        d[a["status"]] = d.get(a["status"], 0) + 1
    summary = {
        "file": str(path),
        "rules": str(rules_path),
        "mode": "scored" if scored_input else "classify",
        "namespace": ns,
        "started_at": started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "rows_read": rows_read,
        "bad_rows": [{"line": line, "reason": r} for line, r in bad[:MAX_BAD_IN_SUMMARY]],
        "bad_row_count": len(bad),
        "produced": produced,
        "processed": processed,
        "counted": metrics.get("counted", 0),
        "duplicates": metrics.get("duplicates", 0),
        "syndicated": metrics.get("syndicated", 0),
        "late": metrics.get("late", 0),
        "dead_lettered": metrics.get("dead_lettered", 0),
        "dead_letter_reasons": dict(sorted(collector.dlq_reasons.items())),
        "complete": complete,
        "incomplete_reason": reason or None,
        "ok": complete and produced > 0,
        "alerts": len(alerts),
        "alerts_fired": sum(a["status"] == "fired" for a in alerts),
        "alerts_resolved": sum(a["status"] == "resolved" for a in alerts),
        "alerts_by_scope": dict(sorted(by_scope.items())),
        "open_at_end": open_alerts,
        "event_time": {"first": _fmt(oldest), "last": _fmt(newest),
                       "span_s": round(newest - oldest, 3) if oldest is not None else None},
        "wall_time_s": round(time.monotonic() - t_start, 2),
        "pipeline_time_s": round(pipe_s, 2),
        "throughput_rows_per_s": round(processed / pipe_s, 1) if pipe_s > 0 else None,
        "model_version": model_version,
        "model_version_pinned": settings.model_version or None,
        "scopes_in_timeseries": [sc for sc in scopes if sc in series],
        "outputs": {k: str(out / v) for k, v in (("alerts", ALERTS_FILE), ("timeseries", TIMESERIES_FILE),
                                                  ("summary", SUMMARY_FILE), ("report", REPORT_FILE),
                                                  ("worker_log", WORKER_LOG))},
    }
    if known is not None:
        ev_list, info = known
        scored = score_alerts(alerts, ev_list, oldest if oldest is not None else 0.0,
                              newest if newest is not None else 0.0, grace_s=events_grace_s)
        summary["evaluation"] = {**info, **scored.as_dict()}
    _write_alerts(out / ALERTS_FILE, alerts)
    _write_timeseries(out / TIMESERIES_FILE, series)
    try:
        t_report = time.monotonic()
        write_report(out / REPORT_FILE, series, alerts, summary, volume=volume)
        log.info("report written in %.2fs", time.monotonic() - t_report)
    except ImportError:
        log.warning("matplotlib is not installed (pip install -e '.[report]'): no %s", REPORT_FILE)
        summary["outputs"].pop("report")
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def summary_line(summary: Mapping[str, Any]) -> str:
    """One line for the command line (with the events scored, when there were events)."""
    ev = summary.get("evaluation")
    scored = ""
    if ev is not None:
        leads = ", ".join(format_duration(e["lead_time_s"]) for e in ev["events"] if e["in_span"] and e["caught"])
        per_day = ev["unmatched_per_day"]
        scored = (f"events ({ev['stream']}) caught {ev['events_caught']}/{ev['events_total']}"
                  f"{f' (lead {leads})' if leads else ''}, {ev['unmatched_alerts']} unmatched alert(s)"
                  f"{f' = {per_day:.2f}/day' if per_day is not None else ''} over {ev['days']:.1f} day(s); ")
    return (f"backtest {summary['namespace']}: {'complete' if summary['complete'] else 'INCOMPLETE'}; "
            f"{summary['rows_read']} rows ({summary['bad_row_count']} bad), produced {summary['produced']}, "
            f"processed {summary['processed']} (dead-lettered {summary['dead_lettered']}) in "
            f"{summary['pipeline_time_s']}s ({summary['throughput_rows_per_s']} rows/s); "
            f"{summary['alerts_fired']} fired / {summary['alerts_resolved']} resolved in "
            f"{len(summary['alerts_by_scope'])} scope(s); {scored}"
            f"outputs in {Path(summary['outputs']['summary']).parent}")


def _load_events(path: Path, events: str | Path, stream: str | None, grace_s: float) -> tuple[list, dict]:
    """The events of the history's stream, and the fields ``evaluation`` starts with.

    :raises BacktestError: an unreadable events file, a negative grace.
    """
    if grace_s < 0:
        raise BacktestError(f"the events grace must be >= 0, got {grace_s}")
    name = stream or stream_name(path)
    try:
        every = load_events(events)
        mine = load_events(events, stream=name)
    except (EventsError, FileNotFoundError, UnicodeDecodeError) as exc:
        raise BacktestError(f"events file {events}: {exc}") from None
    if not mine:
        others = sorted({e.stream for e in every if e.stream})
        log.warning("%s has no event for stream %r (streams there: %s); use --events-stream", events, name,
                    ", ".join(others) or "none")
    return mine, {"events_file": str(events), "stream": name, "events_ignored": len(every) - len(mine)}


def _fmt(ts: float | None) -> str | None:
    return None if ts is None else format_time(ts)


async def _flush(settings: Settings, config: Any, model_version: str | None) -> tuple:
    r = async_redis(settings.redis_url)
    try:
        store = WindowStore.from_settings(r, settings)
        det = Detector.from_config(store, config, model_version=model_version)
        records = await det.flush()
        # the worker is stopped: records it created but had not acknowledged are still leased to it
        # (an emission lease, alerts/detector.py) and flush() leaves them; nobody else will produce
        # them, so they are taken over here instead of being lost from the report
        seen = {rec["event_id"] for rec in records}
        records += [rec for rec in await det.pending() if rec["event_id"] not in seen]
        await AlertHistory(r, settings.namespace).add(records)  # a kept namespace shows them in `finpulse serve`
        await det.mark_emitted(records)
        return records, await store.oldest_event(), await store.watermark(), await det.open_alerts()
    finally:
        await r.aclose()


async def _delete(settings: Settings) -> None:
    r = async_redis(settings.redis_url)
    try:
        await delete_namespace(r, settings.namespace)
    finally:
        await r.aclose()


def _select_scopes(activity: Counter, alerts: list[dict], top: int) -> list[str]:
    """Alerted scopes and the ``top`` busiest, busiest first (ties by name)."""
    alerted = {a["scope"] for a in alerts}
    ranked = sorted(set(activity) | alerted, key=lambda sc: (-activity.get(sc, 0), sc))
    return [sc for i, sc in enumerate(ranked) if i < top or sc in alerted]


def _series_specs(scope: str, rules: tuple) -> list[tuple[str, int, int, Any]]:
    """(rule name, short window, baseline window, rule or None) for the rules that watch ``scope``;
    scopes no rule watches get the shortest short and longest baseline window (raw baseline rate)."""
    specs = [(r.name, r.short_window_s, r.baseline_window_s, r) for r in rules
             if r.scope_type == scope_type(scope) and (not r.scopes or scope in r.scopes)]
    if not specs and rules:
        specs = [("", min(r.short_window_s for r in rules), max(r.baseline_window_s for r in rules), None)]
    return specs


def _runs(buckets: np.ndarray, bucket_s: int, gap: int = RUN_GAP_BUCKETS,
          longest: int = MAX_RUN_BUCKETS) -> list[tuple[int, int]]:
    """Group sorted bucket starts into ``[start, end)`` runs to read from Redis: a run continues while
    the next bucket is at most ``gap`` buckets away and the run stays within ``longest`` buckets.

    :param buckets: sorted, distinct bucket starts.
    :param bucket_s: bucket width.
    :param gap: largest distance (in buckets) bridged inside a run.
    :param longest: most buckets in one run.
    """
    out: list[tuple[int, int]] = []
    for b in buckets.tolist():
        if out and b - out[-1][1] < gap * bucket_s and b + bucket_s - out[-1][0] <= longest * bucket_s:
            out[-1] = (out[-1][0], b + bucket_s)
        else:
            out.append((b, b + bucket_s))
    return out


def _active_ends(starts: np.ndarray, bucket_s: int, reach: int, first_e: int, last_e: int) -> np.ndarray:
    """``(lo, hi)`` rows: the merged ranges of window ends (bucket boundaries, both included) whose
    window ``[e - reach, e)`` holds at least one of ``starts`` (sorted bucket starts), within
    ``[first_e, last_e]``.

    :param starts: sorted bucket starts that hold data.
    :param bucket_s: bucket width.
    :param reach: the longest window (short plus baseline), a multiple of the bucket width.
    :param first_e: first window end of the data span.
    :param last_e: last window end of the data span.
    """
    lo = np.maximum(starts + bucket_s, first_e)
    hi = np.minimum(starts + reach, last_e)
    keep = lo <= hi
    lo, hi = lo[keep], hi[keep]
    if not len(lo):
        return np.zeros((0, 2), dtype=np.int64)
    # lo and hi both increase with the starts: a range joins the previous one when it touches it
    hi_so_far = np.maximum.accumulate(hi)
    new = np.ones(len(lo), dtype=bool)
    new[1:] = lo[1:] > hi_so_far[:-1] + bucket_s
    idx = np.flatnonzero(new)
    ends_at = np.append(idx[1:], len(lo)) - 1
    return np.stack([lo[idx], hi_so_far[ends_at]], axis=1)


def _sample_ends(ranges: np.ndarray, bucket_s: int, budget: int, extra: Iterable[int] = ()) -> np.ndarray:
    """Window ends to report: every bucket boundary of ``ranges`` when they hold at most ``budget``,
    else every k-th one counted across the ranges (at most ``budget``); plus ``extra`` (e.g. the
    scope's alert window ends). Sorted, distinct.

    :param ranges: ``(lo, hi)`` rows of :func:`_active_ends`.
    :param bucket_s: bucket width.
    :param budget: most sampled ends (``extra`` come on top).
    :param extra: window ends always included.
    """
    lens = (ranges[:, 1] - ranges[:, 0]) // bucket_s + 1 if len(ranges) else np.zeros(0, dtype=np.int64)
    total = int(lens.sum())
    step = max(1, math.ceil(total / max(1, budget)))
    idx = np.arange(0, total, step, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    j = np.searchsorted(offsets, idx, side="right") - 1
    ends = ranges[j, 0] + (idx - offsets[j]) * bucket_s if total else np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([ends, np.asarray(list(extra), dtype=np.int64)]))


def _series_rows(scope: str, specs: list[tuple[str, int, int, Any]], starts: np.ndarray, counts: np.ndarray,
                 ends: np.ndarray) -> list[dict]:
    """Rows of :data:`TIMESERIES_COLUMNS` (plus ``ts``, ``threshold`` and ``min_count``) for one scope, from its
    non-empty buckets: one per spec of :func:`_series_specs` and window end.

    :param scope: the scope.
    :param specs: ``(rule name, short window, baseline window, rule or None)``.
    :param starts: sorted starts of the buckets that hold counts.
    :param counts: their counters, ``(len(starts), 5)`` in ``BUCKET_FIELDS`` order.
    :param ends: window ends (bucket boundaries), sorted.
    """
    cum = np.zeros((len(starts) + 1, counts.shape[1]), dtype=np.int64)
    np.cumsum(counts, axis=0, out=cum[1:])

    def sums(lo: np.ndarray, hi: np.ndarray) -> list[list[int]]:
        """Counters summed over the buckets in ``[lo, hi)``, for each pair."""
        return (cum[np.searchsorted(starts, hi)] - cum[np.searchsorted(starts, lo)]).tolist()

    rows = []
    for name, w, bw, rule in specs:
        for e, sh, ba in zip(ends.tolist(), sums(ends - w, ends), sums(ends - w - bw, ends - w), strict=True):
            short = WindowStats(scope, e - w, e, sh[0], sh[1], sh[2], sh[3], sh[4] / SCORE_SCALE)
            base = WindowStats(scope, e - w - bw, e - w, ba[0], ba[1], ba[2], ba[3], ba[4] / SCORE_SCALE)
            brate: float | None
            if rule is not None:
                brate = smoothed_rate(base.negative, base.n, rule.baseline_prior_rate, rule.baseline_prior_weight)
            else:
                brate = base.negative_rate
            rows.append({"scope": scope, "rule": name, "window_end": format_time(e), "ts": e,
                         "short_window_s": w, "count": short.n, "negative": short.negative,
                         "negative_rate": short.negative_rate, "mean_score": short.mean_score,
                         "baseline_window_s": bw, "baseline_count": base.n,
                         "baseline_negative": base.negative, "baseline_rate": brate,
                         "threshold": rule.threshold if rule is not None else None,
                         "min_count": rule.min_count if rule is not None else None})
    return rows


async def _read_sparse(store: WindowStore, scope: str, candidates: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """The buckets of ``scope`` that hold counts, read only around ``candidates``.

    :returns: ``(starts, counts)``: sorted bucket starts and their counters (``(k, 5)``, in
        :data:`finpulse.core.constants.BUCKET_FIELDS` order).
    """
    s = store.bucket_seconds
    cand = np.unique(np.asarray(list(candidates), dtype=np.int64))
    starts: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for a, b in _runs(cand, s):
        ser = await store.bucket_series(scope, a, b)
        block = np.stack([ser.column(f) for f in ser.FIELDS], axis=1)
        nz = np.flatnonzero(block.any(axis=1))
        starts.append(a + nz * s)
        counts.append(block[nz])
    if not starts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 5), dtype=np.int64)
    return np.concatenate(starts).astype(np.int64), np.concatenate(counts)


async def _timeseries(settings: Settings, config: Any, scopes: list[str], buckets: Mapping[str, Iterable[int]],
                      alerts: Sequence[Mapping[str, Any]], oldest: float, newest: float,
                      max_points: int) -> tuple[dict[str, list[dict]], dict[str, ScopeVolume]]:
    """Per scope, rows of :data:`TIMESERIES_COLUMNS` at the window ends the detector evaluated where the
    scope's short window or baseline holds an article (elsewhere every count is 0); at most
    ``max_points`` ends per scope (a step of several buckets beyond that), plus the scope's alert window
    ends. Also, per scope, its non-empty buckets (for the report's volume bars).

    Redis is read only around ``buckets`` (the collector's), so time and memory follow the number of
    headlines, not the span.
    """
    s = settings.bucket_seconds
    first_e, last_e = bucket_start(oldest, s) + s, bucket_start(newest, s) + s
    alert_ends: defaultdict[str, set[int]] = defaultdict(set)
    for a in alerts:
        alert_ends[a["scope"]].add(bucket_start(parse_time(a["window_end"]), s))
    out: dict[str, list[dict]] = {}
    volume: dict[str, ScopeVolume] = {}
    r = async_redis(settings.redis_url)
    try:
        store = WindowStore.from_settings(r, settings)
        for scope in scopes:
            specs = _series_specs(scope, config.rules)
            starts, counts = await _read_sparse(store, scope, buckets.get(scope, ()))
            if not len(starts):
                continue
            volume[scope] = ScopeVolume(starts=starts, n=counts[:, 0].copy(), negative=counts[:, 1].copy(), bucket_s=s)
            if not specs:
                continue
            reach = max(w + bw for _, w, bw, _ in specs)
            extra = sorted(alert_ends.get(scope, ()))
            ranges = _active_ends(starts, s, reach, first_e, last_e)
            ends = _sample_ends(ranges, s, max(1, max_points - len(extra)), extra)
            out[scope] = _series_rows(scope, specs, starts, counts, ends)
    finally:
        await r.aclose()
    return out, volume


def _write_alerts(path: Path, alerts: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for a in alerts:
            fh.write(json.dumps(a, sort_keys=True, ensure_ascii=False) + "\n")


def _write_timeseries(path: Path, series: Mapping[str, list[dict]]) -> None:
    def cell(v: Any) -> Any:
        return "" if v is None else (round(v, 6) if isinstance(v, float) else v)

    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TIMESERIES_COLUMNS)
        for rows in series.values():
            for row in rows:
                w.writerow([cell(row[c]) for c in TIMESERIES_COLUMNS])
