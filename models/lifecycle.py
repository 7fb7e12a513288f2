"""Which model version scores: the version in force, promotions, rollbacks and the shadow version.

The version in force is **one shared setting in Redis** per namespace (keys in
:mod:`finpulse.core.constants`, hash tag ``{model}``): the list ``{model}:promoted`` of promoted
versions, oldest first; its last entry is in force, and the base model (the shipped one) is in force
when the list is empty. ``finpulse model promote V`` appends ``V``; ``finpulse model rollback``
removes the last entry, so the previous version is in force again. Each worker reads the setting
before each micro-batch and switches at that batch (:class:`ModelControl.state`), logging the change;
every scored record carries the ``model_version`` that scored it. A worker started with a pinned
version (``FINPULSE_MODEL_VERSION``, what backtests do) ignores the setting.

A *shadow* version (``{model}:shadow``) scores the same traffic as the version in force; its labels
are compared with the published ones and counted (``{model}:agree:<shadow>|<in force>``), never
published. ``finpulse model shadow-report`` prints the agreement.

Each change is one Lua script over keys of one hash tag (atomic on one Redis and on a Redis Cluster);
every promotion and rollback is logged in ``{model}:events`` (who, when, why, from, to).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from finpulse.core.constants import MODEL_TAG, prefix

from .exceptions import ModelVersionError

EVENTS_MAX = 200
"""Promotion / rollback events kept (newest first)."""

PROMOTED_MAX = 100
"""Entries of the promotion list kept (rollback can go back this many versions)."""

_PROMOTE = """
local cur = redis.call('LINDEX', KEYS[1], -1)
if cur == ARGV[1] then return {0, cur} end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
local ev = cjson.decode(ARGV[2])
ev['from'] = cur or ARGV[3]
redis.call('LPUSH', KEYS[2], cjson.encode(ev))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return {1, cur or ARGV[3]}
"""

_ROLLBACK = """
local cur = redis.call('RPOP', KEYS[1])
if not cur then return {0} end
local now = redis.call('LINDEX', KEYS[1], -1) or ARGV[2]
local ev = cjson.decode(ARGV[1])
ev['from'] = cur
ev['to'] = now
redis.call('LPUSH', KEYS[2], cjson.encode(ev))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return {1, cur, now}
"""


class ModelControl:
    """The model-version setting of one namespace.

    :param redis: a ``redis.asyncio`` client (one Redis or a cluster).
    :param namespace: the key namespace (``live``, a backtest's ``bt-...``).
    :param base_version: the version in force when nothing is promoted (the base model's).
    """

    def __init__(self, redis: Any, namespace: str, base_version: str):
        self.redis = redis
        self.base_version = base_version
        head = f"{prefix(namespace)}:{MODEL_TAG}"
        self.promoted_key = f"{head}:promoted"
        self.events_key = f"{head}:events"
        self.shadow_key = f"{head}:shadow"
        self._agree_head = f"{head}:agree:"
        self._promote = redis.register_script(_PROMOTE)
        self._rollback = redis.register_script(_ROLLBACK)

    async def state(self) -> tuple[str, str | None]:
        """``(version in force, shadow version or None)`` in one round trip (a worker calls it per batch)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lindex(self.promoted_key, -1)
            pipe.get(self.shadow_key)
            active, shadow = await pipe.execute()
        return _text(active) or self.base_version, _text(shadow)

    async def in_force(self) -> str:
        """The version in force."""
        return (await self.state())[0]

    async def promote(self, version: str, *, by: str = "", reason: str = "") -> dict[str, Any]:
        """Make ``version`` the version in force (workers switch at their next batch).

        The caller checks that ``version`` exists and is intact (:meth:`ModelRegistry.get`).

        :returns: the event: ``action``, ``from``, ``to``, ``by``, ``reason``, ``at``.
        :raises ModelVersionError: ``version`` is in force already.
        """
        ev = {"action": "promote", "to": version, "by": by, "reason": reason, "at": time.time()}
        changed, before = await self._promote(keys=[self.promoted_key, self.events_key],
                                              args=[version, json.dumps(ev), self.base_version,
                                                    PROMOTED_MAX, EVENTS_MAX])
        if not int(changed):
            raise ModelVersionError(f"{version} is in force already")
        return {**ev, "from": _text(before)}

    async def rollback(self, *, by: str = "", reason: str = "") -> dict[str, Any]:
        """Put the previously promoted version (or the base model) back in force.

        :returns: the event: ``action``, ``from``, ``to``, ``by``, ``reason``, ``at``.
        :raises ModelVersionError: nothing was promoted (the base model is in force).
        """
        ev = {"action": "rollback", "by": by, "reason": reason, "at": time.time()}
        res = await self._rollback(keys=[self.promoted_key, self.events_key],
                                   args=[json.dumps(ev), self.base_version, EVENTS_MAX])
        if not int(res[0]):
            raise ModelVersionError(f"nothing to roll back: no version was promoted, the base model "
                                    f"{self.base_version} is in force")
        return {**ev, "from": _text(res[1]), "to": _text(res[2])}

    async def set_shadow(self, version: str | None) -> None:
        """Score traffic with ``version`` too, without publishing it (``None`` = no shadow)."""
        if version:
            await self.redis.set(self.shadow_key, version)
        else:
            await self.redis.delete(self.shadow_key)

    async def events(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest promotion / rollback events first."""
        return [json.loads(x) for x in await self.redis.lrange(self.events_key, 0, limit - 1)]

    def agree_key(self, shadow: str, active: str) -> str:
        """The key counting the agreement of ``shadow`` with the version in force ``active``."""
        return f"{self._agree_head}{shadow}|{active}"

    async def record_agreement(self, shadow: str, active: str, counts: Mapping[str, int]) -> None:
        """Add one batch's comparison counts (see :func:`compare`)."""
        if not counts.get("n"):
            return
        key = self.agree_key(shadow, active)
        async with self.redis.pipeline(transaction=False) as pipe:
            for field, n in counts.items():
                if n:
                    pipe.hincrby(key, field, int(n))
            await pipe.execute()

    async def agreement(self, shadow: str, active: str) -> dict[str, Any]:
        """Headlines compared, topic and sentiment agreement rates and the sentiment cross-table.

        :returns: ``{"shadow", "in_force", "n", "topic_agreement", "sentiment_agreement",
            "sentiment_pairs": {"<in force label>|<shadow label>": count}}`` (rates ``None`` if ``n`` is 0).
        """
        raw = {_text(k) or "": int(v) for k, v in (await self.redis.hgetall(self.agree_key(shadow, active))).items()}
        n = raw.get("n", 0)
        return {"shadow": shadow, "in_force": active, "n": n,
                "topic_agreement": raw.get("topic", 0) / n if n else None,
                "sentiment_agreement": raw.get("sentiment", 0) / n if n else None,
                "sentiment_pairs": {k[2:]: v for k, v in sorted(raw.items()) if k.startswith("s:")}}


def compare(published: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> dict[str, int]:
    """Agreement counts of two classifiers' results on the same texts (rows with an error skipped).

    :returns: ``n`` (rows compared), ``topic`` and ``sentiment`` (rows with equal labels) and
        ``s:<published sentiment>|<shadow sentiment>`` per pair seen.
    """
    out: dict[str, int] = {"n": 0, "topic": 0, "sentiment": 0}
    for a, b in zip(published, shadow, strict=True):
        if "error" in a or "error" in b:
            continue
        out["n"] += 1
        out["topic"] += a["topic"] == b["topic"]
        out["sentiment"] += a["sentiment"] == b["sentiment"]
        pair = f"s:{a['sentiment']}|{b['sentiment']}"
        out[pair] = out.get(pair, 0) + 1
    return out


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)
