"""What the dashboard and the API show, read from a namespace's Redis state (plain async functions).

Every function takes a :class:`View` (the namespace's store, detector, history, silences, monitor and
rules) and returns JSON-ready dicts; :mod:`finpulse.serve` puts them behind HTTP. Times are event
time: "now" of a namespace is its newest event time (for ``live`` that is the wall clock, give or
take the pipeline's lag; for a finished backtest, the end of its history), so a kept backtest's
namespace is browsed the same way as the live one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from finpulse.alerts.config import AlertsConfig, load_config
from finpulse.alerts.detector import Detector
from finpulse.alerts.history import AlertHistory, open_alerts
from finpulse.alerts.silences import Silences
from finpulse.alerts.store import WindowStore
from finpulse.alerts.windows import bucket_ceil, normalize_scope, scope_type
from finpulse.core import constants as C
from finpulse.core.codec import as_str
from finpulse.core.rfc3339 import format as format_time
from finpulse.core.settings import Settings
from finpulse.stream.monitoring import ModelMonitor

DEFAULT_SHORT_S, DEFAULT_BASELINE_S = 900, 86400
MAX_POINTS = 400
MOVERS_SCAN = 300
"""Most recently active scopes considered for "moved most"."""


@dataclass
class View:
    """A namespace's state, as the dashboard reads it."""

    settings: Settings
    redis: Any
    store: WindowStore
    detector: Detector
    history: AlertHistory
    silences: Silences
    monitor: ModelMonitor
    config: AlertsConfig


def rules_only(path: str) -> AlertsConfig:
    """The rules of a rules file, without resolving endpoint secrets (the dashboard sends nothing)."""
    import tomllib

    with open(path, "rb") as f:
        data = tomllib.load(f)
    data.pop("endpoints", None)
    return load_config(data=data)


def make_view(settings: Settings, redis: Any) -> View:
    """Everything the dashboard reads for ``settings.namespace`` on ``redis``."""
    config = rules_only(settings.rules_file)
    store = WindowStore.from_settings(redis, settings)
    return View(settings=settings, redis=redis, store=store, detector=Detector.from_config(store, config),
                history=AlertHistory(redis, settings.namespace), silences=Silences(redis, settings.namespace),
                monitor=ModelMonitor(redis, settings.namespace), config=config)


async def reference_time(view: View) -> float | None:
    """The namespace's "now": its newest event time (``None`` before any article)."""
    raw = await view.redis.zscore(C.ns_key(view.settings.namespace, C.EVENT_TIME_KEY), C.EVENT_TIME_NEWEST)
    return None if raw is None else float(raw)


def windows_for(view: View, scope: str) -> tuple[int, int, list[str]]:
    """The short window, baseline window and rule names that watch ``scope`` (the first rule's windows;
    the defaults 15 min / 24 h when no rule watches it)."""
    kind = scope_type(scope)
    rules = [r for r in view.config.rules if r.scope_type == kind and (not r.scopes or scope in r.scopes)]
    if not rules:
        return DEFAULT_SHORT_S, DEFAULT_BASELINE_S, []
    r = rules[0]
    short = r.short_window_s if r.test != "surge" else min(r.windows_s or (r.short_window_s,))
    return int(short), int(r.baseline_window_s), [x.name for x in rules]


def _rate(n: int, neg: int) -> float | None:
    return None if n == 0 else neg / n


async def movers(view: View, limit: int = 20) -> dict[str, Any]:
    """The scopes whose negative rate moved most: short window against baseline, weighted by volume.

    ``score = (short rate - baseline rate) * sqrt(short count)``: a scope whose bad news rose on real
    volume ranks above a noisy one with two headlines.
    """
    now = await reference_time(view)
    if now is None:
        return {"at": None, "scopes": []}
    s = view.store.bucket_seconds
    activity = await view.store.scope_activity(since=now - DEFAULT_BASELINE_S)
    recent = sorted(activity, key=lambda sc: -activity[sc])[:MOVERS_SCAN]
    end = bucket_ceil(now, s)
    rows: list[dict[str, Any]] = []
    for sc in recent:
        short_s, base_s, _ = windows_for(view, sc)
        short = await view.store.stats(sc, end, short_s)
        base = await view.store.stats(sc, end - short_s, base_s)
        if short.n == 0:
            continue  # nothing in the short window: it did not move now
        r_short, r_base = _rate(short.n, short.negative), _rate(base.n, base.negative)
        score = ((r_short or 0.0) - (r_base or 0.0)) * math.sqrt(short.n)
        rows.append({"scope": sc, "short_window_s": short_s, "baseline_window_s": base_s, "n": short.n,
                     "negative": short.negative, "negative_rate": r_short, "baseline_n": base.n,
                     "baseline_rate": r_base, "score": round(score, 4)})
    rows.sort(key=lambda r: (-r["score"], -r["n"], r["scope"]))
    return {"at": format_time(now), "scopes": rows[:limit]}


def _step(hours: float, bucket_s: int) -> int:
    raw = max(bucket_s, math.ceil(hours * 3600 / MAX_POINTS))
    return int(math.ceil(raw / bucket_s) * bucket_s)


async def series(view: View, scope: str, hours: float = 24.0) -> dict[str, Any]:
    """A scope's trend: per step the volume and negative rate, and at each step end the rate over the
    detection (short) window and over the baseline window before it, with the scope's alerts.

    :param scope: the scope.
    :param hours: how far back from the namespace's "now".
    """
    scope = normalize_scope(scope)
    now = await reference_time(view)
    short_s, base_s, rules = windows_for(view, scope)
    out: dict[str, Any] = {"scope": scope, "rules": rules, "short_window_s": short_s, "baseline_window_s": base_s,
                           "points": [], "alerts": []}
    if now is None:
        return out
    s = view.store.bucket_seconds
    step = _step(hours, s)
    end = bucket_ceil(now, s)
    start = end - int(math.ceil(hours * 3600 / step)) * step + step
    vol = await view.store.timeseries(scope, start, end, step_s=step, window_s=step)
    short = await view.store.timeseries(scope, start, end, step_s=step, window_s=short_s)
    base = await view.store.timeseries(scope, start - short_s, end - short_s, step_s=step, window_s=base_s)
    for v, sh, b in zip(vol, short, base, strict=True):
        out["points"].append({"t": v["end"], "n": v["n"], "negative": v["negative"], "rate": v["negative_rate"],
                              "short_rate": sh["negative_rate"], "short_n": sh["n"],
                              "baseline_rate": b["negative_rate"], "baseline_n": b["n"]})
    out["step_s"] = step
    out["alerts"] = await view.history.query(scope=scope, since=start - step, until=end + step, limit=200)
    return out


async def headlines(view: View, scope: str, limit: int = 20) -> dict[str, Any]:
    """The scope's most recently counted headlines with their labels and links."""
    scope = normalize_scope(scope)
    return {"scope": scope, "headlines": await view.store.recent_headlines(scope, k=limit)}


async def open_now(view: View) -> dict[str, Any]:
    """Open alerts (the detector's state) with their newest record, acknowledgements and silences."""
    rows = await open_alerts(view.history, await view.detector.open_alerts())
    acks, silences = await view.history.acks(), await view.silences.active()
    for r in rows:
        r["acknowledged"] = acks.get(r["alert_id"])
        r["silenced"] = silences.get(f"alert:{r['alert_id']}") or silences.get(f"scope:{r['scope']}")
    return {"alerts": rows}


async def health(view: View) -> dict[str, Any]:
    """Pipeline health: counters, throughput over the last 15 minutes of event time, backlog per topic
    and partition (and in seconds at the current rate), dead letters by reason, model versions."""
    ns = view.settings.namespace
    raw = {as_str(k): int(v) for k, v in (await view.redis.hgetall(C.metrics_key(ns))).items()}
    counters = {k: v for k, v in raw.items() if not k.startswith("dlq:")}
    dead = {k[4:]: v for k, v in sorted(raw.items()) if k.startswith("dlq:")}
    now = await reference_time(view)
    per_min = None
    if now is not None:
        st = await view.store.stats("all", bucket_ceil(now, view.store.bucket_seconds), 900)
        per_min = round(st.n / 15, 2)
    backlog: dict[str, int] = {}
    reports = await view.redis.hgetall(C.ns_key(ns, C.BACKLOG_KEY))
    newest_report = None
    for k, v in reports.items():
        rep = json.loads(as_str(v))
        topic = as_str(k).rpartition("|")[0]
        backlog[topic] = backlog.get(topic, 0) + int(rep.get("lag", 0))
        newest_report = max(newest_report or 0.0, float(rep.get("at", 0)))
    rate_s = (per_min or 0) / 60
    lag_s = {t: (round(n / rate_s, 1) if rate_s > 0 else (0.0 if n == 0 else None)) for t, n in backlog.items()}
    versions = [{"version": v, "last_scored": format_time(t)} for v, t in await view.monitor.versions()]
    return {"namespace": ns, "event_time": format_time(now) if now is not None else None,
            "event_time_age_s": None if now is None else round(time.time() - now, 1),
            "counters": counters, "headlines_per_min_15m": per_min, "backlog_messages": backlog,
            "backlog_seconds_at_current_rate": lag_s,
            "backlog_reported_at": format_time(newest_report) if newest_report else None,
            "dead_letters_by_reason": dead, "model_versions": versions}


async def model(view: View) -> dict[str, Any]:
    """The model that scored last and its drift report; the shared version in force, the shadow
    version and its agreement, and the last promotions and rollbacks (:mod:`finpulse.models.lifecycle`)."""
    from finpulse.models.lifecycle import ModelControl
    from finpulse.models.registry import ModelRegistry

    control = ModelControl(view.redis, view.settings.namespace,
                           ModelRegistry.from_settings(view.settings).base_version())
    in_force, shadow = await control.state()
    lifecycle = {"in_force": in_force, "shadow": shadow,
                 "shadow_agreement": await control.agreement(shadow, in_force) if shadow else None,
                 "events": await control.events(5)}
    versions = await view.monitor.versions()
    if not versions:
        return {"version": None, "report": None, "versions": [], "lifecycle": lifecycle}
    current = versions[0][0]
    return {"version": current, "report": await view.monitor.report(current),
            "versions": [{"version": v, "last_scored": format_time(t)} for v, t in versions],
            "lifecycle": lifecycle}
