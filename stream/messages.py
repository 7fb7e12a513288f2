"""Parsing of ``news.raw`` values and the dead letters of the news pipeline.

Pure functions (no Kafka): the agents call them, the tests call them directly. The schemas are in
:mod:`finpulse.core.messages`; event-time checks that a schema cannot express (parsable, not far in
the future) are done here.
"""

from __future__ import annotations

import base64
import json

from finpulse.core import rfc3339
from finpulse.core.errors import BadMessage
from finpulse.core.messages import parse_time, validate


def parse_raw(value: bytes | str | None, *, max_bytes: int, now: float, future_tolerance_s: float,
              oldest_ts: float | None = None) -> dict:
    """Decode and validate one ``news.raw`` value.

    :param value: the Kafka message value.
    :param max_bytes: larger payloads are refused (``oversized``).
    :param now: current wall-clock time, epoch seconds (to refuse far-future events).
    :param future_tolerance_s: how far in the future ``published_at`` may be.
    :param oldest_ts: the oldest ``published_at`` accepted, epoch seconds (``Settings.oldest_event``);
        ``None``: no lower bound.
    :returns: the message as a dict, ``published_at`` normalised to UTC ``Z`` form.
    :raises BadMessage: with one of the codes ``empty``, ``oversized``, ``not_utf8``, ``not_json``,
        ``not_object``, ``missing_title``, ``bad_time``, ``future_event``, ``too_old``, ``schema``.
    """
    if value is None or len(value) == 0:
        raise BadMessage("empty", "message value is empty")
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > max_bytes:
        raise BadMessage("oversized", f"payload is {len(raw)} bytes, limit {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage("not_utf8", f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadMessage("not_json",
                         f"payload is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise BadMessage("not_json", "payload is JSON nested too deeply to parse") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise BadMessage("not_json", f"payload is not usable JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise BadMessage("not_object", f"payload is JSON {type(msg).__name__}, expected an object")
    title = msg.get("title")
    if not isinstance(title, str) or not title.strip():
        raise BadMessage("missing_title", "title is required and must be a non-empty string")
    published = parse_time(msg.get("published_at"))
    if published.timestamp() > now + future_tolerance_s:
        raise BadMessage(
            "future_event",
            f"published_at {msg['published_at']} is {published.timestamp() - now:.0f}s in the future "
            f"(tolerance {future_tolerance_s:.0f}s)",
        )
    if oldest_ts is not None and published.timestamp() < oldest_ts:
        raise BadMessage("too_old", f"published_at {msg['published_at']} is before the oldest accepted event time "
                                    f"{rfc3339.format(oldest_ts)} (setting oldest_event)")
    msg["published_at"] = rfc3339.format(published)
    validate("news.raw", msg)
    return msg


def dead_letter(value: bytes | str | None, reason: str, *, topic: str, partition: int, offset: int,
                stage: str, now: float) -> dict:
    """Build a ``news.dlq`` record keeping the original payload (base64 when not UTF-8)."""
    raw = b"" if value is None else (value.encode("utf-8") if isinstance(value, str) else bytes(value))
    try:
        payload, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return {
        "reason": reason,
        "payload": payload,
        "payload_encoding": encoding,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "stage": stage,
        "failed_at": rfc3339.format(now),
    }
