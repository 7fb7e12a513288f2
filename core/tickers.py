"""What a ticker symbol looks like: one rule for feeds, history files, the classifier and scopes."""

from __future__ import annotations

import re
from typing import Any

#: an upper-case ticker: a letter, then up to 9 letters, digits, ``.`` or ``-`` (``AAPL``, ``BRK.B``)
TICKER_RE = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")


def is_ticker(symbol: Any) -> bool:
    """True when ``symbol`` is already a normalised ticker (see :data:`TICKER_RE`)."""
    return isinstance(symbol, str) and TICKER_RE.match(symbol) is not None


def normalize_ticker(symbol: Any) -> str | None:
    """Upper-case ``symbol`` without surrounding space or a leading ``$``.

    :param symbol: e.g. ``"$aapl "``.
    :returns: ``"AAPL"``, or ``None`` when it is not a string or not a plausible ticker.
    """
    if not isinstance(symbol, str):
        return None
    s = symbol.strip().lstrip("$").upper()
    return s if TICKER_RE.match(s) else None
