"""RFC 3339 timestamps, the one way finpulse reads and writes event time (no dependencies).

The stream layer and the alerts layer wrap :func:`parse` with their own error types.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse(value: Any) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset into an aware UTC ``datetime``.

    :param value: e.g. ``"2026-01-05T14:03:00Z"`` or ``"2026-01-05T15:03:00+01:00"``.
    :raises ValueError: with a short explanation, when not a string, unparsable, or naive (event
        time must be unambiguous).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be an RFC 3339 string, got {value!r}")
    try:
        dt = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"is not RFC 3339: {value!r}") from None
    if dt.tzinfo is None:
        raise ValueError(f"has no UTC offset: {value!r}")
    return dt.astimezone(UTC)


def format(when: datetime | float) -> str:  # noqa: A001 - the module's verb
    """RFC 3339 in UTC with a ``Z`` suffix and millisecond precision.

    :param when: an aware ``datetime`` or epoch seconds.
    """
    dt = when if isinstance(when, datetime) else datetime.fromtimestamp(when, UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
