"""The agents' business logic as plain functions (no Kafka): tests call these directly."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from finpulse.core.errors import BadMessage
from finpulse.core.rfc3339 import format as format_time
from finpulse.models.tickers import extract_tickers

from .messages import dead_letter, parse_raw


@dataclass
class RawItem:
    """One consumed ``news.raw`` record with its coordinates (for dead letters)."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp: float | None = None
    """When the broker appended the record (epoch seconds), for the end-to-end lag metric."""


@dataclass
class ScoredBatch:
    """Outcome of :func:`score_batch`: scored messages in input order (and their encoded values), and dead letters."""

    scored: list[dict] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    sources: list[RawItem] = field(default_factory=list)
    """The consumed record each scored message came from (same order as ``scored``)."""


def classify_text(msg: dict) -> str:
    """The text the classifier reads: the title (summaries dilute headline sentiment)."""
    return msg["title"]


def build_scored(msg: dict, result: dict, now: float) -> dict:
    """Merge a raw message with the classifier's result into a ``news.scored`` message."""
    text = msg["title"] + (" " + msg["summary"] if msg.get("summary") else "")
    scored = dict(msg)
    scored.update({
        "topic": result["topic"],
        "topic_score": result["topic_score"],
        "topics_top3": result["topics_top3"],
        "sentiment": result["sentiment"],
        "sentiment_probs": result["sentiment_probs"],
        "sentiment_score": result["sentiment_score"],
        "tickers": extract_tickers(text, msg.get("tickers")),
        "model_version": result["model_version"],
        "classified_at": format_time(datetime.fromtimestamp(now, UTC)),
    })
    return scored


def score_batch(items: list[RawItem], classify, *, max_bytes: int, future_tolerance_s: float,
                now: float | None = None, oldest_ts: float | None = None) -> ScoredBatch:
    """Parse, validate and classify a micro-batch.

    Bad input becomes a dead letter with its reason; the rest is classified in one call. If the
    classifier fails on the whole batch, the batch is split in halves recursively to isolate the
    message(s) that make it fail; those are dead-lettered and the others go on.

    :param items: the consumed records, in partition order.
    :param classify: ``callable(list[str]) -> list[dict]`` (e.g. ``Classifier.classify``).
    :param max_bytes: size limit of a raw payload.
    :param future_tolerance_s: how far in the future ``published_at`` may be.
    :param now: wall-clock time (epoch seconds); defaults to ``time.time()``.
    :param oldest_ts: the oldest event time accepted (epoch seconds); ``None``: no lower bound.
    :returns: scored messages in input order, and ``news.dlq`` records.
    """
    now = time.time() if now is None else now
    out = ScoredBatch()
    parsed: list[tuple[RawItem, dict]] = []
    for it in items:
        try:
            parsed.append((it, parse_raw(it.value, max_bytes=max_bytes, now=now,
                                         future_tolerance_s=future_tolerance_s, oldest_ts=oldest_ts)))
        except BadMessage as bad:
            out.dead.append(dead_letter(it.value, bad.reason, topic=it.topic, partition=it.partition,
                                        offset=it.offset, stage="classify", now=now))
        except Exception as exc:  # noqa: BLE001 - whatever one message makes us raise, it is that message's fault
            out.dead.append(dead_letter(it.value, f"unparsable: {type(exc).__name__}: {str(exc)[:200]}",
                                        topic=it.topic, partition=it.partition, offset=it.offset,
                                        stage="classify", now=now))
    results: dict[int, dict] = {}

    def run(group: list[int]) -> None:
        try:
            res = classify([classify_text(parsed[i][1]) for i in group])
            if len(res) != len(group):
                raise RuntimeError(f"classifier returned {len(res)} results for {len(group)} texts")
            results.update(zip(group, res, strict=True))
        except Exception as exc:  # noqa: BLE001 - isolate the culprit, never lose the batch
            if len(group) == 1:
                results[group[0]] = {"error": f"classifier failed: {type(exc).__name__}: {exc}"}
            else:
                mid = len(group) // 2
                run(group[:mid])
                run(group[mid:])

    if parsed:
        run(list(range(len(parsed))))
    for i, (it, msg) in enumerate(parsed):
        res = results[i]
        if "error" in res:
            out.dead.append(dead_letter(it.value, f"unclassifiable: {res['error']}", topic=it.topic,
                                        partition=it.partition, offset=it.offset, stage="classify", now=now))
            continue
        # built from a validated raw message and the classifier's output; schema conformance of
        # news.scored is checked by the tests (validating it here cost 0.3 ms a message)
        try:
            scored = build_scored(msg, res, now)
            value = encode(scored)  # a value that cannot be encoded is this message's fault too
        except Exception as exc:  # noqa: BLE001
            out.dead.append(dead_letter(it.value, f"unscorable: {type(exc).__name__}: {str(exc)[:200]}",
                                        topic=it.topic, partition=it.partition, offset=it.offset,
                                        stage="classify", now=now))
            continue
        out.scored.append(scored)
        out.encoded.append(value)
        out.sources.append(it)
    return out


def encode(msg: dict) -> bytes:
    """JSON-encode a message for Kafka (compact, UTF-8)."""
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
