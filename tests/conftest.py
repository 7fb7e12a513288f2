"""Shared fixtures: a real Kafka broker and a real redis-server.

The broker is Apache Kafka 4 (a KRaft node, fetched from Maven Central on first use; see
``docs/pipeline.md``), what production runs. ``FINPULSE_TEST_BROKER=tansu`` asks for the in-memory Tansu
broker instead; where Java or Maven is missing the session falls back to Tansu with a warning, except
in CI (``CI`` set), where that is an error. Set ``FINPULSE_KAFKA_BOOTSTRAP`` / ``FINPULSE_REDIS_URL``
to run against servers of your own.
"""

from __future__ import annotations

import os
import uuid
import warnings

import pytest
import pytest_asyncio  # noqa: F401  (only to fail early with a clear message if missing)

from finpulse.stack import BROKERS, EmbeddedStack


def session_broker() -> str:
    """The broker of the test session: ``FINPULSE_TEST_BROKER`` (``kafka`` or ``tansu``), else Apache Kafka
    where it can run (Java 17+ and mvn, or cached jars), else Tansu (an error in CI)."""
    from finpulse.kafka_dist import kafka_available

    broker = os.environ.get("FINPULSE_TEST_BROKER", "").strip().lower()
    if broker and broker not in BROKERS:
        raise pytest.UsageError(f"FINPULSE_TEST_BROKER={broker!r}: expected one of {', '.join(BROKERS)}")
    if broker:
        return broker
    if kafka_available():
        return "kafka"
    if os.environ.get("CI"):
        raise pytest.UsageError("CI runs the integration suite on Apache Kafka, which cannot run here "
                                "(needs Java 17+ and mvn); set FINPULSE_TEST_BROKER=tansu to run without it")
    warnings.warn("Apache Kafka cannot run here (needs Java 17+ and mvn): integration tests use Tansu", stacklevel=1)
    return "tansu"




def require_apache_kafka() -> None:
    """Skip the test when Apache Kafka cannot be run here (no Java, or no cached jars and no mvn)."""
    from finpulse.kafka_dist import kafka_available

    if not kafka_available():
        pytest.skip("Apache Kafka needs Java 17+ and mvn (or jars already cached); see docs/pipeline.md")


@pytest.fixture(scope="session")
def stack():
    """One broker and one Redis for the whole test session."""
    broker = session_broker()
    if broker == "kafka" and not os.environ.get("FINPULSE_KAFKA_BOOTSTRAP"):
        require_apache_kafka()
    with EmbeddedStack(kafka_bootstrap=os.environ.get("FINPULSE_KAFKA_BOOTSTRAP", ""),
                       redis_url=os.environ.get("FINPULSE_REDIS_URL", ""), broker=broker) as s:
        yield s


@pytest.fixture(scope="session")
def kafka_stack(stack):
    """A stack whose broker is Apache Kafka: the session's when it is, else one more (sharing its Redis)."""
    if stack.broker == "kafka":
        yield stack
        return
    require_apache_kafka()
    with EmbeddedStack(redis_url=stack.redis_url, broker="kafka") as s:
        yield s


@pytest.fixture(scope="session")
def redis_url(stack) -> str:
    return stack.redis_url


@pytest.fixture(scope="session")
def kafka_bootstrap(stack) -> str:
    return stack.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real Redis Cluster on loopback for the session: 3 masters, one replica each (redis-server 7)."""
    from finpulse.redis_cluster import LocalRedisCluster
    from finpulse.stack import redis_server_binary, redis_server_version

    if redis_server_version(redis_server_binary()) < (7,):
        pytest.skip("Redis Cluster tests need redis-server 7 (apt-get install redis-server)")
    with LocalRedisCluster(masters=3, replicas=1, log_dir=str(tmp_path_factory.mktemp("redis-cluster"))) as c:
        yield c


@pytest_asyncio.fixture(params=["redis", "cluster"])
async def redis_client(request, redis_url):
    """A ``redis.asyncio`` client on a flushed database: one Redis, then the session's Redis Cluster
    (every test that takes it runs on both, so every script and transaction is proven on a cluster)."""
    from finpulse.core.connections import async_redis

    url = redis_url if request.param == "redis" else request.getfixturevalue("redis_cluster").url
    client = async_redis(url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def namespace() -> str:
    """A fresh namespace so tests never see each other's topics or keys."""
    return f"t-{uuid.uuid4().hex[:10]}"
