"""The pinned Kafka clients negotiate with Apache Kafka 4, and the fetch/format helpers behave.

Kafka 4 removed the oldest protocol versions (KIP-896); kafka-python (tests, producers, admin) and
aiokafka (Faust's client) must pick versions the broker still serves. Each client produces, joins a
consumer group, consumes and commits against a real Kafka 4 node (the ``kafka_stack`` fixture).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from finpulse import kafka_dist
from finpulse.kafka_dist import KafkaDistError, KafkaNode, fetch_kafka, random_cluster_id

N = 20


@pytest.mark.integration
def test_kafka_python_negotiates_with_kafka_4(kafka_stack):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    bootstrap = kafka_stack.kafka_bootstrap
    topic = f"clients-kp-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    for i in range(N):
        producer.send(topic, key=str(i).encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}", auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=20000)
    got = []
    for record in consumer:
        got.append(record.value)
        if len(got) == N:
            break
    consumer.commit()
    committed = sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in (0, 1))
    consumer.close()
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(N))
    assert committed == N


@pytest.mark.integration
def test_aiokafka_negotiates_with_kafka_4(kafka_stack):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    bootstrap = kafka_stack.kafka_bootstrap
    topic = f"clients-aio-{uuid.uuid4().hex[:8]}"

    async def roundtrip() -> tuple[list[bytes], int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for i in range(N):  # the topic is auto-created with num.partitions partitions
                await producer.send_and_wait(topic, key=str(i).encode(), value=f"v{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            got: list[bytes] = []
            while len(got) < N:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                got.extend(r.value for records in batches.values() for r in records)
            await consumer.commit()
            parts = consumer.partitions_for_topic(topic) or set()
            committed = 0
            for p in parts:
                committed += await consumer.committed(TopicPartition(topic, p)) or 0
        finally:
            await consumer.stop()
        return got, committed

    got, committed = asyncio.run(roundtrip())
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(N))
    assert committed == N


def test_cluster_id_looks_like_kafkas():
    cid = random_cluster_id()
    assert len(cid) == 22 and "=" not in cid and cid != random_cluster_id()
    # 1 in 64 raw draws starts with "-", which the storage tool's parser reads as an option
    assert not any(random_cluster_id().startswith("-") for _ in range(2000))


def test_node_config_is_a_single_kraft_node(tmp_path):
    node = KafkaNode(tmp_path, 19092, 19093, partitions=3)
    props = dict(line.split("=", 1) for line in node.config_file().read_text().splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["num.partitions"] == "3"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["log.dirs"] == str(tmp_path / "logs")
    assert node.bootstrap == "127.0.0.1:19092"


def test_fetch_reports_mvn_failure_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("FINPULSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FINPULSE_MVN_BIN", "/bin/false")
    with pytest.raises(KafkaDistError, match="mvn could not fetch"):
        fetch_kafka("4.4.0")
    assert not (tmp_path / "kafka" / "4.4.0" / "libs").exists()  # nothing half-made is left behind
    assert [p.name for p in (tmp_path / "kafka" / "4.4.0").iterdir()] == [".fetch.lock"]


def test_fetch_is_idempotent_once_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("FINPULSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FINPULSE_MVN_BIN", "/bin/false")  # would fail if it were called
    libs = tmp_path / "kafka" / "9.9.9" / "libs"
    libs.mkdir(parents=True)
    (libs / ".complete").write_text("1 jars\n")
    assert fetch_kafka("9.9.9") == libs


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FINPULSE_CACHE_DIR", str(tmp_path / "c"))
    assert kafka_dist.libs_dir("4.4.0") == tmp_path / "c" / "kafka" / "4.4.0" / "libs"
    monkeypatch.delenv("FINPULSE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert kafka_dist.cache_dir() == tmp_path / "x" / "finpulse"
    assert os.fspath(kafka_dist.LOG4J_CONFIG).endswith("kafka_log4j2.xml") and Path(kafka_dist.LOG4J_CONFIG).exists()


@pytest.mark.integration
def test_stack_up_with_apache_kafka_and_down(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from finpulse.cli import main

    from .conftest import require_apache_kafka

    require_apache_kafka()
    monkeypatch.setenv("FINPULSE_STACK_STATE", str(tmp_path / "stack.json"))
    monkeypatch.delenv("FINPULSE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("FINPULSE_REDIS_URL", raising=False)
    runner = CliRunner()
    res = runner.invoke(main, ["stack", "up", "--broker", "kafka"])
    assert res.exit_code == 0, res.output
    try:
        state = __import__("json").loads((tmp_path / "stack.json").read_text())
        assert state["broker"] == "kafka" and (Path(state["log_dir"]) / "kafka-data" / "logs" / "meta.properties").exists()
        hist = tmp_path / "hist.csv"
        hist.write_text("date,headline\n2024-01-03,Oil slumps\n2024-01-02,Fed hikes\n")
        res = runner.invoke(main, ["replay", str(hist), "--namespace", "clikafka"])
        assert res.exit_code == 0, res.output
        assert "produced 2 to news.raw.clikafka" in res.stdout
    finally:
        res = runner.invoke(main, ["stack", "down"])
        assert res.exit_code == 0 and "stopped" in res.stdout
    assert not (Path(state["log_dir"]) / "kafka-data").exists()
    assert "Kafka Server started" in (Path(state["log_dir"]) / "kafka.log").read_text()
