"""Backup and restore of what lives only in Redis, tied to the Kafka offsets it corresponds to.

Everything a namespace keeps in Redis (windows and hourly roll-ups, seen sets and claims, entity
candidates, detector and alert state, the webhook queue and its logs, metrics) has keys starting
with ``finpulse:<namespace>:`` (:mod:`finpulse.core.constants`). A backup is a gzip JSON-lines file:

- line 1, the header: format, namespace, consumer group, time, key count, and the group's committed
  offsets per topic and partition (read *before* the keys);
- then one line per key: its name, remaining TTL (ms, ``-1`` for none) and Redis's own ``DUMP``
  serialisation (so every type, encoding and TTL comes back as it was, with ``RESTORE``).

Restore writes the keys into a Redis that holds none of the namespace's keys (or, with ``replace``,
deletes those first), then sets the consumer group's committed offsets back to the recorded ones, so
the workers, when started, replay everything after the backup: the pipeline counts each article once
(claims are part of the backup), so the replay ends in the state and alerts the lost Redis had.

A backup is exact when the namespace's workers are stopped (the group has no members): it refuses
otherwise unless ``live=True``, which may count a message processed during the dump twice after a
restore. A restore always needs the workers stopped (Kafka refuses to move a live group's offsets).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finpulse.core import constants as C
from finpulse.core.connections import sync_redis
from finpulse.core.settings import Settings
from finpulse.stream.logwatch import group_members, set_group_offsets, topic_partitions

from .exceptions import AppError

log = logging.getLogger(__name__)

#: The format tag of a backup's header line.
FORMAT = "finpulse-state/1"
#: Keys read or written per Redis round trip.
CHUNK = 500


class StateError(AppError, RuntimeError):
    """A backup or restore could not be done safely (live workers, a non-empty target, a gap in the log)."""


@dataclass
class StateSummary:
    """What a backup or restore did.

    :param path: the backup file.
    :param namespace: the namespace backed up or restored.
    :param keys: keys written to the file, or restored into Redis.
    :param offsets: consumer-group offsets recorded (backup) or set (restore): ``{topic: {partition: offset}}``.
    :param replay: messages the workers will read again after a restore (log end minus restored offset).
    """

    path: str
    namespace: str
    keys: int = 0
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    replay: int = 0


def _admin(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    if not settings.kafka_bootstrap:
        raise StateError("FINPULSE_KAFKA_BOOTSTRAP is empty: the backup records the group's Kafka offsets")
    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="finpulse-state")


def _committed(admin: Any, settings: Settings) -> dict[str, dict[int, int]]:
    """The consumer group's committed offsets on this namespace's topics."""
    ours = set(settings.all_topics())
    got = admin.list_group_offsets({settings.group_id: None}).get(settings.group_id, {})
    out: dict[str, dict[int, int]] = {}
    for tp, meta in got.items():
        if tp.topic in ours and meta is not None and meta.offset >= 0:
            out.setdefault(tp.topic, {})[tp.partition] = meta.offset
    return out


def _scan(client: Any, namespace: str) -> Iterator[bytes]:
    yield from client.scan_iter(match=f"{C.prefix(namespace)}:*", count=CHUNK)


def backup(settings: Settings, path: str | os.PathLike[str], *, live: bool = False) -> StateSummary:
    """Write the namespace's Redis state and the group's committed offsets to ``path``.

    :param settings: namespace, Redis URL, broker and consumer group.
    :param path: the backup file (gzip JSON lines), written atomically.
    :param live: allow a backup while workers consume (see the module docstring).
    :raises StateError: when workers are running and ``live`` is false.
    """
    admin = _admin(settings)
    try:
        members = group_members(admin, settings.group_id)
        if members and not live:
            raise StateError(f"{members} worker(s) of group {settings.group_id} are running: stop them for an "
                             "exact backup (or pass --live and accept possible double counts after a restore)")
        offsets = _committed(admin, settings)  # before the keys: the state is at least this far
    finally:
        admin.close()
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    client = sync_redis(settings.redis_url)
    keys = 0
    try:
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            header = {"format": FORMAT, "namespace": settings.namespace, "group": settings.group_id,
                      "created_at": time.time(), "live": bool(members),
                      "offsets": {t: {str(p): o for p, o in ps.items()} for t, ps in offsets.items()}}
            f.write(json.dumps(header) + "\n")
            batch: list[bytes] = []

            def flush() -> int:
                pipe = client.pipeline(transaction=False)
                for k in batch:
                    pipe.dump(k)
                    pipe.pttl(k)
                res = pipe.execute()
                n = 0
                for k, dumped, ttl in zip(batch, res[0::2], res[1::2], strict=True):
                    if dumped is None:  # expired or deleted since the scan
                        continue
                    f.write(json.dumps({"k": base64.b64encode(k).decode(), "ttl": int(ttl),
                                        "v": base64.b64encode(dumped).decode()}) + "\n")
                    n += 1
                batch.clear()
                return n

            for key in _scan(client, settings.namespace):
                batch.append(key)
                if len(batch) >= CHUNK:
                    keys += flush()
            if batch:
                keys += flush()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        client.close()
    log.info("backup of %s: %d keys, offsets %s -> %s", settings.namespace, keys, offsets, out)
    return StateSummary(str(out), settings.namespace, keys, offsets)


def read_backup(path: str | os.PathLike[str]) -> tuple[dict, Iterator[dict]]:
    """The header of a backup file and an iterator over its key records.

    :param path: a file written by :func:`backup`.
    :raises StateError: when it is not a finpulse backup.
    """
    f = gzip.open(path, "rt", encoding="utf-8")
    try:
        header = json.loads(f.readline())
    except (OSError, ValueError) as exc:
        f.close()
        raise StateError(f"{path}: not a finpulse backup ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        f.close()
        raise StateError(f"{path}: not a {FORMAT} backup")

    def records() -> Iterator[dict]:
        with f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    return header, records()


def restore(settings: Settings, path: str | os.PathLike[str], *, replace: bool = False) -> StateSummary:
    """Load a backup into Redis and rewind the consumer group to the offsets it recorded.

    :param settings: namespace (must be the backup's), Redis URL, broker and consumer group.
    :param path: a file written by :func:`backup`.
    :param replace: delete the namespace's keys already in Redis first (else refuse if there are any).
    :raises StateError: on a namespace mismatch, running workers, a non-empty target without
        ``replace``, or when the log no longer holds the messages after a recorded offset (retention
        deleted them: the replay would have a gap).
    """
    from kafka.admin import OffsetSpec

    header, records = read_backup(path)
    if header["namespace"] != settings.namespace:
        raise StateError(f"the backup is of namespace {header['namespace']!r}, not {settings.namespace!r}")
    recorded = {t: {int(p): int(o) for p, o in ps.items()} for t, ps in header["offsets"].items()}
    admin = _admin(settings)
    client = sync_redis(settings.redis_url)
    try:
        members = group_members(admin, settings.group_id)
        if members:
            raise StateError(f"{members} worker(s) of group {settings.group_id} are running: stop them first")
        # every partition of the topics the group reads: recorded offset, else the log start
        topics = sorted(set(recorded) | set(_committed(admin, settings)))
        tps = topic_partitions(admin, topics)
        earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps}) if tps else {}
        latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}) if tps else {}
        target: dict[Any, int] = {}
        gaps = []
        for tp in tps:
            want = recorded.get(tp.topic, {}).get(tp.partition)
            start = earliest[tp].offset
            if want is None:
                want = start
            elif want < start:
                gaps.append(f"{tp.topic}[{tp.partition}]: backup at {want}, log starts at {start}")
            target[tp] = want
        if gaps:
            raise StateError("the log no longer holds what came after the backup (retention): "
                             + "; ".join(gaps) + ". Restoring would silently skip those messages.")
        existing = list(_scan(client, settings.namespace))
        if existing and not replace:
            raise StateError(f"Redis already holds {len(existing)} keys of namespace {settings.namespace!r}: "
                             "restore into an empty Redis, or pass --replace to delete them first")
        for i in range(0, len(existing), CHUNK):  # single-key commands: keys of many cluster slots
            drop = client.pipeline(transaction=False)
            for k in existing[i:i + CHUNK]:
                drop.unlink(k)
            drop.execute()
        keys = 0
        pipe = client.pipeline(transaction=False)
        for rec in records:
            ttl = int(rec["ttl"])
            if ttl == -2:
                continue
            pipe.restore(base64.b64decode(rec["k"]), max(ttl, 0), base64.b64decode(rec["v"]), replace=True)
            keys += 1
            if keys % CHUNK == 0:
                pipe.execute()
        pipe.execute()
        try:
            set_group_offsets(admin, settings.group_id, target)
        except RuntimeError as exc:
            raise StateError(str(exc)) from None
        replay = sum(max(0, latest[tp].offset - o) for tp, o in target.items())
    finally:
        client.close()
        admin.close()
    offsets: dict[str, dict[int, int]] = {}
    for tp, o in target.items():
        offsets.setdefault(tp.topic, {})[tp.partition] = o
    log.info("restore of %s: %d keys, group %s rewound to %s (%d messages to replay)",
             settings.namespace, keys, settings.group_id, offsets, replay)
    return StateSummary(str(path), settings.namespace, keys, offsets, replay)
