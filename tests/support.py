"""Helpers for integration tests: real worker processes, producing and consuming with kafka-python."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


class Worker:
    """A ``finpulse worker`` subprocess with its own log file."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "finpulse.cli", "--log-level", "info", "worker"],
                                     cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no final commit (a crash)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        """SIGTERM and wait (a graceful shutdown)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def worker_env(stack, namespace: str, **extra: str) -> dict[str, str]:
    env = {"FINPULSE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "FINPULSE_REDIS_URL": stack.redis_url,
           "FINPULSE_NAMESPACE": namespace, "FINPULSE_BATCH_WITHIN": "0.05", "FINPULSE_WORKER_OPS_PORT": "0"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes | None] | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i, v in enumerate(values):
        producer.send(topic, value=v, key=keys[i] if keys else None)
    producer.flush()
    producer.close()


def _json_or_none(value: bytes):
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


def consume(bootstrap: str, topic: str, *, min_count: int, timeout: float, skip_invalid: bool = False) -> list[dict]:
    """Read ``topic`` from the beginning until ``min_count`` messages arrived (JSON-decoded; with
    ``skip_invalid``, values that are not JSON objects, e.g. injected poison, are left out)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=500)
    parts = consumer.partitions_for_topic(topic) or set()
    deadline = time.monotonic() + timeout
    while not parts and time.monotonic() < deadline:
        time.sleep(0.2)
        parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[dict] = []
    while time.monotonic() < deadline and len(out) < min_count:
        for records in consumer.poll(timeout_ms=500).values():
            if skip_invalid:
                out.extend(v for v in map(_json_or_none, (r.value for r in records)) if isinstance(v, dict))
            else:
                out.extend(json.loads(r.value) for r in records)
    consumer.close()
    return out


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Create topics with the product's own :func:`finpulse.ingest.producer.ensure_topics`."""
    from finpulse.core.settings import Settings
    from finpulse.ingest.producer import ensure_topics

    ensure_topics(Settings(kafka_bootstrap=bootstrap, partitions=partitions), names)
