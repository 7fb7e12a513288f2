"""Silences: for a time, a scope's (or one alert's) records are recorded but not delivered.

A silence targets ``scope:<scope>`` (every alert of that scope) or ``alert:<alert id>`` (one incident)
until a time. While it holds, the worker still produces the records to the ``alerts`` topic and keeps
them in the history, but queues no webhook for them: neither the firing nor its resolution. Once it
ends (or is removed) the next record is delivered as usual. Expired silences are dropped when read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from finpulse.core import constants as C
from finpulse.core.codec import as_str

from .exceptions import ConfigError

MAX_SILENCE_S = 30 * 86400


def target_of(kind: str, name: str) -> str:
    """The silence target: ``scope:<scope>`` or ``alert:<alert id>``.

    :raises ConfigError: for another kind or an empty name.
    """
    if kind not in ("scope", "alert") or not name:
        raise ConfigError("silence", f"a silence targets a scope or an alert, got {kind!r} {name!r}")
    return f"{kind}:{name}"


class Silences:
    """The silences of one namespace.

    :param redis: a ``redis.asyncio`` client.
    :param namespace: run namespace.
    :param clock: wall clock (tests pass a fake).
    """

    def __init__(self, redis: Any, namespace: str, clock=time.time):
        self.redis = redis
        self.key = C.ns_key(namespace, C.SILENCES_KEY)
        self.clock = clock

    async def add(self, target: str, seconds: float, *, by: str, reason: str = "") -> dict:
        """Silence ``target`` for ``seconds`` (at most 30 days).

        :returns: the silence (``target``, ``until``, ``by``, ``reason``, ``created_at``).
        """
        if not 0 < seconds <= MAX_SILENCE_S:
            raise ConfigError("silence", f"a silence lasts more than 0 s and at most {MAX_SILENCE_S} s, got {seconds}")
        now = self.clock()
        s = {"target": target, "until": now + seconds, "by": by, "reason": reason, "created_at": now}
        await self.redis.hset(self.key, target, json.dumps(s))
        return s

    async def remove(self, target: str) -> bool:
        """End a silence now; ``False`` if there was none."""
        return bool(await self.redis.hdel(self.key, target))

    async def active(self) -> dict[str, dict]:
        """Silences in force by target (expired ones are removed)."""
        now = self.clock()
        out, gone = {}, []
        for k, v in (await self.redis.hgetall(self.key)).items():
            s = json.loads(as_str(v))
            if s["until"] > now:
                out[as_str(k)] = s
            else:
                gone.append(as_str(k))
        if gone:
            await self.redis.hdel(self.key, *gone)
        return out

    async def silencing(self, alert: Mapping[str, Any]) -> dict | None:
        """The silence that holds back ``alert`` (its scope's or its own), if any."""
        active = await self.active()
        return active.get(f"alert:{alert.get('alert_id')}") or active.get(f"scope:{alert.get('scope')}")
