"""Message schemas of the news pipeline: parsing, validation and dead letters.

Pure functions (no Kafka): the agents call them, the tests call them directly. The JSON Schemas
in ``docs/schemas/`` are the documentation and the validator of record; event-time checks that a
schema cannot express (parsable, not far in the future) are done here too.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from finpulse import rfc3339

from .exceptions import BadMessage

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


@lru_cache(maxsize=None)
def _validator(name: str) -> Draft202012Validator:
    resources = []
    for path in SCHEMA_DIR.glob("*.json"):
        doc = json.loads(path.read_text())
        resources.append((path.name, Resource.from_contents(doc)))
        resources.append((doc["$id"], Resource.from_contents(doc)))
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    return Draft202012Validator(schema, registry=registry)


def validate(name: str, message: dict) -> None:
    """Validate ``message`` against ``docs/schemas/<name>.json``.

    :raises BadMessage: ``schema`` with the first error's path and message.
    """
    err = next(iter(_validator(name).iter_errors(message)), None)
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise BadMessage("schema", f"{name} {where}: {err.message}")


def parse_time(value: Any, field: str = "published_at") -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC ``datetime`` (see :mod:`finpulse.rfc3339`).

    :raises BadMessage: ``bad_time`` when unparsable or naive.
    """
    try:
        return rfc3339.parse(value)
    except ValueError as exc:
        raise BadMessage("bad_time", f"{field} {exc}") from None


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and millisecond precision."""
    return rfc3339.format(dt)


def event_time(message: dict) -> float:
    """The event time (``published_at``) of a raw or scored message, in epoch seconds."""
    return parse_time(message["published_at"]).timestamp()


def parse_raw(value: bytes | str | None, *, max_bytes: int, now: float, future_tolerance_s: float) -> dict:
    """Decode and validate one ``news.raw`` value.

    :param value: the Kafka message value.
    :param max_bytes: larger payloads are refused (``oversized``).
    :param now: current wall-clock time, epoch seconds (to refuse far-future events).
    :param future_tolerance_s: how far in the future ``published_at`` may be.
    :returns: the message as a dict, ``published_at`` normalised to UTC ``Z`` form.
    :raises BadMessage: with one of the codes ``empty``, ``oversized``, ``not_utf8``, ``not_json``,
        ``not_object``, ``missing_title``, ``bad_time``, ``future_event``, ``schema``.
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
        raise BadMessage("not_json", f"payload is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
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
    msg["published_at"] = format_time(published)
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
        "failed_at": format_time(datetime.fromtimestamp(now, timezone.utc)),
    }
