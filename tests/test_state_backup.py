"""Backup and restore of the Redis state (``finpulse state backup|restore``) on Apache Kafka.

A worker counts calm news; the workers stop and a backup is taken; then more news arrives with a
burst that fires an alert. Redis is then lost: a fresh redis-server gets the backup, the consumer
group is rewound to the backup's offsets, and a new worker replays from there. It must end with the
same counts, the same windows and the same alerts as the Redis that was lost, counting nothing twice.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import redis as redis_sync

from finpulse.core import constants as C
from finpulse.core.connections import sync_redis
from finpulse.core.settings import Settings
from finpulse.stack import EmbeddedStack
from finpulse.state import StateError, backup, read_backup, restore

from .support import Worker, consume, create_topics, wait_for, worker_env
from .test_alerts_e2e import OIL, RULE, calm_traffic, oil_burst, oil_calm, produce_scored, rules_toml

pytestmark = pytest.mark.integration

PHASE1 = calm_traffic(range(0, 10))
PHASE2 = calm_traffic(range(10, 20)) + oil_burst(range(10, 16)) + oil_calm(range(16, 20))


def counted(url: str, ns: str) -> int:
    return int(sync_redis(url).hget(C.metrics_key(ns), "counted") or 0)


def windows(url: str, ns: str) -> dict:
    """Every bucket / roll-up / seen-set of the namespace, by key: what the counts are."""
    r = sync_redis(url)
    out = {}
    try:
        for k in r.scan_iter(match=f"{C.prefix(ns)}:{{*", count=500):
            if C.HISTORY_TAG.encode() in k:
                continue  # the alert history: a replayed record is the same alert with a new created_at
            t = r.type(k)
            if t == b"hash":
                out[k] = r.hgetall(k)
            elif t == b"set":
                out[k] = r.smembers(k)
            elif t == b"zset":
                out[k] = r.zrange(k, 0, -1, withscores=True)
    finally:
        r.close()
    return out


def alerts_of(s: Settings) -> list[tuple]:
    got = consume(s.kafka_bootstrap, s.topic(s.topic_alerts), min_count=10**6, timeout=4)
    return sorted((a["alert_id"], a["status"], a["rule"], a["scope"], a["window_end"]) for a in got)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "finpulse.cli", "state", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize("target", ["redis", "cluster"])
def test_restore_into_a_fresh_redis_replays_to_the_same_alerts(kafka_stack, namespace, tmp_path, request, target):
    """``target``: the state is restored into a fresh redis-server, or into a Redis Cluster (the way
    from one Redis to a cluster: back up, point the workers at the cluster, restore)."""
    s = Settings(namespace=namespace, kafka_bootstrap=kafka_stack.kafka_bootstrap, redis_url=kafka_stack.redis_url,
                 partitions=1)
    create_topics(s.kafka_bootstrap, s.all_topics(), 1)
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_toml([]))
    env = worker_env(kafka_stack, namespace, FINPULSE_PARTITIONS=1, FINPULSE_RULES_FILE=str(rules))

    worker = Worker(env, tmp_path / "w1.log")
    try:
        produce_scored(s, PHASE1)
        wait_for(lambda: counted(s.redis_url, namespace) >= len(PHASE1), 120, what="phase 1 counted")
    finally:
        worker.stop()
    state_file = tmp_path / "state.jsonl.gz"
    done = cli(env, "backup", str(state_file))
    assert done.returncode == 0, done.stderr
    header, records = read_backup(state_file)
    n_keys = sum(1 for _ in records)
    assert header["namespace"] == namespace and n_keys > 0
    assert header["offsets"][s.topic(s.topic_scored)] == {"0": len(PHASE1)}  # the group's committed offset

    worker = Worker(env, tmp_path / "w2.log")
    try:
        produce_scored(s, PHASE2)
        wait_for(lambda: counted(s.redis_url, namespace) >= len(PHASE1) + len(PHASE2), 120, what="phase 2 counted")
        wait_for(lambda: any(a[1] == "fired" for a in alerts_of(s)), 60, what="the burst's alert")
        # a backup refuses to run while a worker consumes (it would not be exact)
        with pytest.raises(StateError, match="running"):
            backup(s, tmp_path / "refused.gz")
    finally:
        worker.stop()
    before = {"counted": counted(s.redis_url, namespace), "windows": windows(s.redis_url, namespace)}
    alerts_before = alerts_of(s)
    assert [a[1:4] for a in alerts_before] == [("fired", RULE, f"topic:{OIL}")]

    # Redis is lost: a new, empty redis-server; the same broker (and its alerts topic) stays
    with contextlib.ExitStack() as on_exit:
        if target == "cluster":
            fresh_url = request.getfixturevalue("redis_cluster").url  # the session's: the namespace is new there
        else:
            fresh_url = on_exit.enter_context(EmbeddedStack(kafka_bootstrap=kafka_stack.kafka_bootstrap,
                                                            log_dir=str(tmp_path / "redis2"))).redis_url
        env2 = {**env, "FINPULSE_REDIS_URL": fresh_url}
        done = cli(env2, "restore", str(state_file))
        assert done.returncode == 0, done.stderr
        # news.scored and the alerts topic since the backup
        assert f"{len(PHASE2) + len(alerts_before)} messages to replay" in done.stdout, done.stdout
        assert counted(fresh_url, namespace) == len(PHASE1)
        # restoring twice without --replace is refused: it would mix two states
        again = cli(env2, "restore", str(state_file))
        assert again.returncode != 0 and "--replace" in again.stderr

        worker = Worker(env2, tmp_path / "w3.log")
        try:
            wait_for(lambda: counted(fresh_url, namespace) >= before["counted"], 120, what="replay counted")
            wait_for(lambda: len(alerts_of(s)) >= 2, 60, what="the alert fired again after the replay")
        finally:
            worker.stop()
        assert counted(fresh_url, namespace) == before["counted"]  # nothing counted twice
        assert windows(fresh_url, namespace) == before["windows"]
        replayed = alerts_of(s)
        # the replay re-emits the same alert (same id, window and status) and nothing else
        assert sorted(set(replayed)) == alerts_before and len(replayed) == 2 * len(alerts_before)
    assert "Traceback" not in worker.log()


def test_restore_refuses_a_backup_of_another_namespace(kafka_stack, namespace, tmp_path):
    s = Settings(namespace=namespace, kafka_bootstrap=kafka_stack.kafka_bootstrap, redis_url=kafka_stack.redis_url)
    create_topics(s.kafka_bootstrap, s.all_topics(), 1)
    redis_sync.Redis.from_url(s.redis_url).set(C.ns_key(namespace, "probe"), "1", ex=60)
    path = tmp_path / "b.gz"
    res = backup(s, path)
    assert res.keys == 1
    other = s.model_copy(update={"namespace": namespace + "-x"})
    with pytest.raises(StateError, match="namespace"):
        restore(other, path)
    path.write_bytes(b"not a backup")
    with pytest.raises(StateError, match="not a finpulse backup"):
        restore(s, path)
