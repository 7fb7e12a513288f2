"""Alert history and acknowledgements, in Redis (what fired, resolved, when; who acknowledged it).

The worker adds every alert record it produces to the ``alerts`` topic (the topic stays the record
of truth for consumers; this is the queryable copy for the dashboard and the API). Records are
keyed by ``event_id``, so a record produced twice (at-least-once) is stored once. At most
:data:`MAX_RECORDS` are kept per namespace, the oldest window ends dropped first.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from finpulse.core import constants as C
from finpulse.core.codec import as_str
from finpulse.core.rfc3339 import parse as parse_time

from .rules import severity_rank

MAX_RECORDS = 20000


class AlertHistory:
    """The alert records of one namespace.

    :param redis: a ``redis.asyncio`` client.
    :param namespace: run namespace.
    """

    def __init__(self, redis: Any, namespace: str):
        self.redis = redis
        self.namespace = namespace
        self._records = C.history_key(namespace, "records")
        self._by_time = C.history_key(namespace, "by-time")
        self._acks = C.history_key(namespace, "acks")

    async def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Store alert records (idempotent per ``event_id``) and drop the oldest past :data:`MAX_RECORDS`."""
        records = list(records)
        if not records:
            return
        async with self.redis.pipeline(transaction=True) as pipe:  # {hist} keys only
            for r in records:
                pipe.hset(self._records, r["event_id"], json.dumps(r, sort_keys=True, ensure_ascii=False))
                pipe.zadd(self._by_time, {r["event_id"]: parse_time(r["window_end"]).timestamp()})
            await pipe.execute()
        extra = await self.redis.zcard(self._by_time) - MAX_RECORDS
        if extra > 0:
            old = [as_str(x) for x in await self.redis.zrange(self._by_time, 0, extra - 1)]
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._by_time, *old)
                pipe.hdel(self._records, *old)
                await pipe.execute()

    async def query(self, *, scope: str | None = None, severity: str | None = None, status: str | None = None,
                    since: float | None = None, until: float | None = None, limit: int = 200) -> list[dict]:
        """Records by window end, newest first, filtered.

        :param scope: only this scope.
        :param severity: only this severity or higher (``info`` < ``warning`` < ``critical``).
        :param status: ``fired`` or ``resolved``.
        :param since: window end at or after (epoch seconds).
        :param until: window end at or before.
        :param limit: most records returned.
        """
        out: list[dict] = []
        async for r in self.records(scope=scope, severity=severity, status=status, since=since, until=until):
            out.append(r)
            if len(out) >= limit:
                break
        return out

    async def records(self, *, scope: str | None = None, severity: str | None = None, status: str | None = None,
                      since: float | None = None, until: float | None = None) -> AsyncIterator[dict]:
        """The records :meth:`query` returns, newest first, read from Redis 500 at a time as they are
        consumed (a caller that stops early reads no more). Same filters as :meth:`query`."""
        ids = await self.redis.zrevrangebyscore(self._by_time, "+inf" if until is None else until,
                                                "-inf" if since is None else since)
        ids = [as_str(i) for i in ids]
        acks = await self.acks()
        for off in range(0, len(ids), 500):
            part = ids[off:off + 500]
            for raw in await self.redis.hmget(self._records, part):
                if raw is None:
                    continue
                r = json.loads(as_str(raw))
                if scope and r.get("scope") != scope:
                    continue
                if severity and severity_rank(r.get("severity", "info")) < severity_rank(severity):
                    continue
                if status and r.get("status") != status:
                    continue
                if r.get("alert_id") in acks:
                    r = {**r, "acknowledged": acks[r["alert_id"]]}
                yield r

    async def acknowledge(self, alert_id: str, by: str, note: str = "", now: float | None = None) -> dict:
        """Record that ``by`` acknowledged ``alert_id`` (shown with its records; delivery is unchanged)."""
        ack = {"by": by, "note": note, "at": time.time() if now is None else now}
        await self.redis.hset(self._acks, alert_id, json.dumps(ack))
        if await self.redis.hlen(self._acks) > MAX_RECORDS:  # bounded like the records: the oldest half goes
            acks = sorted((await self.acks()).items(), key=lambda kv: kv[1].get("at", 0))
            await self.redis.hdel(self._acks, *[k for k, _ in acks[: len(acks) // 2]])
        return ack

    async def acks(self) -> dict[str, dict]:
        """Acknowledgements by alert id."""
        return {as_str(k): json.loads(as_str(v)) for k, v in (await self.redis.hgetall(self._acks)).items()}


async def open_alerts(history: AlertHistory, open_states: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The detector's open alerts with their newest record (headlines, rates) from the history.

    :param history: the namespace's history.
    :param open_states: :meth:`finpulse.alerts.detector.Detector.open_alerts`.
    """
    states = list(open_states)
    if not states:
        return []
    wanted = {st["alert_id"] for st in states}
    latest: dict[str, dict] = {}
    async for r in history.records(status="fired"):  # newest first: stop once every open alert is found
        if r["alert_id"] in wanted:
            latest.setdefault(r["alert_id"], r)
            if len(latest) == len(wanted):
                break
    return [{**st, "record": latest.get(st["alert_id"])} for st in states]
