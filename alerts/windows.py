"""Pure event-time arithmetic: buckets, windows, scopes and article normalisation (no I/O).

Conventions
-----------
* Times are epoch seconds (UTC). A bucket is ``[b, b + bucket_s)`` and is named by its start ``b``
  (an ``int``, a multiple of ``bucket_s``).
* A window of width ``w`` *ending at* ``end`` is half-open, ``[end - w, end)``. Windows are made of
  whole buckets: an ``end`` that is not on a bucket boundary is rounded **up** to the next boundary
  (so a dashboard asking for "the last 15 minutes ending now" includes the current, partial bucket)
  and ``w`` must be a multiple of ``bucket_s``.
* Scopes: ``all``, ``topic:<name>`` (the classifier's topic name, whitespace collapsed) and
  ``ticker:<SYMBOL>`` (upper case, no ``$``, ``^[A-Z][A-Z0-9.-]{0,9}$``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from finpulse.core import rfc3339
from finpulse.core.constants import ALL_SCOPE, SCOPE_TYPES, SCORE_SCALE
from finpulse.core.tickers import normalize_ticker

from .entities import Entities, canonical, extract_entities
from .exceptions import InvalidArticle

_SENTIMENTS = ("negative", "positive", "neutral")


# --- time ----------------------------------------------------------------------------------------

def parse_time(value: Any) -> float:
    """Parse an RFC 3339 timestamp with an explicit offset into epoch seconds.

    :param value: e.g. ``"2026-01-05T14:03:00Z"`` or ``"2026-01-05T15:03:00+01:00"``.
    :returns: epoch seconds (float).
    :raises InvalidArticle: ``bad_time`` when not a string, unparsable or without offset.
    """
    try:
        return rfc3339.parse(value).timestamp()
    except ValueError as exc:
        raise InvalidArticle("bad_time", f"published_at {exc}") from None


# --- buckets and windows -------------------------------------------------------------------------

def _check_bucket(bucket_s: int) -> int:
    if not isinstance(bucket_s, int) or isinstance(bucket_s, bool) or bucket_s < 1:
        raise ValueError(f"bucket_s must be a positive int, got {bucket_s!r}")
    return bucket_s


def bucket_start(ts: float, bucket_s: int) -> int:
    """Start of the bucket holding event time ``ts``.

    :param ts: event time, epoch seconds.
    :param bucket_s: bucket width in seconds.
    :returns: the largest multiple of ``bucket_s`` that is ``<= ts``.
    """
    _check_bucket(bucket_s)
    return int(math.floor(ts / bucket_s)) * bucket_s


def bucket_ceil(ts: float, bucket_s: int) -> int:
    """The first bucket boundary at or after ``ts``.

    :param ts: epoch seconds.
    :param bucket_s: bucket width in seconds.
    :returns: the smallest multiple of ``bucket_s`` that is ``>= ts``.
    """
    _check_bucket(bucket_s)
    return int(math.ceil(ts / bucket_s)) * bucket_s


def check_window(window_s: int, bucket_s: int) -> int:
    """Validate a window width.

    :param window_s: window width in seconds.
    :param bucket_s: bucket width in seconds.
    :returns: ``window_s`` as an int.
    :raises ValueError: when not a positive multiple of ``bucket_s``.
    """
    _check_bucket(bucket_s)
    if isinstance(window_s, bool) or not float(window_s).is_integer() or window_s <= 0 or int(window_s) % bucket_s:
        raise ValueError(f"window {window_s!r}s must be a positive multiple of the bucket width {bucket_s}s")
    return int(window_s)


def window_bounds(end_ts: float, window_s: int, bucket_s: int) -> tuple[int, int]:
    """The bucket-aligned half-open window ``[start, end)`` of width ``window_s`` ending at ``end_ts``.

    :param end_ts: end of the window, epoch seconds; rounded up to a bucket boundary.
    :param window_s: width in seconds, a multiple of ``bucket_s``.
    :param bucket_s: bucket width in seconds.
    :returns: ``(start, end)`` with ``end = bucket_ceil(end_ts)`` and ``start = end - window_s``.
    """
    w = check_window(window_s, bucket_s)
    end = bucket_ceil(end_ts, bucket_s)
    return end - w, end


def window_buckets(end_ts: float, window_s: int, bucket_s: int) -> range:
    """Starts of the buckets of the window ``[end - w, end)`` (see :func:`window_bounds`).

    :param end_ts: end of the window, epoch seconds.
    :param window_s: width in seconds, a multiple of ``bucket_s``.
    :param bucket_s: bucket width in seconds.
    :returns: ``range(start, end, bucket_s)``; ``len() == window_s // bucket_s``.
    """
    start, end = window_bounds(end_ts, window_s, bucket_s)
    return range(start, end, bucket_s)


def baseline_bounds(end_ts: float, short_s: int, baseline_s: int, bucket_s: int) -> tuple[int, int]:
    """The baseline window of a detection: the ``baseline_s`` seconds just before the short window.

    :param end_ts: end of the short window, epoch seconds (rounded up to a bucket boundary).
    :param short_s: short window width in seconds.
    :param baseline_s: baseline width in seconds.
    :param bucket_s: bucket width in seconds.
    :returns: ``(end - short_s - baseline_s, end - short_s)``.
    """
    short_start, _ = window_bounds(end_ts, short_s, bucket_s)
    check_window(baseline_s, bucket_s)
    return short_start - baseline_s, short_start


def boundaries(after: int, until: int, bucket_s: int) -> range:
    """Bucket boundaries ``E`` with ``after < E <= until`` (the window ends a detector evaluates).

    :param after: last boundary already handled (a multiple of ``bucket_s``).
    :param until: last boundary to handle (a multiple of ``bucket_s``).
    :param bucket_s: bucket width in seconds.
    """
    _check_bucket(bucket_s)
    return range(after + bucket_s, until + 1, bucket_s)


# --- scopes --------------------------------------------------------------------------------------

def normalize_topic(name: Any) -> str | None:
    """Normalise a topic name for use in a scope: whitespace collapsed, braces replaced.

    :param name: the classifier's topic, e.g. ``"Fed | Central Banks"``.
    :returns: the normalised name, or ``None`` when empty or not a string.
    """
    if not isinstance(name, str):
        return None
    s = " ".join(name.split()).replace("{", "(").replace("}", ")")
    return s or None


def normalize_entity(name: Any) -> str | None:
    """Normalise an entity name for use in a scope: whitespace collapsed, braces replaced, at most 100 chars.

    :param name: e.g. ``"Silicon Valley Bank"``.
    :returns: the normalised name, or ``None`` when empty or not a string.
    """
    if not isinstance(name, str):
        return None
    s = " ".join(name.split()).replace("{", "(").replace("}", ")")[:100].strip()
    return s or None


def normalize_scope(scope: str) -> str:
    """Normalise a scope string given by a user or a rule file.

    :param scope: ``all``, ``topic:<name>`` or ``ticker:<symbol>`` (type case-insensitive).
    :returns: the canonical form, e.g. ``ticker:AAPL`` for ``Ticker:$aapl``.
    :raises ValueError: for an unknown type or an invalid name.
    """
    if not isinstance(scope, str):
        raise ValueError(f"scope must be a string, got {scope!r}")
    s = scope.strip()
    if s.lower() == ALL_SCOPE:
        return ALL_SCOPE
    kind, sep, name = s.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in SCOPE_TYPES or kind == ALL_SCOPE:
        raise ValueError(f"scope {scope!r} must be 'all', 'topic:<name>', 'ticker:<symbol>' or 'entity:<name>'")
    norm = {"ticker": normalize_ticker, "entity": normalize_entity}.get(kind, normalize_topic)(name)
    if norm is None:
        raise ValueError(f"scope {scope!r} has an invalid {kind} name")
    return f"{kind}:{norm}"


def scope_type(scope: str) -> str:
    """The type of a normalised scope.

    :param scope: e.g. ``topic:Earnings``.
    :returns: ``all``, ``topic`` or ``ticker``.
    """
    return ALL_SCOPE if scope == ALL_SCOPE else scope.partition(":")[0]


def scopes_for(article: Mapping[str, Any]) -> list[str]:
    """Every scope a scored article counts in.

    :param article: a ``news.scored`` message (``topic``, ``tickers`` and ``title`` are used).
    :returns: ``["all", "topic:<topic>", "ticker:<A>", ..., "entity:<Company>", ...]``; tickers
        normalised, de-duplicated and sorted; invalid tickers and an empty topic are left out; an
        entity scope for each known company the title names (:func:`finpulse.alerts.entities.extract_entities`).
        Emerging entities (names in no list) get their scope from the window store once promoted.
    """
    out = [ALL_SCOPE]
    topic = normalize_topic(article.get("topic"))
    if topic:
        out.append(f"topic:{topic}")
    tickers = article.get("tickers") or ()
    if isinstance(tickers, str):
        tickers = [tickers]
    syms = sorted({t for t in (normalize_ticker(x) for x in tickers) if t})
    out.extend(f"ticker:{s}" for s in syms)
    title = article.get("title")
    if isinstance(title, str):
        # a company whose ticker the article carries already has its scope: ticker:<SYM>
        covered = {_company_of(s) for s in syms}
        names = sorted({n for n in (normalize_entity(k) for k in _entities(title).known) if n and n not in covered})
        out.extend(f"entity:{n}" for n in names)
    return out


@functools.lru_cache(maxsize=4096)
def _company_of(symbol: str) -> str | None:
    """The canonical company name of a ticker, if the company list has it (cached)."""
    return normalize_entity(canonical(symbol) or "")


@functools.lru_cache(maxsize=8192)
def _entities(title: str) -> Entities:
    """:func:`finpulse.alerts.entities.extract_entities` of a title, cached (each article asks twice)."""
    return extract_entities(title)


def entity_candidates(article: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Names in a scored article's title that no list holds (candidates for emerging entities).

    :param article: a ``news.scored`` message.
    :returns: ``(candidate names, (acronym, expansion) pairs)`` (see :func:`finpulse.alerts.entities.extract_entities`).
    """
    title = article.get("title")
    if not isinstance(title, str):
        return (), ()
    ents = _entities(title)
    names = tuple(n for n in (normalize_entity(c) for c in ents.candidates) if n)
    pairs = tuple((a, b) for a, b in ((normalize_entity(x), normalize_entity(y)) for x, y in ents.expansions)
                  if a and b)
    return names, pairs


@dataclass(frozen=True)
class WindowStats:
    """Counts of one scope over the half-open window ``[start, end)``.

    :param scope: the scope.
    :param start: window start, epoch seconds (bucket aligned).
    :param end: window end, epoch seconds (bucket aligned, exclusive).
    :param n: articles counted.
    :param negative: negative articles.
    :param positive: positive articles.
    :param neutral: neutral articles.
    :param sum_score: sum of ``sentiment_score``.
    :param model_versions: model versions of the counted articles, sorted.
    """

    scope: str
    start: int
    end: int
    n: int = 0
    negative: int = 0
    positive: int = 0
    neutral: int = 0
    sum_score: float = 0.0
    model_versions: tuple[str, ...] = ()

    @property
    def negative_rate(self) -> float | None:
        """``negative / n``; ``None`` when the window is empty."""
        return self.negative / self.n if self.n else None

    @property
    def mean_score(self) -> float | None:
        """Mean ``sentiment_score``; ``None`` when the window is empty."""
        return self.sum_score / self.n if self.n else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``negative_rate``/``mean_score`` are ``None`` when ``n == 0``)."""
        return {
            "scope": self.scope, "start": self.start, "end": self.end, "n": self.n,
            "negative": self.negative, "positive": self.positive, "neutral": self.neutral,
            "sum_score": self.sum_score, "negative_rate": self.negative_rate,
            "mean_score": self.mean_score, "model_versions": list(self.model_versions),
        }


# --- articles ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Article:
    """The parts of a scored article the window store uses.

    :param id: article id.
    :param ts: event time (``published_at``), epoch seconds.
    :param sentiment: ``negative``, ``positive`` or ``neutral``.
    :param score_micro: ``sentiment_score`` in millionths (an int).
    :param model_version: classifier version, ``""`` when absent.
    :param duplicate_of: id of the first copy when this is a syndicated copy, else ``None``.
    :param scopes: scopes it counts in (:func:`scopes_for`).
    :param headline: title, url, source, published_at, sentiment_score and id, for top-negative lists.
    :param candidates: names of emerging entities the title mentions (:func:`entity_candidates`).
    :param expansions: ``(acronym, name)`` pairs the title spells out ("Silicon Valley Bank (SVB)").
    """

    id: str
    ts: float
    sentiment: str
    score_micro: int
    model_version: str
    duplicate_of: str | None
    scopes: tuple[str, ...]
    headline: dict[str, Any]
    candidates: tuple[str, ...] = ()
    expansions: tuple[tuple[str, str], ...] = ()


def parse_article(message: Mapping[str, Any]) -> Article:
    """Validate and normalise a ``news.scored`` message for counting.

    :param message: the scored message (dict).
    :returns: an :class:`Article`.
    :raises InvalidArticle: ``not_object``, ``missing_id``, ``bad_time``, ``bad_sentiment``,
        ``bad_score``.
    """
    if not isinstance(message, Mapping):
        raise InvalidArticle("not_object", f"expected a dict, got {type(message).__name__}")
    aid = message.get("id")
    if not isinstance(aid, str) or not aid.strip():
        raise InvalidArticle("missing_id", f"id must be a non-empty string, got {aid!r}")
    ts = parse_time(message.get("published_at"))
    sentiment = message.get("sentiment")
    if sentiment not in _SENTIMENTS:
        raise InvalidArticle("bad_sentiment", f"sentiment must be one of {_SENTIMENTS}, got {sentiment!r}")
    score = message.get("sentiment_score")
    if (isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)
            or not -1 <= score <= 1):
        raise InvalidArticle("bad_score", f"sentiment_score must be a number in [-1, 1], got {score!r}")
    dup = message.get("duplicate_of")
    mv = message.get("model_version")
    cands, pairs = entity_candidates(message)
    headline = {
        "id": aid,
        "title": message.get("title") if isinstance(message.get("title"), str) else "",
        "url": message.get("url") if isinstance(message.get("url"), str) else None,
        "source": message.get("source") if isinstance(message.get("source"), str) else None,
        "published_at": rfc3339.format(ts),
        "sentiment_score": float(score),
    }
    return Article(
        id=aid,
        ts=ts,
        sentiment=sentiment,
        score_micro=int(round(float(score) * SCORE_SCALE)),
        model_version=mv if isinstance(mv, str) else "",
        duplicate_of=dup if isinstance(dup, str) and dup else None,
        scopes=tuple(scopes_for(message)),
        headline=headline,
        candidates=cands,
        expansions=pairs,
    )
