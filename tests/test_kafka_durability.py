"""Durability on Apache Kafka 4: the broker stops (SIGTERM) and crashes (SIGKILL) under a running worker.

The node is restarted on the same log directory each time; the worker keeps running, reconnects and
resumes, and every raw headline is counted exactly once (the window store's ``counted`` metric == N).
Runs on its own Apache Kafka node whatever ``FINPULSE_TEST_BROKER`` says (it restarts the broker);
skipped where Java or Maven is missing.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from finpulse.core.constants import metrics_key
from finpulse.core.settings import Settings
from finpulse.models.data import load_split
from finpulse.stack import EmbeddedStack

from .conftest import require_apache_kafka
from .support import Worker, consume, create_topics, produce, wait_for, worker_env

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
CHUNKS = (80, 120, 100)
N = sum(CHUNKS)


@pytest.fixture
def own_kafka(stack, tmp_path):
    """A private Apache Kafka node (sharing the session's Redis) that this test may stop and restart."""
    require_apache_kafka()
    with EmbeddedStack(redis_url=stack.redis_url, broker="kafka", log_dir=str(tmp_path)) as s:
        yield s


def raw(n: int, offset: int) -> list[dict]:
    texts = [e.text for e in load_split("sentiment", "valid")][offset:offset + n]
    return [{"id": f"dur-{offset + i}", "title": t, "source": "test",
             "published_at": (START + timedelta(seconds=20 * (offset + i))).isoformat().replace("+00:00", "Z")}
            for i, t in enumerate(texts)]


def metric(redis_url: str, ns: str, name: str) -> int:
    return int(redis.Redis.from_url(redis_url).hget(metrics_key(ns), name) or 0)


def test_worker_survives_broker_stop_and_crash_without_loss_or_double_count(own_kafka, namespace, tmp_path):
    began = time.monotonic()
    s = Settings(namespace=namespace, kafka_bootstrap=own_kafka.kafka_bootstrap, redis_url=own_kafka.redis_url,
                 partitions=2)
    create_topics(s.kafka_bootstrap, s.all_topics(), s.partitions)
    msgs = raw(N, 0)
    chunks, at = [], 0
    for size in CHUNKS:
        chunks.append(msgs[at:at + size])
        at += size

    def send(batch: list[dict]) -> None:
        produce(s.kafka_bootstrap, s.topic(s.topic_raw), [json.dumps(m).encode() for m in batch],
                [m["id"].encode() for m in batch])

    def counted() -> int:
        return metric(s.redis_url, namespace, "counted")

    worker = Worker(worker_env(own_kafka, namespace, FINPULSE_PARTITIONS=2), tmp_path / "worker.log")
    try:
        send(chunks[0])
        wait_for(lambda: counted() >= CHUNKS[0], 90, what="first chunk counted")

        # a controlled shutdown (SIGTERM) while the worker idles, then a restart on the same log directory
        assert own_kafka.stop_broker() is not None
        time.sleep(2)
        own_kafka.start_broker()
        send(chunks[1])
        # a crash (SIGKILL) while the second chunk is in flight, then a restart
        wait_for(lambda: counted() > CHUNKS[0], 60, what="second chunk under way")
        own_kafka.stop_broker(kill=True)
        time.sleep(2)
        own_kafka.start_broker()
        send(chunks[2])
        wait_for(lambda: counted() >= N, 120, what="all headlines counted")
        time.sleep(3)  # let any redelivery after the crash arrive: it must not be counted again
        assert worker.proc.poll() is None, worker.log()[-3000:]
    finally:
        worker.stop()
    assert counted() == N
    assert metric(s.redis_url, namespace, "dead_lettered") == 0
    scored = consume(s.kafka_bootstrap, s.topic(s.topic_scored), min_count=N, timeout=30)
    assert {m["id"] for m in scored} == {m["id"] for m in msgs}  # nothing lost (redelivered copies allowed)
    assert time.monotonic() - began < 180
