"""The one Faust app of finpulse.

``finpulse worker`` (or ``faust -A stream.app worker -l info``) runs it. Settings come from
:class:`finpulse.settings.Settings` (``FINPULSE_*`` environment variables / ``FINPULSE_CONFIG``);
the agents live in :mod:`stream.agents` and are registered on import below.
"""

from __future__ import annotations

import faust

from finpulse.settings import Settings

from .services import resolve_bootstrap

settings = Settings()


def _use_fetch_max_wait(ms: int) -> None:
    """Faust passes a fixed ``fetch_max_wait_ms=1500`` to aiokafka; use the setting instead.

    Scoped to this (worker) process: only the consumer class that Faust's driver instantiates is
    replaced, by a subclass that overrides that one argument.
    """
    import aiokafka
    import faust.transport.drivers.aiokafka as driver

    base = aiokafka.AIOKafkaConsumer

    class Consumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    import types

    patched = types.ModuleType(aiokafka.__name__)
    patched.__dict__.update(vars(aiokafka))
    patched.AIOKafkaConsumer = Consumer
    driver.aiokafka = patched


_use_fetch_max_wait(settings.fetch_max_wait_ms)

app = faust.App(
    settings.group_id,
    broker=[f"kafka://{hp.strip()}" for hp in resolve_bootstrap(settings).split(",")],
    value_serializer="raw",
    key_serializer="raw",
    web_enabled=False,               # the worker serves nothing it does not need
    autodiscover=False,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    broker_commit_every=settings.commit_every,
    broker_commit_interval=settings.commit_interval_s,
    stream_wait_empty=False,
    broker_rebalance_timeout=settings.rebalance_timeout_s,
    broker_session_timeout=settings.session_timeout_s,
    store="memory://",
)

raw_topic = app.topic(settings.topic(settings.topic_raw), partitions=settings.partitions)
scored_topic = app.topic(settings.topic(settings.topic_scored), partitions=settings.partitions)
dlq_topic = app.topic(settings.topic(settings.topic_dlq), partitions=settings.partitions)
alerts_topic = app.topic(settings.topic(settings.topic_alerts), partitions=settings.partitions)
alerts_dlq_topic = app.topic(settings.topic(settings.topic_alerts_dlq), partitions=settings.partitions)

from . import agents  # noqa: E402,F401  (registers the agents on ``app``)
