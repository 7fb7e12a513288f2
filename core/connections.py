"""Redis clients for a URL: one Redis, or a Redis Cluster when the URL says so.

``redis://host:port/db`` (and ``rediss://``, ``unix://``) is one Redis server. ``redis+cluster://host:port``
(or ``rediss+cluster://``) is a Redis Cluster reached through any of its nodes (a comma-separated list
of ``host:port`` seeds may follow the first: ``redis+cluster://a:7000,b:7001``); the client discovers
the others and follows slot moves and failovers. Everything finpulse runs in one script or
transaction shares one hash tag (see :mod:`finpulse.core.constants`), so the same code runs on both.

Nothing is connected at import time; each call returns a new client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that select a Redis Cluster client, and the plain scheme each node speaks."""

#: How often a cluster client re-reads the slot map and retries a command that met a moved
#: slot, a node that went down or a failover in progress, before raising.
CLUSTER_ERROR_RETRIES = 5


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``).

    :param url: a Redis URL.
    """
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """The plain node URL and the seed nodes of a cluster URL.

    :param url: ``redis+cluster://[user:pass@]host:port[,host:port...][/...]``.
    :returns: (URL of the first seed with the plain scheme, every seed as ``(host, port)``).
    :raises ValueError: when ``url`` is not a cluster URL or a seed has no port.
    """
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: {url!r} (expected redis+cluster://host:port)")
    auth, _, hosts = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"Redis Cluster seed {item!r} in {url!r} needs host:port")
        seeds.append((host.strip("[]"), int(port)))
    first = f"{auth}@{hosts.split(',')[0]}" if auth else hosts.split(",")[0]
    plain = urlunsplit((CLUSTER_SCHEMES[parts.scheme], first, parts.path, parts.query, ""))
    return plain, seeds


def _cluster_kwargs(url: str, kwargs: dict[str, Any], retry_type: Any) -> tuple[str, dict[str, Any]]:
    from redis.backoff import ExponentialWithJitterBackoff

    plain, seeds = cluster_seeds(url)
    retry = retry_type(ExponentialWithJitterBackoff(base=0.1, cap=2.0), CLUSTER_ERROR_RETRIES)
    return plain, {"retry": retry, **kwargs, "_seeds": seeds}


def async_redis(url: str, **kwargs: Any) -> Any:
    """A ``redis.asyncio`` client for ``url``: ``Redis`` or ``RedisCluster`` (see the module docstring).

    :param url: a Redis or Redis Cluster URL.
    :param kwargs: passed to the client (``socket_timeout``, ``decode_responses``...).
    """
    import redis.asyncio as aioredis

    if not is_cluster_url(url):
        return aioredis.from_url(url, **kwargs)
    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.retry import Retry

    plain, kw = _cluster_kwargs(url, kwargs, Retry)
    more = [ClusterNode(h, p) for h, p in kw.pop("_seeds")[1:]]
    return aioredis.RedisCluster.from_url(plain, **({"startup_nodes": more} if more else {}), **kw)


def sync_redis(url: str, **kwargs: Any) -> Any:
    """A blocking ``redis`` client for ``url``: ``Redis`` or ``RedisCluster`` (see the module docstring).

    :param url: a Redis or Redis Cluster URL.
    :param kwargs: passed to the client.
    """
    import redis

    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **kwargs)
    from redis.cluster import ClusterNode
    from redis.retry import Retry

    plain, kw = _cluster_kwargs(url, kwargs, Retry)
    more = [ClusterNode(h, p) for h, p in kw.pop("_seeds")[1:]]  # type: ignore[no-untyped-call]
    return redis.RedisCluster.from_url(plain, **({"startup_nodes": more} if more else {}), **kw)


def primaries(client: Any) -> list[Any]:
    """The clients to ask for server-wide facts (``INFO``, ``DBSIZE``): each primary of a cluster,
    or the one server.

    :param client: a blocking client from :func:`sync_redis`.
    :returns: ``[client]`` for one server; for a cluster, one blocking ``Redis`` per primary.
    """
    import redis

    if not isinstance(client, redis.RedisCluster):
        return [client]
    return [client.get_redis_connection(node) for node in client.get_primaries()]  # type: ignore[no-untyped-call]


def is_cluster_client(client: Any) -> bool:
    """Whether ``client`` (blocking or asyncio) talks to a Redis Cluster.

    :param client: a client from :func:`async_redis` or :func:`sync_redis`.
    """
    import redis
    import redis.asyncio as aioredis

    return isinstance(client, redis.RedisCluster | aioredis.RedisCluster)


#: Script calls one :func:`run_scripts` keeps in flight at once on a cluster.
SCRIPT_CONCURRENCY = 32


async def run_scripts(client: Any, script: Any, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Run a registered script once per ``(keys, args)`` and return the replies in order.

    One Redis: one pipelined round trip. A cluster client cannot pipeline scripts (each call may go to
    another node), so there the calls run concurrently, at most :data:`SCRIPT_CONCURRENCY` at a time.
    Calls are independent (not one transaction) either way; callers make them safe to repeat.

    :param client: a client from :func:`async_redis`.
    :param script: what ``client.register_script`` returned.
    :param calls: the keys and arguments of each call (each call's keys share one hash tag).
    """
    if not calls:
        return []
    if not is_cluster_client(client):
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            await script(keys=keys, args=args, client=pipe)
        return list(await pipe.execute())
    sem = asyncio.Semaphore(SCRIPT_CONCURRENCY)

    async def one(keys: Sequence[Any], args: Sequence[Any]) -> Any:
        async with sem:
            return await script(keys=keys, args=args)

    return list(await asyncio.gather(*(one(k, a) for k, a in calls)))
