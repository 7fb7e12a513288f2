"""HTTP details shared by the crawler and the webhook sender."""

from __future__ import annotations

import email.utils
import time


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    :param value: the header value, or ``None``.
    :param now: current unix time for HTTP dates (default ``time.time()``).
    :returns: seconds (>= 0), or ``None`` when absent or unparsable.
    """
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(int(v))
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None or dt.tzinfo is None:
        return None
    return max(0.0, dt.timestamp() - (time.time() if now is None else now))
