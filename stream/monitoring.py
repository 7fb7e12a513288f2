"""Model monitoring in Redis: what the worker predicted, per model version and hour, and the drift
of the recent hours against the version's reference (the rule: :mod:`finpulse.models.drift`).

The reference of a model version is taken from the live stream once the version has scored
:attr:`ModelMonitor.reference_min` headlines in complete hours (at most :attr:`ModelMonitor.reference_max_hours`
of them, from the first hour it scored); it is then frozen, so a slow drift stays visible. The recent
window is the last :attr:`ModelMonitor.window_hours` hours, the current one included. Hours are wall-clock
hours of scoring. Counts expire after :data:`KEEP_S`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from finpulse.core import constants as C
from finpulse.core.codec import as_str
from finpulse.models.drift import drift_report, prediction_fields

HOUR = 3600
KEEP_S = 8 * 86400


class ModelMonitor:
    """Prediction counts and drift reports of one namespace.

    :param redis: a ``redis.asyncio`` client.
    :param namespace: run namespace.
    :param reference_min: headlines the reference needs.
    :param reference_max_hours: complete hours the reference may span at most.
    :param window_hours: hours of the recent window.
    """

    def __init__(self, redis: Any, namespace: str, *, reference_min: int = 2000, reference_max_hours: int = 24,
                 window_hours: int = 6):
        self.redis = redis
        self.namespace = namespace
        self.reference_min = reference_min
        self.reference_max_hours = reference_max_hours
        self.window_hours = window_hours

    def _hour_key(self, version: str, hour: int) -> str:
        return C.monitor_key(self.namespace, version, f"h:{hour}")

    async def observe(self, scored: Iterable[Mapping[str, Any]], now: float | None = None) -> None:
        """Count a batch of scored messages in the current hour of their model version."""
        now = time.time() if now is None else now
        hour = int(now // HOUR) * HOUR
        per_version = prediction_fields(scored)
        if not per_version:
            return
        pipe = self.redis.pipeline(transaction=False)
        for version, counts in per_version.items():
            key = self._hour_key(version, hour)
            for field, n in counts.items():
                pipe.hincrby(key, field, n)
            pipe.expire(key, KEEP_S)
            pipe.set(C.monitor_key(self.namespace, version, "first"), hour, nx=True, ex=KEEP_S * 4)
        pipe.zadd(C.ns_key(self.namespace, C.MODEL_VERSIONS_KEY), {v: now for v in per_version})
        await pipe.execute()

    async def versions(self) -> list[tuple[str, float]]:
        """Model versions that scored in this namespace, with the last time each did, newest first."""
        rows = await self.redis.zrevrange(C.ns_key(self.namespace, C.MODEL_VERSIONS_KEY), 0, -1, withscores=True)
        return [(as_str(v), float(t)) for v, t in rows]

    async def _sum_hours(self, version: str, hours: list[int]) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for h in hours:
            pipe.hgetall(self._hour_key(version, h))
        total: dict[str, int] = {}
        for row in await pipe.execute():
            for k, v in row.items():
                total[as_str(k)] = total.get(as_str(k), 0) + int(v)
        return total

    async def reference(self, version: str, now: float | None = None) -> tuple[dict[str, int], dict[str, Any]]:
        """The version's reference counts and how it was taken (``{}`` while not enough was seen).

        :returns: (field counts, ``{"from", "to", "n", "frozen"}``).
        """
        now = time.time() if now is None else now
        ref_key = C.monitor_key(self.namespace, version, "ref")
        got = await self.redis.hgetall(ref_key)
        meta_raw = await self.redis.get(C.monitor_key(self.namespace, version, "ref-meta"))
        if got and meta_raw is not None:
            return {as_str(k): int(v) for k, v in got.items()}, json.loads(as_str(meta_raw))
        first = await self.redis.get(C.monitor_key(self.namespace, version, "first"))
        if first is None:
            return {}, {"frozen": False, "n": 0}
        start, current_hour = int(as_str(first)), int(now // HOUR) * HOUR
        hours = list(range(start, min(current_hour, start + self.reference_max_hours * HOUR), HOUR))
        total = await self._sum_hours(version, hours) if hours else {}
        n = int(total.get("n", 0))
        if n < self.reference_min:
            return {}, {"frozen": False, "n": n, "from": start}
        meta = {"frozen": True, "n": n, "from": start, "to": hours[-1] + HOUR}
        pipe = self.redis.pipeline(transaction=True)  # both keys in the version's hash tag
        pipe.hset(ref_key, mapping=total)
        pipe.set(C.monitor_key(self.namespace, version, "ref-meta"), json.dumps(meta))
        await pipe.execute()
        return total, meta

    async def report(self, version: str, now: float | None = None) -> dict[str, Any]:
        """The drift report of ``version``: the recent window against its reference.

        :returns: :func:`finpulse.models.drift.drift_report` plus ``version``, ``reference`` (how
            it was taken) and ``window_hours``.
        """
        now = time.time() if now is None else now
        ref, meta = await self.reference(version, now)
        hour = int(now // HOUR) * HOUR
        current = await self._sum_hours(version, [hour - k * HOUR for k in range(self.window_hours)])
        return {"version": version, "reference": meta, "window_hours": self.window_hours,
                **drift_report(ref, current)}
