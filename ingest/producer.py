"""A small kafka-python producer of ``news.raw`` JSON messages (crawler, replay, demo).

Messages are validated (``stream.messages.validate``), size-checked against
``Settings.max_payload_bytes``, serialised as compact UTF-8 JSON and keyed by their ``id`` (so every
copy of one story lands on one partition). The producer waits for all in-sync replicas
(``acks="all"``), retries, and keeps one request in flight per connection so retries never reorder
messages: replay's event-time order holds within each partition.

The Kafka record timestamp is the produce time, not the event time: a topic's time-based retention
would otherwise delete replayed history at once. Event time is ``published_at`` in the value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from finpulse.core.settings import Settings

from .exceptions import IngestError

log = logging.getLogger(__name__)


class ProduceError(IngestError, RuntimeError):
    """Some messages could not be delivered.

    :param message: what went wrong.
    :param delivered: how many messages of the batch were acknowledged before the failure.
    """

    def __init__(self, message: str, delivered: int = 0):
        super().__init__(message)
        self.delivered = delivered


def encode_message(message: dict, *, max_bytes: int | None = None, validate: bool = True) -> bytes:
    """Validate and serialise one ``news.raw`` message.

    :param message: the message dict.
    :param max_bytes: refuse payloads larger than this (``None``: no limit).
    :param validate: check it against ``core/schemas/news.raw.json`` first.
    :raises stream.exceptions.BadMessage: ``schema`` when invalid, ``oversized`` when too large.
    """
    from finpulse.core.errors import BadMessage
    from finpulse.core.messages import validate as validate_schema

    if validate:
        validate_schema("news.raw", message)
    value = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if max_bytes is not None and len(value) > max_bytes:
        raise BadMessage("oversized", f"message {message.get('id')!r} is {len(value)} bytes, limit {max_bytes}")
    return value


def ensure_topics(settings: Settings, topics: Sequence[str] | None = None, *, timeout_s: float = 30.0,
                  client_id: str = "finpulse-admin") -> list[str]:
    """Create the topics that do not exist yet, with ``settings.partitions`` partitions.

    :param settings: broker address, partitions and replication factor.
    :param topics: full (namespaced) topic names; default: this namespace's ``news.raw``.
    :param timeout_s: admin request timeout.
    :param client_id: Kafka client id of the admin connection.
    :returns: the topics that were created (an existing topic is left as it is, even when its
        partition count differs).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    if not settings.kafka_bootstrap:
        raise ValueError("settings.kafka_bootstrap is empty: start the stack or set FINPULSE_KAFKA_BOOTSTRAP")
    wanted = list(topics) if topics is not None else [settings.topic(settings.topic_raw)]
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id=client_id,
                             request_timeout_ms=int(timeout_s * 1000))
    created = []
    try:
        existing = set(admin.list_topics())
        for name in wanted:
            if name in existing:
                continue
            try:  # one at a time: a batch fails as a whole when one topic appeared meanwhile
                admin.create_topics([NewTopic(name=name, num_partitions=settings.partitions,
                                              replication_factor=settings.replication_factor)],
                                    timeout_ms=int(timeout_s * 1000))
                created.append(name)
                log.info("created topic %s (%d partitions)", name, settings.partitions)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created


class NewsProducer:
    """kafka-python producer of ``news.raw`` messages, keyed by ``id``.

    Use as a context manager (flushes and closes on exit), or call :meth:`close`.

    :param settings: broker address, namespace, partitions, payload limit.
    :param topic: full topic name; default ``settings.topic(settings.topic_raw)``.
    :param create_topics: create the topic first if it is missing (:func:`ensure_topics`).
    :param validate: validate every message against the ``news.raw`` schema before sending.
    :param client_id: Kafka client id.
    :param config: extra ``KafkaProducer`` keyword arguments (override the defaults).
    """

    def __init__(self, settings: Settings, *, topic: str | None = None, create_topics: bool = True,
                 validate: bool = True, client_id: str = "finpulse-ingest", **config: Any):
        from kafka import KafkaProducer

        if not settings.kafka_bootstrap:
            raise ValueError("settings.kafka_bootstrap is empty: start the stack or set FINPULSE_KAFKA_BOOTSTRAP")
        self.settings = settings
        self.topic = topic or settings.topic(settings.topic_raw)
        self.validate = validate
        if create_topics:
            ensure_topics(settings, [self.topic])
        options: dict[str, Any] = dict(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            acks="all",
            retries=10,
            retry_backoff_ms=200,
            max_in_flight_requests_per_connection=1,
            linger_ms=5,
            request_timeout_ms=30000,
            max_block_ms=60000,
        )
        options.update(config)
        self._producer = KafkaProducer(**options)

    def send(self, message: dict, *, key: str | None = None):
        """Queue one message (asynchronous); returns kafka-python's future.

        :param message: a ``news.raw`` dict.
        :param key: partition key; default the message's ``id``.
        :raises stream.exceptions.BadMessage: invalid or oversized message (nothing is sent).
        """
        value = encode_message(message, max_bytes=self.settings.max_payload_bytes, validate=self.validate)
        k = key if key is not None else str(message["id"])
        return self._producer.send(self.topic, key=k.encode("utf-8"), value=value)

    def send_many(self, messages: Iterable[dict], *, timeout_s: float = 60.0) -> int:
        """Send messages in order, flush, and check that every one was acknowledged.

        All messages are encoded (and validated) before the first is sent, so an invalid message
        fails the batch without sending any of it.

        :param messages: ``news.raw`` dicts.
        :param timeout_s: how long to wait for the acknowledgements.
        :returns: the number of messages delivered.
        :raises ProduceError: when any message failed (``delivered`` says how many did not).
        """
        batch = [(str(m["id"]).encode("utf-8"),
                  encode_message(m, max_bytes=self.settings.max_payload_bytes, validate=self.validate))
                 for m in messages]
        futures = [self._producer.send(self.topic, key=k, value=v) for k, v in batch]
        return self.wait(futures, timeout_s=timeout_s)

    def wait(self, futures: Sequence[Any], *, timeout_s: float = 60.0) -> int:
        """Flush, then check the futures returned by :meth:`send`.

        :param futures: kafka-python futures, in send order.
        :param timeout_s: how long the flush may take.
        :returns: ``len(futures)`` when all were acknowledged.
        :raises ProduceError: at the first failed one (``delivered`` = acknowledged before it).
        """
        try:
            self._producer.flush(timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a flush timeout; the futures say what failed
            log.warning("flush of %s did not complete: %r", self.topic, exc)
        delivered = 0
        for fut in futures:
            try:
                fut.get(timeout=1.0)
                delivered += 1
            except Exception as exc:  # noqa: BLE001 - reported with the count
                raise ProduceError(f"produce to {self.topic} failed: {exc!r}", delivered) from exc
        return delivered

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued message is sent (or ``timeout_s`` passes)."""
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close the underlying producer."""
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> NewsProducer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
