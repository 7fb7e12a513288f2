"""Shared fixtures: a real Kafka-compatible broker (Tansu) and a real redis-server.

Set ``FINPULSE_KAFKA_BOOTSTRAP`` / ``FINPULSE_REDIS_URL`` to run against servers of your own.
"""

from __future__ import annotations

import os
import uuid

import pytest
import pytest_asyncio  # noqa: F401  (only to fail early with a clear message if missing)

from finpulse.stack import EmbeddedStack


@pytest.fixture(scope="session")
def stack():
    """One broker and one Redis for the whole test session."""
    with EmbeddedStack(kafka_bootstrap=os.environ.get("FINPULSE_KAFKA_BOOTSTRAP", ""),
                       redis_url=os.environ.get("FINPULSE_REDIS_URL", "")) as s:
        yield s


@pytest.fixture(scope="session")
def redis_url(stack) -> str:
    return stack.redis_url


@pytest.fixture(scope="session")
def kafka_bootstrap(stack) -> str:
    return stack.kafka_bootstrap


@pytest_asyncio.fixture
async def redis_client(redis_url):
    """A ``redis.asyncio.Redis`` on a flushed database."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def namespace() -> str:
    """A fresh namespace so tests never see each other's topics or keys."""
    return f"t-{uuid.uuid4().hex[:10]}"
