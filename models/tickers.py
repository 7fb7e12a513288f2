"""Ticker extraction for scored messages: given tickers, else cashtags, else company names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from finpulse.core.tickers import normalize_ticker

_CASHTAG_RE = re.compile(r"(?<![A-Za-z0-9])\$([A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?)(?![A-Za-z0-9])")
COMPANIES_FILE = Path(__file__).resolve().parent / "companies.json"


@lru_cache(maxsize=1)
def _company_pattern() -> tuple[re.Pattern[str], dict[str, str]]:
    names = {k: v for k, v in json.loads(COMPANIES_FILE.read_text()).items() if not k.startswith("_")}
    alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w&])(?:{alternation})(?![\w&])"), names


def extract_tickers(text: str, given: Iterable[str] | None = None) -> list[str]:
    """Tickers of a headline, de-duplicated, in order of appearance.

    :param text: title (and summary) of the article.
    :param given: tickers the crawler or feed supplied; when non-empty they are used as they are
        (normalised) and the text is not searched.
    :returns: e.g. ``["AAPL", "MSFT"]`` for ``"$AAPL and $msft rally"``; company names from the
        bundled list (``models/companies.json``) are used only when the text has no cashtag.
    """
    out: list[str] = []

    def add(sym: str | None) -> None:
        if sym and sym not in out:
            out.append(sym)

    for g in given or ():
        add(normalize_ticker(g))
    if out:
        return out
    for m in _CASHTAG_RE.finditer(text):
        add(normalize_ticker(m.group(1)))
    if out:
        return out
    pattern, names = _company_pattern()
    for m in pattern.finditer(text):
        add(names[m.group(0)])
    return out
