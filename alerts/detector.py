"""Event-time alert detection over a :class:`finpulse.alerts.store.WindowStore`, with state in Redis.

The detector walks bucket boundaries ``E`` in order. A boundary is evaluated once the bucket before
it is *closed*: the namespace watermark (newest event time recorded) has reached ``E + close_delay``.
At each boundary every (rule, scope) pair is decided by :func:`finpulse.alerts.rules.decide` on the short
window ``[E - short, E)`` and its baseline. Because only closed buckets are read and the walk is
sequential, the alerts do not depend on how the input was split into micro-batches (when it arrives
in event-time order), and a replay of history produces the alerts live processing produced.

State (open alerts, cooldowns), the cursor (last boundary evaluated) and the alerts not yet
acknowledged are written in one ``MULTI`` (hash tag ``{det}``), guarded by ``WATCH`` on the cursor.
Alerts stay *pending* until :meth:`Detector.mark_emitted`, so a crash between producing to Kafka
and acknowledging returns the same records (same ``alert_id``/``event_id``) again.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from redis.exceptions import WatchError

from finpulse.core import constants as C
from finpulse.core.codec import as_str
from finpulse.core.messages import Alert
from finpulse.core.rfc3339 import format as format_time

from .config import AlertsConfig
from .rules import (
    Decision,
    Evaluation,
    Rule,
    RuleState,
    SurgeWindow,
    decide,
    evaluate_surge,
    make_event_id,
    record_sequence,
    severity_rank,
)
from .store import BucketSeries, WindowStore
from .windows import WindowStats, boundaries, bucket_start, check_window, scope_type

log = logging.getLogger(__name__)

_STATUS_ORDER = {"fired": 0, "resolved": 1}

EMIT_LEASE_S = 30.0
"""How long a pending alert record is reserved for the detector that returned it for producing; past
that, another worker's detector produces it (its first emitter crashed before acknowledging)."""

# KEYS: pending hash, lease hash (both in hash tag {det}); ARGV: now, lease seconds, owner
# Returns the pending records the owner may produce now, leasing each to it: those it holds and
# those whose lease ran out (or never existed).
_CLAIM_PENDING_LUA = """
local now, lease, me = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local held = redis.call('HGET', KEYS[2], all[i])
  local owner, untl = '', 0
  if held then
    local sep = string.find(held, '|', 1, true)
    owner, untl = string.sub(held, 1, sep - 1), tonumber(string.sub(held, sep + 1))
  end
  if owner == me or untl <= now then
    redis.call('HSET', KEYS[2], all[i], me .. '|' .. tostring(now + lease))
    out[#out + 1] = all[i + 1]
  end
end
return out
"""


def _emission_order(alerts: list[dict]) -> list[dict]:
    alerts.sort(key=lambda a: (a["window_end"], a["rule"], a["scope"], _STATUS_ORDER.get(a["status"], 9),
                               severity_rank(a["severity"])))
    return alerts


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


#: how broad a scope type is: a surge alert of a broader scope may be folded into a narrower one's
_BREADTH = {"all": 2, "topic": 1}


def _explained_by(scope: str, e: int, ev: Evaluation, busy: Mapping[str, list[tuple[int, int]]],
                  series: Mapping[str, BucketSeries]) -> str | None:
    """The narrower scope whose surge alert explains a broad scope's surge at boundary ``e``.

    A surge of ``all`` or of a topic whose deciding window holds at least half of its negative
    headlines in one narrower scope (a ticker, entity, or for ``all`` a topic) that has an open surge
    alert, or one that resolved and is cooling down, tells the desk nothing new: it is not fired (it
    fires later if the surge spreads beyond that scope).

    :param scope: the broad scope.
    :param e: the boundary.
    :param ev: the broad scope's evaluation (its window and negative count).
    :param busy: scope -> ``(from, until)`` boundaries with an open or cooling-down surge alert
        (narrower scopes are decided first).
    :param series: the hourly series read for this range, by scope.
    """
    rank = _BREADTH.get(scope_type(scope), 0)
    if rank == 0 or ev.window_s is None:
        return None
    for other, spans in sorted(busy.items()):
        if (not any(lo <= e <= hi for lo, hi in spans) or _BREADTH.get(scope_type(other), 0) >= rank
                or other not in series):
            continue
        ser = series[other]
        k = ser.window(max(ser.start, e - ev.window_s), e).negative
        if 2 * k >= ev.negative:
            return other
    return None


def state_field(rule: str, scope: str) -> str:
    """Field of the ``{det}:state`` hash for a (rule, scope): ``<rule>|<scope>``.

    :param rule: rule name (never contains ``|``).
    :param scope: normalised scope.
    """
    return f"{rule}|{scope}"


def next_decisive(ends: range, k: int, state: RuleState | None, can_fire: np.ndarray) -> int | None:
    """The first boundary ``ends[j]``, ``j >= k``, where :func:`finpulse.alerts.rules.decide` has to run.

    At the boundaries skipped, ``decide`` provably emits nothing and keeps the state, so skipping
    them gives the same alerts and states as deciding every boundary (a replay spends most of its
    time on such boundaries): with no state, a short window with fewer than ``min_count``
    articles cannot fire; during a cooldown the state is kept until ``cooldown_until``. An open
    alert is decided at every boundary (its calm period is counted boundary by boundary).

    :param ends: the boundaries being evaluated (a range stepping by the bucket width).
    :param k: the first index to consider.
    :param state: the (rule, scope) state before ``ends[k]``.
    :param can_fire: sorted indexes into ``ends`` whose short window holds at least the rule's
        ``min_count`` articles.
    :returns: an index, or ``None`` when no boundary from ``k`` on needs a decision.
    """
    if k >= len(ends):
        return None
    if state is None:
        i = int(np.searchsorted(can_fire, k))
        return int(can_fire[i]) if i < len(can_fire) else None
    if state.status != "open" and state.cooldown_until is not None and ends[k] < state.cooldown_until:
        j = int(-(-(state.cooldown_until - ends[0]) // ends.step))  # first boundary at or after cooldown_until
        return j if j < len(ends) else None
    return k


def decisions(rule: Rule, scope: str, ser: BucketSeries, ends: range, state: RuleState | None
              ) -> Iterator[tuple[Decision, RuleState | None, WindowStats, WindowStats]]:
    """Run :func:`finpulse.alerts.rules.decide` for one (rule, scope) over ``ends``, in order, skipping the
    boundaries where it cannot emit or change the state (:func:`next_decisive`).

    :param rule: the rule.
    :param scope: the scope.
    :param ser: the scope's buckets, covering ``[ends[0] - rule.span_s, ends[-1])``.
    :param ends: boundaries to evaluate (a range stepping by the bucket width).
    :param state: the state before ``ends[0]``.
    :returns: an iterator of ``(decision, state before it, short window, baseline window)``; the
        state after ``ends`` is the last decision's ``state`` (``state`` itself if none).
    """
    can_fire = np.flatnonzero(ser.rolling(ends, rule.short_window_s) >= rule.min_count)
    k = next_decisive(ends, 0, state, can_fire)
    while k is not None:
        e = ends[k]
        short = ser.window(e - rule.short_window_s, e)
        base = ser.window(e - rule.span_s, e - rule.short_window_s)
        d = decide(rule, scope, short, base, state)
        yield d, state, short, base
        state = d.state
        k = next_decisive(ends, k + 1, state, can_fire)


class Detector:
    """Evaluates rules at closed bucket boundaries and keeps alert state in Redis.

    :param store: the namespace's :class:`WindowStore` (the detector uses its Redis and namespace).
    :param rules: detection rules (windows must be multiples of the bucket width and fit in the
        store's retention).
    :param close_delay_s: a boundary ``E`` is evaluated once the watermark reaches
        ``E + close_delay_s`` (room for slightly out-of-order input; 0 = as soon as an event at or
        after ``E`` has been recorded).
    :param clock: wall clock for ``created_at`` and emission leases (``time.time``).
    :param chunk_boundaries: most boundaries evaluated per committed step (bounds work per ``MULTI``).
    :param model_version: fallback ``model_version`` of records whose window has no version recorded
        (normally the versions come from the counted articles themselves).
    """

    def __init__(self, store: WindowStore, rules: Sequence[Rule], *, close_delay_s: float = 0.0,
                 clock: Callable[[], float] = time.time, chunk_boundaries: int = 10080,
                 model_version: str | None = None, emit_lease_s: float = EMIT_LEASE_S):
        self.store = store
        self.redis = store.redis
        self.namespace = store.namespace
        self.rules = tuple(rules)
        self.close_delay_s = float(close_delay_s)
        self.clock = clock
        self.emit_lease_s = float(emit_lease_s)
        self.owner = uuid.uuid4().hex
        self.chunk = max(1, int(chunk_boundaries))
        self.model_version = model_version or ""
        s = store.bucket_seconds
        names = set()
        for r in self.rules:
            if r.name in names:
                raise ValueError(f"duplicate rule name {r.name!r}")
            names.add(r.name)
            if r.test == "surge":
                for w in (*r.windows_s, r.baseline_window_s):
                    check_window(w, C.ROLLUP_SECONDS)
                if r.span_s + self.close_delay_s >= store.rollup_retention_s:
                    raise ValueError(f"rule {r.name}: longest window + baseline ({r.span_s}s) + close delay must be "
                                     f"shorter than the roll-up retention ({store.rollup_retention_s}s)")
                continue
            check_window(r.short_window_s, s)
            check_window(r.baseline_window_s, s)
            if r.span_s + self.close_delay_s >= store.retention_s:
                raise ValueError(f"rule {r.name}: short + baseline window ({r.span_s}s) + close delay must be "
                                 f"shorter than the store retention ({store.retention_s}s)")
        self._state_key = C.detector_key(self.namespace, C.STATE_KEY)
        self._pending_key = C.detector_key(self.namespace, C.PENDING_KEY)
        self._cursor_key = C.detector_key(self.namespace, C.CURSOR_KEY)
        self._lease_key = C.detector_key(self.namespace, C.EMIT_LEASE_KEY)
        #: scopes with no news for this long before the cursor leave the scope index (longest rule span)
        self.scope_horizon_s = max((r.span_s for r in self.rules), default=0) + self.close_delay_s + s
        self._claim_script = self.redis.register_script(_CLAIM_PENDING_LUA)

    @classmethod
    def from_config(cls, store: WindowStore, config: AlertsConfig, **kwargs: Any) -> Detector:
        """A detector with the rules and ``close_delay`` of a loaded rules file.

        :param store: the namespace's window store.
        :param config: from :func:`finpulse.alerts.config.load_config`.
        :param kwargs: passed to the constructor (``clock``, ``chunk_boundaries``).
        """
        return cls(store, config.rules, close_delay_s=config.close_delay_s, **kwargs)

    # --- public ----------------------------------------------------------------------------------

    async def evaluate(self) -> list[dict]:
        """Evaluate every boundary closed by the watermark; call it after each recorded batch.

        :returns: every alert record not yet acknowledged with :meth:`mark_emitted` (new ones and
            ones left over from a crash), ordered by ``window_end``, rule, scope.
        """
        wm = await self.store.watermark()
        if wm is None:
            return await self._claim_pending()
        return await self._advance(bucket_start(wm - self.close_delay_s, self.store.bucket_seconds))

    async def tick(self, now: float | None = None) -> list[dict]:
        """Live mode only: let the wall clock close buckets when news is quiet.

        Treats ``max(watermark, now)`` as the watermark, so open alerts can resolve and windows
        are evaluated without new articles. Never call it in a replay/backtest.

        :param now: wall-clock time (default: the clock).
        :returns: as :meth:`evaluate`.
        """
        wm = await self.store.watermark()
        if wm is None:
            return await self._claim_pending()
        t = max(wm, self.clock() if now is None else now) - self.close_delay_s
        return await self._advance(bucket_start(t, self.store.bucket_seconds))

    async def flush(self, until_ts: float | None = None) -> list[dict]:
        """End of a replay: close all buckets, including the one holding the newest event.

        :param until_ts: evaluate boundaries up to this event time instead (rounded down to a
            boundary), e.g. to let open alerts resolve after the replayed period.
        :returns: as :meth:`evaluate`.
        """
        s = self.store.bucket_seconds
        if until_ts is None:
            wm = await self.store.watermark()
            if wm is None:
                return await self._claim_pending()
            limit = bucket_start(wm, s) + s
        else:
            limit = bucket_start(until_ts, s)
        return await self._advance(limit)

    async def pending(self) -> list[dict]:
        """Alert records produced but not yet acknowledged, in emission order."""
        raw = await self.redis.hgetall(self._pending_key)
        return _emission_order([json.loads(as_str(v)) for v in raw.values()])

    async def mark_emitted(self, alerts: Iterable[Mapping[str, Any] | str]) -> int:
        """Acknowledge records the caller has produced to the ``alerts`` topic.

        :param alerts: alert records (or their ``event_id`` strings).
        :returns: how many were pending.
        """
        ids = [a if isinstance(a, str) else a["event_id"] for a in alerts]
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:  # both keys in hash tag {det}
            pipe.hdel(self._pending_key, *ids)
            pipe.hdel(self._lease_key, *ids)
            removed, _ = await pipe.execute()
        return int(removed)

    async def _claim_pending(self) -> list[dict]:
        """The pending records this detector may produce now: those it created or holds, and those
        whose emission lease ran out (their emitter crashed before :meth:`mark_emitted`). Each one it
        returns is leased to it for ``emit_lease_s``, so workers sharing a namespace do not all produce
        the same records (in emission order, as :meth:`pending`)."""
        raw = await self._claim_script(keys=[self._pending_key, self._lease_key],
                                       args=[self.clock(), self.emit_lease_s, self.owner])
        return _emission_order([json.loads(as_str(v)) for v in raw])

    async def cursor(self) -> int | None:
        """The last boundary evaluated (epoch seconds), ``None`` before the first evaluation."""
        raw = await self.redis.get(self._cursor_key)
        return None if raw is None else int(as_str(raw))

    async def states(self) -> dict[tuple[str, str], RuleState]:
        """Current state per (rule, scope): open alerts and cooldowns."""
        raw = await self.redis.hgetall(self._state_key)
        out = {}
        for k, v in raw.items():
            rule, _, scope = as_str(k).partition("|")
            out[(rule, scope)] = RuleState.from_dict(json.loads(as_str(v)))
        return out

    async def open_alerts(self) -> list[dict]:
        """Open alerts: ``{"rule", "scope", "alert_id", "severity", "fired_window_end", "calm_since"}``."""
        out = []
        for (rule, scope), st in sorted((await self.states()).items()):
            if st.status == "open":
                out.append({"rule": rule, "scope": scope, "alert_id": st.alert_id, "severity": st.severity,
                            "fired_window_end": format_time(st.fired_end) if st.fired_end is not None else None,
                            "calm_since": format_time(st.calm_since) if st.calm_since is not None else None})
        return out

    # --- internals -------------------------------------------------------------------------------

    async def _advance(self, limit: int) -> list[dict]:
        s = self.store.bucket_seconds
        oldest = await self.store.oldest_event()
        if oldest is None:
            return await self._claim_pending()
        while True:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    await pipe.watch(self._cursor_key)
                    raw = await pipe.get(self._cursor_key)
                    cur = int(as_str(raw)) if raw is not None else bucket_start(oldest, s)
                    if cur >= limit:
                        break
                    states = {}
                    for k, v in (await pipe.hgetall(self._state_key)).items():
                        rule, _, scope = as_str(k).partition("|")
                        states[(rule, scope)] = RuleState.from_dict(json.loads(as_str(v)))
                    if not any(st.status == "open" for st in states.values()):
                        cur = await self._skip_quiet(cur, limit)
                    end = min(limit, cur + self.chunk * s)
                    alerts, new_states = (await self._evaluate_range(cur, end, states)) if end > cur else ([], {})
                    pipe.multi()
                    pipe.set(self._cursor_key, end)
                    for (rule, scope), st in new_states.items():
                        f = state_field(rule, scope)
                        if st is None:
                            if (rule, scope) in states:
                                pipe.hdel(self._state_key, f)
                        elif st != states.get((rule, scope)):
                            pipe.hset(self._state_key, f, json.dumps(st.to_dict(), sort_keys=True))
                    lease = f"{self.owner}|{self.clock() + self.emit_lease_s}"
                    for a in alerts:
                        pipe.hset(self._pending_key, a["event_id"],
                                  json.dumps(a, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
                        pipe.hset(self._lease_key, a["event_id"], lease)
                    await pipe.execute()
                kept = {sc for (_, sc) in states} | {sc for (_, sc), st in new_states.items() if st is not None}
                await self.store.forget_idle_scopes(end - self.scope_horizon_s, keep=kept)
                for a in alerts:
                    log.info("alert %s %s rule=%s scope=%s severity=%s window_end=%s rate=%.2f (%d/%d)",
                             a["event_id"], a["status"], a["rule"], a["scope"], a["severity"], a["window_end"],
                             a["negative_rate"], a["negative_count"], a["count"])
            except WatchError:
                log.info("namespace %s: another detector advanced the cursor concurrently; skipping", self.namespace)
                break
        return await self._claim_pending()

    async def _skip_quiet(self, cur: int, limit: int) -> int:
        """With no open alert, boundaries whose short windows hold no article cannot emit anything
        (and only delay the expiry of cooldown states): return the last boundary ``c <= limit``
        such that every boundary in ``(cur, c]`` is such a boundary. Every counted article is in
        scope ``all``, so its buckets tell where data is (e.g. a stray years-old article, or a
        weekend in a backtest, is crossed in a few reads)."""
        if not self.rules:
            return limit
        s = self.store.bucket_seconds
        start = cur + s - max(r.short_window_s for r in self.rules)
        step = 64
        while start < limit:
            stop = min(limit, start + step * s)
            ser = await self.store.bucket_series(C.ALL_SCOPE, start, stop)
            busy = np.flatnonzero(ser.column("n"))
            if len(busy):
                return max(cur, min(limit, start + int(busy[0]) * s))
            start, step = stop, 20000
        return limit

    def _pairs(self, first_e: int, states: Mapping[tuple[str, str], RuleState],
               activity: Mapping[str, int]) -> list[tuple[Rule, str]]:
        pairs = []
        for rule in self.rules:
            if rule.scope_type == C.ALL_SCOPE:
                cands = {C.ALL_SCOPE}
            elif rule.scopes:
                cands = set(rule.scopes)
            else:
                cands = {sc for sc in activity if scope_type(sc) == rule.scope_type}
            cands |= {sc for (rn, sc) in states if rn == rule.name}
            for sc in sorted(cands):
                act = activity.get(sc)
                # a scope with no bucket at or after first_e - short cannot have data in any short
                # window ending in this range, so an idle pair there cannot fire
                if (rule.name, sc) in states or (act is not None and act >= first_e - rule.short_window_s):
                    pairs.append((rule, sc))
        return pairs

    async def _evaluate_range(self, cur: int, end: int, states: Mapping[tuple[str, str], RuleState]
                              ) -> tuple[list[dict], dict[tuple[str, str], RuleState | None]]:
        s = self.store.bucket_seconds
        first_e = cur + s
        # scopes idle since before every short window of this range cannot fire here (_pairs)
        reach = max((r.short_window_s for r in self.rules), default=0)
        activity = await self.store.scope_activity(since=first_e - reach)
        all_pairs = self._pairs(first_e, states, activity)
        pairs = [(rule, sc) for rule, sc in all_pairs if rule.test != "surge"]
        surge_pairs = [(rule, sc) for rule, sc in all_pairs if rule.test == "surge"]
        ends = boundaries(cur, end, s)
        spans: dict[str, int] = {}
        shorts: dict[str, int] = {}
        for rule, sc in pairs:
            spans[sc] = max(spans.get(sc, 0), rule.span_s)
            shorts[sc] = max(shorts.get(sc, 0), rule.short_window_s)
        # Two reads per scope: first the short windows' reach; the baseline's buckets (most of a
        # rule's span) only for scopes where a pair has a state or a short window that can fire.
        # Elsewhere decide() would keep "no state" at every boundary, so the baseline is not needed.
        recent = {sc: await self.store.bucket_series(sc, first_e - shorts[sc], end) for sc in sorted(spans)}
        needed = {sc for rule, sc in pairs
                  if (rule.name, sc) in states
                  or bool((recent[sc].rolling(ends, rule.short_window_s) >= rule.min_count).any())}
        series = {sc: BucketSeries.join(await self.store.bucket_series(sc, first_e - spans[sc], first_e - shorts[sc]),
                                        recent[sc])
                  for sc in sorted(needed)}
        alerts: list[dict] = []
        new_states: dict[tuple[str, str], RuleState | None] = {}
        for rule, sc in pairs:
            if sc not in series:
                continue
            ser = series[sc]
            st = states.get((rule.name, sc))
            for d, prior, short, base in decisions(rule, sc, ser, ends, st):
                if d.emits:
                    alerts.append(await self._build(rule, sc, d, prior, ser, short, base))
                st = d.state
            new_states[(rule.name, sc)] = st
        if surge_pairs:
            more, more_states = await self._evaluate_surge(cur, end, surge_pairs, states)
            alerts += more
            new_states.update(more_states)
        alerts.sort(key=lambda a: (a["window_end"], a["rule"], a["scope"], _STATUS_ORDER[a["status"]]))
        return alerts, new_states

    async def _evaluate_surge(self, cur: int, end: int, pairs: list[tuple[Rule, str]],
                              states: Mapping[tuple[str, str], RuleState]
                              ) -> tuple[list[dict], dict[tuple[str, str], RuleState | None]]:
        """``surge`` rules: decide at the hourly boundaries in ``(cur, end]`` on the hourly roll-ups.

        The baseline of each window is the rule's ``baseline_window`` before it, cut at the hour of the
        namespace's first article (so a stream's first days use what history there is, and nothing
        fires before ``min_history``). As with the other rules, an idle pair is decided only where a
        window holds ``min_negative`` negatives, an open alert at every boundary.
        """
        H = C.ROLLUP_SECONDS
        ends = range((cur // H + 1) * H, end + 1, H)
        if not len(ends):
            return [], {}
        oldest = await self.store.oldest_event()
        history_start = bucket_start(oldest if oldest is not None else ends[0], H)
        spans: dict[str, int] = {}
        reach: dict[str, int] = {}
        for rule, sc in pairs:
            spans[sc] = max(spans.get(sc, 0), rule.span_s)
            reach[sc] = max(reach.get(sc, 0), rule.short_window_s)
        # Two reads per scope, as for the other rules: the short windows' reach first; the weeks of
        # baseline only where a pair has a state or a window with min_negative negatives.
        recent = await self.store.hourly_series_many(
            {sc: (max(history_start, ends[0] - reach[sc]), ends[-1]) for sc in sorted(spans)})
        needed: set[str] = set()
        for rule, sc in pairs:
            r = recent[sc]
            cum = np.concatenate(([0], np.cumsum(r.column("negative"))))
            hi = (np.asarray(ends) - r.start) // H
            if (rule.name, sc) in states or any(
                    bool((cum[hi] - cum[np.maximum(0, hi - w // H)] >= rule.min_negative).any())
                    for w in rule.windows_s):
                needed.add(sc)
        older = await self.store.hourly_series_many(
            {sc: (max(history_start, ends[0] - spans[sc]), recent[sc].start) for sc in sorted(needed)})
        series = {sc: BucketSeries.join(older[sc], recent[sc]) for sc in sorted(needed)}
        alerts: list[dict] = []
        new_states: dict[tuple[str, str], RuleState | None] = {}
        # scope -> (from, until) boundaries where one of its surge alerts is open or cooling down
        busy: dict[str, list[tuple[int, int]]] = {}
        surge_rules = {r.name for r in self.rules if r.test == "surge"}
        for (rn, sc0), st0 in states.items():
            if rn in surge_rules and st0.status != "open" and st0.cooldown_until is not None:
                busy.setdefault(sc0, []).append((cur, st0.cooldown_until))
        # narrow scopes first (tickers, entities, then topics, then all): a broad alert may be folded
        for rule, sc in sorted(pairs, key=lambda p: (_BREADTH.get(scope_type(p[1]), 0), p[1], p[0].name)):
            if sc not in series:
                continue
            ser = series[sc]
            neg_cum = np.concatenate(([0], np.cumsum(ser.column("negative"))))
            st = states.get((rule.name, sc))
            for e in ends:
                in_windows = [ser.window(max(ser.start, e - w), e) for w in rule.windows_s]
                if (st is None or st.status != "open") and not any(x.negative >= rule.min_negative
                                                                    for x in in_windows):
                    continue
                windows: list[SurgeWindow] = []
                bases: dict[int, WindowStats] = {}
                for w, win in zip(rule.windows_s, in_windows, strict=True):
                    b_end = max(e - w, ser.start)
                    b_start = max(history_start, b_end - rule.baseline_window_s, ser.start)
                    base = ser.window(b_start, b_end)
                    bases[w] = base
                    k = (b_end - ser.start) // H
                    count = max(0, (b_end - b_start) // w)
                    idx = k - np.arange(count + 1) * (w // H)
                    slices = tuple(int(x) for x in (neg_cum[idx[:-1]] - neg_cum[idx[1:]])) if count else ()
                    windows.append(SurgeWindow(window_s=w, n=win.n, negative=win.negative, baseline_n=base.n,
                                               baseline_negative=base.negative, baseline_s=max(0, b_end - b_start),
                                               slices=slices))
                fired_w = (st.fired_end - st.fired_start if st is not None and st.status == "open"
                           and st.fired_end is not None and st.fired_start is not None else None)
                ev = evaluate_surge(rule, windows, warmed_up=e - history_start >= rule.min_history_s,
                                    calm_window_s=fired_w)
                assert ev.window_s is not None
                deciding = ser.window(max(ser.start, e - ev.window_s), e)
                d = decide(rule, sc, deciding, bases[ev.window_s], st, evaluation=ev)
                if d.action == "fire" and (by := _explained_by(sc, e, ev, busy, series)):
                    log.info("%s %s at %s folded into the open alert of %s", rule.name, sc, format_time(e), by)
                    d = Decision("none", None, ev)
                if d.emits:
                    alerts.append(await self._build(rule, sc, d, st, ser, deciding, bases[ev.window_s]))
                st = d.state
                if st is not None and st.status == "open":
                    busy.setdefault(sc, []).append((e, e))
                elif st is not None and st.cooldown_until is not None:
                    busy.setdefault(sc, []).append((e, st.cooldown_until))
            new_states[(rule.name, sc)] = st
        return alerts, new_states

    async def _build(self, rule: Rule, scope: str, d: Decision, prior: RuleState | None, ser: BucketSeries,
                     short: WindowStats, base: WindowStats) -> dict:
        status = d.emits
        assert status and d.alert_id and d.severity
        ev = d.evaluation
        width = short.end - short.start
        fine = await self.store.stats(scope, short.end, width)  # the minute buckets (hourly roll-ups keep no scores)
        versions = fine.model_versions
        top = await self.store.top_negative(scope, short.end, width, C.TOP_K)
        open_now = d.state is not None and d.state.status == "open"
        fired_end = d.state.fired_end if (open_now and d.state) else (prior.fired_end if prior else None)
        record = dict(
            alert_id=d.alert_id,
            event_id=make_event_id(d.alert_id, status, d.severity),
            sequence=record_sequence(status, d.severity),
            status=status,
            rule=rule.name,
            scope=scope,
            scope_type=scope_type(scope),
            severity=d.severity,
            namespace=self.namespace,
            window_start=format_time(short.start),
            window_end=format_time(short.end),
            baseline_start=format_time(base.start),
            baseline_end=format_time(base.end),
            count=short.n,
            negative_count=short.negative,
            positive_count=short.positive,
            neutral_count=short.neutral,
            negative_rate=_r(ev.rate),
            mean_score=_r(fine.mean_score if rule.test == "surge" else short.mean_score),
            baseline_count=base.n,
            baseline_negative_count=base.negative,
            baseline_rate=_r(ev.baseline_rate),
            threshold=rule.level_rate(d.severity),
            resolve_below=rule.resolve_below,
            spike_test=rule.test,
            statistic=_r(ev.statistic),
            statistic_threshold=_r(ev.statistic_threshold),
            z_score=_r(ev.z_score),
            wilson_lower=_r(ev.wilson_lower),
            fired_window_end=format_time(fired_end) if fired_end is not None else format_time(short.end),
            top_headlines=[{k: h.get(k) for k in ("id", "title", "url", "source", "published_at", "sentiment_score")}
                              for h in top],
            model_version=",".join(versions) or self.model_version,
            created_at=format_time(self.clock()),
        )
        if rule.test == "surge":
            del record["resolve_below"]
            record.update(p_value=ev.p_value, surge_test=ev.surge_test,
                          expected_negative_count=_r(ev.expected_negative))
        return Alert.model_validate(record).to_wire()
