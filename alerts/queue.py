"""The durable webhook delivery queue in Redis: :class:`DeliveryQueue` and its Lua scripts.

Every (endpoint, ``webhook-id``) is enqueued at most once (idempotent, remembered ``keep_s``); due
times, leases, job state and the attempt log live in Redis (hash tag ``{dlv}``), so a restarted
worker carries on where the last one stopped. The sending loop is :mod:`finpulse.alerts.sender`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from finpulse.core import constants as C
from finpulse.core.codec import as_str

from .config import Endpoint, RetryPolicy
from .render import render_body, webhook_id_of

_ENQUEUE_LUA = """
redis.call('SADD', KEYS[3], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

_CLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
end
return ids
"""


class DeliveryQueue:
    """Durable per-endpoint delivery state in Redis (keys in hash tag ``{dlv}``, see constants).

    :param redis: a ``redis.asyncio.Redis``.
    :param namespace: run namespace.
    :param keep_s: how long finished jobs (delivered / dead) are remembered, so enqueueing the same
        alert again (a redelivered Kafka record) does not send it twice.
    """

    def __init__(self, redis: Any, namespace: str, *, keep_s: float = RetryPolicy.keep_s):
        self.redis = redis
        self.namespace = namespace
        C.prefix(namespace)
        self.keep_s = int(keep_s)
        self._enqueue = redis.register_script(_ENQUEUE_LUA)
        self._claim = redis.register_script(_CLAIM_LUA)

    async def enqueue(self, alert: Mapping[str, Any], endpoints: Iterable[Endpoint], *,
                      now: float | None = None) -> list[str]:
        """Queue an alert for every endpoint whose filters accept it (idempotent).

        :param alert: an alert record (``event_id`` is the ``webhook-id``).
        :param endpoints: configured endpoints.
        :param now: due time of the first attempt (default: now).
        :returns: names of the endpoints it was newly queued for (already-known jobs are skipped).
        """
        now = time.time() if now is None else now
        wid = webhook_id_of(alert)
        alert_json = json.dumps(alert, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        out = []
        for ep in endpoints:
            if not ep.accepts(alert):
                continue
            fields = {"alert": alert_json, "body": render_body(alert, ep.format), "format": ep.format,
                      "state": "pending", "attempts": 0, "created": now,
                      "alert_id": str(alert.get("alert_id", ""))}
            argv: list[Any] = [wid, now, ep.name]
            for k, v in fields.items():
                argv += [k, v]
            added = await self._enqueue(keys=[C.job_key(self.namespace, ep.name, wid),
                                              C.due_key(self.namespace, ep.name),
                                              C.endpoints_key(self.namespace)], args=argv)
            if int(added):
                out.append(ep.name)
        return out

    async def reconcile(self, configured: Iterable[str]) -> list[str]:
        """Retire the jobs of endpoints no longer configured, and keep those of configured ones.

        The jobs of an endpoint that left the rules file expire after ``keep_s`` (7 days) unless it
        is configured again before then: their due set, job hashes and attempt logs get that TTL,
        and lose it again when a worker starts with the endpoint configured.

        :param configured: names of the configured endpoints.
        :returns: the endpoints retired now.
        """
        names = set(configured)
        known = {as_str(n) for n in await self.redis.smembers(C.endpoints_key(self.namespace))}
        retired = sorted(known - names)
        for name in sorted(known | names):
            due = C.due_key(self.namespace, name)
            wids = [as_str(w) for w in await self.redis.zrange(due, 0, -1)]
            keys = [due] + [k for w in wids for k in (C.job_key(self.namespace, name, w),
                                                      C.log_key(self.namespace, name, w))]
            pipe = self.redis.pipeline(transaction=False)
            for k in keys:
                if name in names:
                    pipe.persist(k)
                else:
                    pipe.expire(k, self.keep_s)
            if name not in names:
                pipe.srem(C.endpoints_key(self.namespace), name)
            await pipe.execute()
        return retired

    async def claim(self, endpoint: str, now: float, lease_until: float, limit: int = 100) -> list[str]:
        """Atomically take due jobs of an endpoint, pushing their due time to ``lease_until``.

        :param endpoint: endpoint name.
        :param now: jobs due at or before this are taken.
        :param lease_until: new due time of the taken jobs (re-offered then if not finished).
        :param limit: most jobs to take.
        :returns: their webhook-ids, oldest due first.
        """
        ids = await self._claim(keys=[C.due_key(self.namespace, endpoint)], args=[now, lease_until, limit])
        return [as_str(i) for i in ids]

    async def job(self, endpoint: str, webhook_id: str) -> dict[str, Any] | None:
        """A job's fields (``alert``, ``body``, ``format``, ``state``, ``attempts``, ...), or ``None``.

        :param endpoint: endpoint name.
        :param webhook_id: the webhook-id.
        """
        raw = await self.redis.hgetall(C.job_key(self.namespace, endpoint, webhook_id))
        if not raw:
            return None
        d: dict[str, Any] = {as_str(k): as_str(v) for k, v in raw.items()}
        d["attempts"] = int(d.get("attempts", 0))
        return d

    async def attempts(self, endpoint: str, webhook_id: str) -> list[dict[str, Any]]:
        """The attempt log of a job, oldest first.

        :param endpoint: endpoint name.
        :param webhook_id: the webhook-id.
        """
        rows = await self.redis.lrange(C.log_key(self.namespace, endpoint, webhook_id), 0, -1)
        return [json.loads(as_str(r)) for r in rows]

    async def due_count(self, endpoint: str) -> int:
        """Jobs of an endpoint not finished yet (due or leased).

        :param endpoint: endpoint name.
        """
        return int(await self.redis.zcard(C.due_key(self.namespace, endpoint)))

    async def next_due(self, endpoint: str) -> float | None:
        """Due time of the endpoint's next job, ``None`` when nothing is queued.

        :param endpoint: endpoint name.
        """
        rows = await self.redis.zrange(C.due_key(self.namespace, endpoint), 0, 0, withscores=True)
        return float(rows[0][1]) if rows else None

    async def record(self, endpoint: str, webhook_id: str, entry: dict[str, Any] | None, *, state: str,
                     attempts: int | None = None, due: float | None = None,
                     extra: Mapping[str, Any] | None = None) -> None:
        """Atomically log an attempt and move the job to its next state.

        :param endpoint: endpoint name.
        :param webhook_id: the webhook-id.
        :param entry: attempt outcome to append to the log (``None``: none).
        :param state: ``pending`` (retry at ``due``), ``dead_letter`` (hand-off pending, retried at
            ``due``), ``delivered`` or ``dead`` (both final: removed from the due set, kept ``keep_s``).
        :param attempts: new attempt count.
        :param due: next due time for ``pending`` / ``dead_letter``.
        :param extra: further job fields to set (e.g. ``dead_reason``).
        """
        jk = C.job_key(self.namespace, endpoint, webhook_id)
        lk = C.log_key(self.namespace, endpoint, webhook_id)
        dk = C.due_key(self.namespace, endpoint)
        pipe = self.redis.pipeline(transaction=True)
        mapping: dict[str, Any] = {"state": state, "updated": time.time()}
        if attempts is not None:
            mapping["attempts"] = attempts
        mapping.update(extra or {})
        pipe.hset(jk, mapping=mapping)
        if entry is not None:
            pipe.rpush(lk, json.dumps(entry, separators=(",", ":"), ensure_ascii=False))
        if state in ("delivered", "dead"):
            pipe.zrem(dk, webhook_id)
            pipe.expire(jk, self.keep_s)
            pipe.expire(lk, self.keep_s)
        else:
            pipe.zadd(dk, {webhook_id: due if due is not None else time.time()})
        await pipe.execute()

    async def drop(self, endpoint: str, webhook_id: str) -> None:
        """Remove a job id from the due set (its job hash vanished).

        :param endpoint: endpoint name.
        :param webhook_id: the webhook-id.
        """
        await self.redis.zrem(C.due_key(self.namespace, endpoint), webhook_id)
