"""Noticing a Kafka log that went backwards: a wiped broker, a re-created topic, a truncated partition.

A broker that comes back with an empty log also comes back without the consumer group's committed
offsets, and the consumer, which still remembers its read position, silently skips every new
message below it. The worker therefore keeps its own record, in Redis, of

* the log's identity: the cluster id (new when a KRaft log directory is formatted again) and the
  id of each of its topics (new when a topic is deleted and created again);
* the highest offset it processed per partition;

and every :data:`CHECK_INTERVAL_S` compares them with the broker (:func:`find_resets`). When the log
went backwards, the worker follows one policy (docs/pipeline.md, "Offset resets"):

1. log an ERROR naming each partition and what changed, and add to the ``log_resets`` metric;
2. record a **rewind plan** (the affected topics) and the new identity in Redis;
3. stop itself (exit 70, :func:`finpulse.stream.resilience.stop_worker`).

A worker that starts with a rewind plan first moves the group's committed offsets of those topics to
the start of their logs (:func:`apply_rewind`; Kafka allows it once no worker of the group is
running), so the messages the consumer would have skipped are read; those processed before the
reset are read again and counted once (the pipeline's claims are by article id).

The comparison is pure (:func:`find_resets`); reading the broker uses kafka-python's admin client
in a thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finpulse.core import constants as C
from finpulse.core.codec import as_str
from finpulse.core.connections import sync_redis
from finpulse.core.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between two comparisons of the worker's record with the broker.
CHECK_INTERVAL_S = 5.0


@dataclass
class LogState:
    """What the broker says now (or what the worker recorded).

    :param cluster_id: the Kafka cluster id (``None`` when the broker does not tell).
    :param topic_ids: topic name -> topic id (topics the broker does not give an id are absent).
    :param log_ends: ``(topic, partition)`` -> log end offset (the next offset to be written).
    """

    cluster_id: str | None = None
    topic_ids: dict[str, str] = field(default_factory=dict)
    log_ends: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class Reset:
    """One way the log went backwards.

    :param topic: the topic.
    :param why: what changed, in words for the log.
    """

    topic: str
    why: str


def find_resets(recorded: LogState, processed: Mapping[tuple[str, int], int], now: LogState) -> list[Reset]:
    """Compare the worker's record with the broker.

    :param recorded: the identity the worker recorded (``log_ends`` unused).
    :param processed: ``(topic, partition)`` -> highest offset the worker processed.
    :param now: what the broker says now.
    :returns: one :class:`Reset` per affected topic (empty: nothing went backwards).
    """
    out: dict[str, str] = {}
    topics = {t for t, _ in processed} | set(recorded.topic_ids)
    if recorded.cluster_id and now.cluster_id and recorded.cluster_id != now.cluster_id:
        for t in sorted(topics):
            out[t] = f"the cluster id changed ({recorded.cluster_id} -> {now.cluster_id}): the broker's log was reset"
    for t, tid in recorded.topic_ids.items():
        new = now.topic_ids.get(t)
        if t not in out and new and new != tid:
            out[t] = f"the topic id changed ({tid} -> {new}): the topic was deleted and created again"
    for (t, p), off in sorted(processed.items()):
        end = now.log_ends.get((t, p))
        if t not in out and end is not None and end <= off:
            out[t] = f"partition {p} ends at offset {end}, but offset {off} was processed: the log was truncated"
    return [Reset(t, why) for t, why in sorted(out.items())]


class LogWatch:
    """The worker's record of the log (in Redis) and its comparison with the broker.

    :param settings: namespace, broker address, consumer group.
    :param redis: a ``redis.asyncio`` client.
    """

    def __init__(self, settings: Settings, redis: Any):
        self.settings = settings
        self.redis = redis
        self.processed: dict[tuple[str, int], int] = {}
        self._identity_key = C.ns_key(settings.namespace, C.LOG_IDENTITY_KEY)
        self._offsets_key = C.ns_key(settings.namespace, C.PROCESSED_OFFSETS_KEY)
        self._rewind_key = C.ns_key(settings.namespace, C.REWIND_KEY)
        self._backlog_key = C.ns_key(settings.namespace, C.BACKLOG_KEY)
        self._admin: Any = None

    def saw(self, topic: str, partition: int, offset: int) -> None:
        """Note a processed (acknowledged) message; written to Redis by the next :meth:`check`."""
        key = (topic, partition)
        if offset > self.processed.get(key, -1):
            self.processed[key] = offset

    # --- the broker ----------------------------------------------------------------------------

    def _read_broker(self, topics: list[str]) -> LogState:
        from kafka import KafkaAdminClient

        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap,
                                           client_id="finpulse-logwatch")
        state = LogState()
        try:
            state.cluster_id = self._admin.describe_cluster().get("cluster_id")
        except Exception as exc:  # noqa: BLE001 - a broker without DescribeCluster: one signal less
            log.debug("describe_cluster: %r", exc)
        for d in self._admin.describe_topics(topics):
            tid = d.get("topic_id")
            if not d.get("error_code", 0) and tid and str(tid) != "00000000-0000-0000-0000-000000000000":
                state.topic_ids[d["name"]] = str(tid)
        return state

    def close(self) -> None:
        """Close the admin client."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    # --- the record ----------------------------------------------------------------------------

    async def _recorded(self) -> tuple[LogState, dict[tuple[str, int], int]]:
        raw = {as_str(k): as_str(v) for k, v in (await self.redis.hgetall(self._identity_key)).items()}
        ident = LogState(cluster_id=raw.pop("cluster_id", None), topic_ids=raw)
        offs = {}
        for k, v in (await self.redis.hgetall(self._offsets_key)).items():
            t, _, p = as_str(k).rpartition("|")
            offs[(t, int(p))] = int(v)
        return ident, offs

    async def _publish_backlog(self, ends: Mapping[tuple[str, int], int],
                               processed: Mapping[tuple[str, int], int]) -> None:
        topics = {self.settings.topic(getattr(self.settings, name)) for name in BACKLOG_TOPICS}
        lags = backlog_of(ends, processed, topics)
        if lags:
            at = time.time()
            fields = [f"{t}|{p}" for (t, p) in lags]
            before = dict(zip(fields, await self.redis.hmget(self._backlog_key, fields), strict=True))
            prev = {f: None if v is None else json.loads(as_str(v)) for f, v in before.items()}
            reports = {f: json.dumps(backlog_report(n, at, prev[f]))
                       for f, n in zip(fields, lags.values(), strict=True)}
            await self.redis.hset(self._backlog_key, mapping=reports)
            await self.redis.expire(self._backlog_key, 3600)

    async def caught_up(self, now: float | None = None) -> bool:
        """Whether every partition of ``news.raw`` and ``news.scored`` was processed up to its end
        (give or take one batch), as the workers reported it in the last 30 s (:func:`caught_up`)."""
        raw = await self.redis.hgetall(self._backlog_key)
        entries = {as_str(k): json.loads(as_str(v)) for k, v in raw.items()}
        return caught_up(entries, now=time.time() if now is None else now, partitions=self.settings.partitions,
                         per_partition=self.settings.batch_max)

    async def _save(self, now: LogState, processed: Mapping[tuple[str, int], int]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        if now.cluster_id:
            pipe.hset(self._identity_key, "cluster_id", now.cluster_id)
        if now.topic_ids:
            pipe.hset(self._identity_key, mapping=now.topic_ids)
        for (t, p), off in processed.items():
            # keep the larger of ours and another worker's (a partition may have moved meanwhile)
            pipe.eval(_MAX_LUA, 1, self._offsets_key, f"{t}|{p}", off)
        await pipe.execute()

    async def check(self, log_ends: Callable[[], Mapping[tuple[str, int], int]]) -> list[Reset]:
        """Compare the record with the broker, then record what the broker says (no reset) or
        the rewind plan (reset).

        :param log_ends: returns ``(topic, partition)`` -> log end (high watermark) of the partitions
            this worker consumes, as its consumer last fetched them; called after the processed
            offsets were read (an offset processed after the read would look beyond the end). Not
            the admin ``ListOffsets`` answer: the Tansu dev broker gets it wrong (1 for a log of 398).
        :returns: the resets found.
        """
        import asyncio

        topics = sorted(set(self.settings.all_topics()))
        # what was processed is read before the log ends (see log_ends above)
        mine = dict(self.processed)
        recorded, offs = await self._recorded()
        ends = dict(log_ends())
        now = await asyncio.to_thread(self._read_broker, topics)
        now.log_ends = ends
        for k, v in mine.items():
            offs[k] = max(v, offs.get(k, -1))
        resets = find_resets(recorded, offs, now)
        if not resets:
            await self._save(now, mine)
            await self._publish_backlog(ends, offs)
            return []
        pipe = self.redis.pipeline(transaction=False)
        for r in resets:
            pipe.hset(self._rewind_key, r.topic, json.dumps({"why": r.why, "at": time.time()}))
            for (t, p) in [k for k in offs if k[0] == r.topic]:
                pipe.hdel(self._offsets_key, f"{t}|{p}")
                self.processed.pop((t, p), None)
        pipe.hincrby(C.metrics_key(self.settings.namespace), "log_resets", len(resets))
        await pipe.execute()
        # the new identity is the one to compare with from now on
        await self._save(LogState(now.cluster_id, now.topic_ids), {})
        return resets


BACKLOG_TOPICS = ("topic_raw", "topic_scored")


def backlog_report(lag: int, at: float, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """One partition's backlog report: ``lag`` messages left at ``at``, and ``zero_since``: since when
    every report said 0 (kept across reports; ``None`` while there is a backlog). The window store counts
    a partition idle only after it stayed empty for a while (``alerts/store.py``, ``IDLE_AFTER_S``).

    :param lag: unprocessed messages now.
    :param at: the time of this report (unix seconds).
    :param previous: the partition's previous report (any worker's), if any.
    """
    if lag > 0:
        return {"lag": lag, "at": at, "zero_since": None}
    since = previous.get("zero_since") if previous and previous.get("lag", 1) <= 0 else None
    return {"lag": 0, "at": at, "zero_since": at if since is None else float(since)}
"""The topics whose unprocessed messages hold back wall-clock closing (their articles are still to be counted)."""


def backlog_of(ends: Mapping[tuple[str, int], int], processed: Mapping[tuple[str, int], int],
               topics: set[str]) -> dict[tuple[str, int], int]:
    """Unprocessed messages per partition: log end minus (highest processed offset + 1).

    :param ends: ``(topic, partition)`` -> log end, of the partitions a worker consumes.
    :param processed: ``(topic, partition)`` -> highest offset processed (by any worker).
    :param topics: the topics that count.
    """
    return {(t, p): max(0, end - processed.get((t, p), -1) - 1) for (t, p), end in ends.items() if t in topics}


def caught_up(entries: Mapping[str, Mapping[str, float]], *, now: float, partitions: int, per_partition: int,
              fresh_s: float = 30.0) -> bool:
    """Whether the consumer group has caught up: every partition of the backlog topics was reported
    recently by the worker that consumes it, with at most ``per_partition`` unprocessed messages.

    :param entries: ``"topic|partition"`` -> ``{"lag": n, "at": unix time}`` (every worker's reports).
    :param now: the current time.
    :param partitions: partitions per topic.
    :param per_partition: most unprocessed messages a partition may hold (a batch in flight).
    :param fresh_s: older reports do not count (their worker may be gone).
    """
    fresh = {k: v for k, v in entries.items() if now - float(v.get("at", 0)) <= fresh_s}
    if len(fresh) < len(BACKLOG_TOPICS) * partitions:
        return False  # a partition nobody reported on yet (a worker starting, a rebalance)
    return all(float(v.get("lag", 0)) <= per_partition for v in fresh.values())


_MAX_LUA = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""


def group_members(admin: Any, group: str) -> int:
    """Members of consumer group ``group`` now (0 when it is empty or unknown).

    :param admin: a kafka-python ``KafkaAdminClient``.
    :param group: the group id.
    """
    desc = admin.describe_groups([group])
    info = desc.get(group, {}) if isinstance(desc, dict) else {}
    return len(info.get("members") or [])


def topic_partitions(admin: Any, topics: list[str]) -> list[Any]:
    """Every partition (``TopicPartition``) of the existing ``topics``, in topic and partition order."""
    from kafka import TopicPartition

    described = admin.describe_topics(topics) if topics else []
    return [TopicPartition(d["name"], x["partition_index"]) for d in described if not d.get("error_code")
            for x in sorted(d.get("partitions", []), key=lambda x: x["partition_index"])]


def set_group_offsets(admin: Any, group: str, offsets: Mapping[Any, int]) -> None:
    """Commit ``offsets`` (``TopicPartition`` -> next offset to read) for ``group``, which must be idle.

    :raises RuntimeError: naming each partition the broker refused.
    """
    from kafka.structs import OffsetAndMetadata

    if not offsets:
        return
    errors = admin.alter_group_offsets(group, {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
    bad = {f"{tp.topic}[{tp.partition}]": e.__name__ for tp, e in errors.items()
           if getattr(e, "__name__", "NoError") != "NoError"}
    if bad:
        raise RuntimeError(f"could not set the offsets of group {group}: {bad}")


def apply_rewind(settings: Settings, redis_url: str, *, timeout_s: float = 120.0) -> list[str]:
    """Carry out a recorded rewind plan before the worker consumes (synchronous; ``finpulse worker``).

    Moves the group's committed offsets of every planned topic to the start of its log, once the
    group has no running member (every worker stops itself when it finds the reset), then clears the
    plan.

    :param settings: broker, namespace, consumer group.
    :param redis_url: the Redis of the namespace.
    :param timeout_s: how long to wait for the group to empty.
    :returns: the topics rewound (empty: there was no plan).
    :raises RuntimeError: when the group stays busy or the broker refuses (the worker must not
        start: it would skip the messages).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import OffsetSpec

    r = sync_redis(redis_url)
    key = C.ns_key(settings.namespace, C.REWIND_KEY)
    try:
        plan = {as_str(k): json.loads(as_str(v)) for k, v in r.hgetall(key).items()}
        if not plan:
            return []
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="finpulse-rewind")
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if not group_members(admin, settings.group_id):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"group {settings.group_id} still has running workers after {timeout_s:.0f} s; "
                                       f"cannot rewind {sorted(plan)}")
                time.sleep(1.0)
            tps = topic_partitions(admin, sorted(plan))
            if tps:
                starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
                set_group_offsets(admin, settings.group_id, {tp: starts[tp].offset for tp in tps})
        finally:
            admin.close()
        r.hdel(key, *plan)
        for t, p in plan.items():
            log.warning("rewound %s to the start of its log (%s)", t, p.get("why"))
        return sorted(plan)
    finally:
        r.close()
