"""Tweets rewritten in the style of news headlines, for training (pure functions, no I/O at import).

The upstream corpora are finance tweets; users score news headlines. A model trained on tweets alone
learns tweet cues (a leading ``$TICKER -``, cashtags, shouting, emoji, ``!!!``) that news headlines
lack. :func:`to_headline_style` removes those cues while keeping what the sentence says, so training
can show the model the same content in both styles (``finpulse train --headline-style P`` rewrites a
share ``P`` of the tweets each epoch):

* a leading ticker prefix (``$LK - ``, ``$NCBS: ``, ``RT @desk:``) is dropped;
* other cashtags become the company name from the bundled list (``models/companies.json``) or the
  bare ticker (``$AAPL`` -> ``Apple``, ``$XYZ`` -> ``XYZ``);
* ``@handles`` at the ends, ``#`` of hashtags, emoji and pictographs, URLs and the trailing ``…`` of a
  truncated tweet are removed; runs of ``!`` / ``?`` become one, a ``!`` ending becomes none;
* words in capitals longer than four letters (``HUGE``, ``BREAKING``) are title-cased; shorter ones
  are kept (tickers and acronyms: ``FDA``, ``ECB``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache

from .tickers import COMPANIES_FILE

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_LEAD = re.compile(r"^\s*(?:RT\s+@\w+:?\s*|(?:\$[A-Za-z][A-Za-z0-9.]{0,9}[\s,]*)+(?:[-:–—|]\s*))")
_CASHTAG = re.compile(r"\$([A-Za-z][A-Za-z0-9]{0,5}(?:\.[A-Za-z]{1,2})?)(?![A-Za-z0-9])")
_EDGE_HANDLES = re.compile(r"^(?:@\w+\s*)+|(?:\s*(?:via\s+)?@\w+)+\s*$", re.IGNORECASE)
_SHOUT = re.compile(r"\b[A-Z]{5,}\b")
_BANGS = re.compile(r"([!?])[!?]+")
_WS = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _names_by_ticker() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, ticker in json.loads(COMPANIES_FILE.read_text()).items():
        if not name.startswith("_"):
            out.setdefault(ticker, name)  # the first (usual) name of each ticker
    return out


def _is_pictograph(ch: str) -> bool:
    return unicodedata.category(ch) == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF or ord(ch) in (0xFE0F, 0x200D)


def to_headline_style(text: str) -> str:
    """``text`` (a tweet) without tweet-only cues; see the module docstring for the steps.

    :param text: a raw tweet.
    :returns: the rewritten text; ``text`` itself (stripped) when nothing would be left.
    """
    names = _names_by_ticker()
    out = _URL.sub(" ", text)
    out = "".join(ch for ch in out if not _is_pictograph(ch))
    out = _LEAD.sub("", out, count=1)
    out = _EDGE_HANDLES.sub("", out.strip())
    out = _CASHTAG.sub(lambda m: names.get(m.group(1).upper(), m.group(1).upper()), out)
    out = out.replace("#", "")
    out = _SHOUT.sub(lambda m: m.group(0).title(), out)
    out = _BANGS.sub(r"\1", out)
    out = _WS.sub(" ", out).strip().rstrip("…").rstrip()
    out = out.removesuffix("!").rstrip()
    return out or text.strip()
