"""Scale-out: several workers in one consumer group, 8 partitions, Apache Kafka, a real Redis Cluster.

The stream is produced **pre-scored** to ``news.scored`` (as in ``test_alerts_e2e``), so the expected
counts and alerts are exact: calm news in two topics all along, and two bursts of negative news
(oil, then central banks) that must each fire one warning and resolve once, delivered to a real
webhook receiver. ``test_three_workers_on_a_redis_cluster`` runs it without faults (no webhook-id may
be POSTed twice); ``test_scale_out_under_faults`` (``-m faults``) replays it in chunks while a seeded
schedule kills a random worker with -9 five times, restarts the broker once and crashes one Redis master
once (its replica takes over). Both report their figures like ``test_faults`` (``$FINPULSE_FAULT_REPORT``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from datetime import timedelta

import pytest

from finpulse.core import constants as C
from finpulse.core.connections import sync_redis
from finpulse.core.settings import Settings
from finpulse.redis_cluster import LocalRedisCluster
from finpulse.stack import EmbeddedStack

from .conftest import require_apache_kafka
from .support import Worker, consume, create_topics, produce, wait_for, worker_env
from .test_alerts_e2e import OIL, RULE, START, calm_traffic, iso, new_secret, oil_burst, rules_toml, scored
from .test_faults import report
from .test_pipeline_e2e import expected_counts, scope_counts

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("FINPULSE_FAULT_SEED", "20261129"))
PARTITIONS = 8
FED = "Fed | Central Banks"
MINUTES = 240          # 09:00-13:00 of event time
OIL_BURST = range(60, 66)
FED_BURST = range(150, 156)


def fed_burst(minutes: range) -> list[dict]:
    return [scored(f"fed-neg-{m}-{k}", m, 20 + 20 * k, FED, "negative") for m in minutes for k in range(2)]


def the_stream(filler_per_minute: int = 0) -> list[dict]:
    """Calm news all along; each burst topic is quiet before its burst and calm after it; optional
    neutral filler (volume, so that faults land while the workers are busy)."""
    msgs = calm_traffic(range(MINUTES))
    msgs += oil_burst(OIL_BURST) + [scored(f"oil-calm-{m}", m, 40, OIL, "neutral") for m in range(66, MINUTES)]
    msgs += fed_burst(FED_BURST) + [scored(f"fed-calm-{m}", m, 50, FED, "neutral") for m in range(156, MINUTES)]
    msgs += [scored(f"fill-{m}-{k}", m, (7 * k) % 60, "Macro", "neutral")
             for m in range(MINUTES) for k in range(filler_per_minute)]
    return sorted(msgs, key=lambda m: (m["published_at"], m["id"]))


def at(minute: int) -> str:
    return iso(START + timedelta(minutes=minute))


#: the records the stream must produce, each once (first window with 8 negatives; calm since the
#: burst's end + the 10 minute resolve hold)
EXPECTED = {(f"topic:{OIL}", "fired", at(64)), (f"topic:{OIL}", "resolved", at(88)),
            (f"topic:{FED}", "fired", at(154)), (f"topic:{FED}", "resolved", at(178))}


class Fleet:
    """Worker processes of one consumer group; a killed worker is replaced by a new process."""

    def __init__(self, env: dict[str, str], tmp_path, n: int):
        self.env, self.tmp_path, self.started = env, tmp_path, 0
        self.workers = [self._start() for _ in range(n)]
        self.everyone = list(self.workers)
        self.killed: list[Worker] = []

    def _start(self) -> Worker:
        self.started += 1
        return Worker(self.env, self.tmp_path / f"worker-{self.started}.log")

    def kill_one(self, rng: random.Random) -> int:
        i = rng.randrange(len(self.workers))
        self.workers[i].kill()
        self.killed.append(self.workers[i])
        self.workers[i] = self._start()
        self.everyone.append(self.workers[i])
        return i

    def exited_on_their_own(self) -> list[str]:
        """Workers that stopped without being killed (e.g. started while the broker was down), with
        their exit status: the orchestrator restarts those (compose: ``restart: unless-stopped``)."""
        return [f"{w.log_path.name}: exit {w.proc.returncode}" for w in self.everyone
                if w not in self.killed and w.proc.poll() is not None]

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("worker-*.log")))


def setup_namespace(bootstrap: str, redis_url: str, namespace: str, tmp_path, receiver) -> tuple[Settings, dict]:
    s = Settings(namespace=namespace, kafka_bootstrap=bootstrap, redis_url=redis_url, partitions=PARTITIONS)
    create_topics(bootstrap, s.all_topics(), PARTITIONS)
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_toml([{"name": "desk", "url": receiver.url, "secret_env": "FP_TEST_SECRET_DESK"}]))
    env = {"FINPULSE_REDIS_URL": redis_url, "FINPULSE_PARTITIONS": str(PARTITIONS),
           "FINPULSE_RULES_FILE": str(rules), "FP_TEST_SECRET_DESK": receiver.secret}
    return s, env


def produce_scored(s: Settings, msgs: list[dict]) -> None:
    produce(s.kafka_bootstrap, s.topic(s.topic_scored), [json.dumps(m).encode() for m in msgs],
            [m["id"].encode() for m in msgs])


def counted(s: Settings) -> int:
    try:
        return int(sync_redis(s.redis_url, socket_timeout=2).hget(C.metrics_key(s.namespace), "counted") or 0)
    except Exception:  # noqa: BLE001 - a failover in progress
        return -1


def all_counted(s: Settings, n: int) -> bool:
    """Whether the ``all`` scope holds ``n`` articles: the windows themselves, not the ``counted`` metric
    (a batch retried after a partial Redis failure reports articles the first try had counted as
    duplicates, so the metric can fall short while the windows are exact; docs/operations.md)."""
    try:
        return asyncio.run(scope_counts(s.redis_url, s.namespace, ["all"]))["all"][0] >= n
    except Exception:  # noqa: BLE001 - a failover in progress
        return False


def check_outcome(s: Settings, msgs: list[dict], receiver, faults: list[tuple[float, float, str]]) -> dict:
    """Exact counts per scope, each expected alert once on the alerts topic and delivered, and no
    webhook-id POSTed twice unless a fault overlapped its deliveries. Returns the figures."""
    exp = expected_counts(msgs)
    got = asyncio.run(scope_counts(s.redis_url, s.namespace, sorted(exp)))
    assert got == exp, {sc: (got[sc], exp[sc]) for sc in exp if got[sc] != exp[sc]}

    records = consume(s.kafka_bootstrap, s.topic(s.topic_alerts), min_count=10**9, timeout=5)
    per_event = Counter(r["event_id"] for r in records)
    distinct = {r["event_id"]: r for r in records}
    assert {(r["scope"], r["status"], r["window_end"]) for r in distinct.values()} == EXPECTED
    assert all(r["rule"] == RULE and r["severity"] == "warning" for r in distinct.values())

    wait_for(lambda: {r["wid"] for r in receiver.delivered()} >= set(distinct), 120, what="every alert delivered")
    time.sleep(2.0)  # a late duplicate would show up here
    posts = receiver.got()
    assert all(p["verified"] for p in posts)
    by_wid: dict[str, list[float]] = {}
    for p in posts:
        by_wid.setdefault(p["wid"], []).append(p["t"])
    dup_with_fault = 0
    for wid, times in by_wid.items():
        if len(times) > 1:
            first, last = min(times), max(times)
            overlapping = [what for a, b, what in faults if a - 30 <= last and b + 15 >= first]
            assert overlapping, f"{wid} POSTed {len(times)} times with no fault in its window"
            dup_with_fault += 1
    # per incident, the receiver saw the firing before the resolution
    first_seen = {p["wid"]: p["t"] for p in reversed(posts)}
    for aid in {r["alert_id"] for r in distinct.values()}:
        fired = [t for w, t in first_seen.items() if w.startswith(aid) and ".fired." in w]
        resolved = [t for w, t in first_seen.items() if w.startswith(aid) and ".resolved." in w]
        assert fired and resolved and min(fired) < min(resolved)
    return {"sent": len(msgs), "counted": counted(s), "alert_records": len(records),
            "alert_records_repeated": sum(n - 1 for n in per_event.values()), "webhook_posts": len(posts),
            "webhook_ids_posted_twice_in_a_fault_window": dup_with_fault}


def test_three_workers_on_a_redis_cluster(stack, redis_cluster, namespace, tmp_path):
    """No faults: 3 workers share 8 partitions on a Redis Cluster; counts are exact, each alert fires
    once and each webhook-id is POSTed exactly once."""
    from .test_alerts_e2e import Receiver

    receiver = Receiver(new_secret()).start()
    s, env = setup_namespace(stack.kafka_bootstrap, redis_cluster.url, namespace, tmp_path, receiver)
    fleet = Fleet(worker_env(stack, namespace, **env), tmp_path, 3)
    msgs = the_stream(filler_per_minute=2)
    try:
        produce_scored(s, msgs)
        wait_for(lambda: all_counted(s, len(msgs)), 180, what="every message counted")
        out = check_outcome(s, msgs, receiver, faults=[])
    finally:
        fleet.stop()
        receiver.stop()
    assert out["webhook_posts"] == 4 and out["alert_records_repeated"] == 0
    assert "Traceback" not in fleet.logs()
    report({"experiment": "scale-out, no faults (3 workers, 8 partitions, Redis Cluster)", **out})


@pytest.fixture
def scale_stack(tmp_path):
    """A private Apache Kafka node and a private Redis Cluster (3 masters, a replica each)."""
    require_apache_kafka()
    with LocalRedisCluster(masters=3, replicas=1, log_dir=str(tmp_path / "redis-cluster")) as cluster, \
            EmbeddedStack(broker="kafka", redis_url=cluster.url, log_dir=str(tmp_path / "stack")) as stack:
        yield stack, cluster


@pytest.mark.faults
def test_scale_out_under_faults(scale_stack, namespace, tmp_path):
    """3 workers, 8 partitions, Apache Kafka, Redis Cluster; the stream is produced in 8 chunks and while
    the workers are inside each of the first 7, one fault of a seeded schedule hits: 5 x kill -9 of a
    random worker (replaced at once), 1 broker restart, 1 crash of a Redis master (its replica is
    promoted; it rejoins as a replica). Each fault's report says how many messages were not yet counted."""
    from .test_alerts_e2e import Receiver

    stack, cluster = scale_stack
    rng = random.Random(SEED)
    receiver = Receiver(new_secret()).start()
    s, env = setup_namespace(stack.kafka_bootstrap, cluster.url, namespace, tmp_path, receiver)
    fleet = Fleet(worker_env(stack, namespace, **env), tmp_path, 3)
    msgs = the_stream(filler_per_minute=20)
    schedule = ["kill"] * 5 + ["broker", "redis"]
    rng.shuffle(schedule)
    chunks = [[m for m in msgs if m["published_at"] < at(30 * (i + 1)) and m["published_at"] >= at(30 * i)]
              for i in range(8)]
    assert sum(map(len, chunks)) == len(msgs)
    faults: list[tuple[float, float, str]] = []
    done = 0
    try:
        for i, chunk in enumerate(chunks):
            produce_scored(s, chunk)
            done += len(chunk)
            if i >= len(schedule):
                continue
            time.sleep(rng.uniform(0.2, 1.5))  # strike while the workers are inside the chunk
            kind, t0, behind = schedule[i], time.monotonic(), done - counted(s)
            if kind == "kill":
                what = f"kill -9 worker {fleet.kill_one(rng)}"
            elif kind == "broker":
                stack.stop_broker()
                stack.start_broker()
                what = "broker restart"
            else:
                what = f"redis master crash: {cluster.fail_over()}"
            faults.append((t0, time.monotonic(), f"{what}, {behind} message(s) not yet counted"))
        wait_for(lambda: all_counted(s, len(msgs)), 300, what="every message counted")
        out = check_outcome(s, msgs, receiver, faults)
        out["workers_that_exited_on_their_own"] = fleet.exited_on_their_own()
    finally:
        fleet.stop()
        receiver.stop()
    report({"experiment": "scale-out under faults (3 workers, 8 partitions, Redis Cluster)", **out,
            "seed": SEED, "faults": [f"{what} ({b - a:.1f}s)" for a, b, what in faults],
            "workers_started": fleet.started})
