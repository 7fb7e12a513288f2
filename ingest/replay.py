"""Event-time replay of historical headlines (``finpulse replay FILE``) into ``news.raw``.

:func:`read_history` (pure) reads a JSONL or CSV file (optionally ``.gz``) into ``news.raw``
messages sorted by event time (stable: rows with the same time keep their file order) plus the bad
rows as ``(line_no, reason)``. :func:`replay` produces them in that order to the settings'
namespace, as fast as possible or ``speed`` times real time, with a tqdm progress bar on stderr.

Column defaults (case-insensitive header / key names; the first one present wins):

=========  ===========================================================
title      ``title``, ``headline``, ``text``
time       ``published_at``, ``timestamp``, ``datetime``, ``date``, ``time``, ``created_at``
id         ``id``
url        ``url``, ``link``
source     ``source``, ``publisher``
ticker     ``ticker``, ``tickers``, ``symbol``, ``stock``
summary    ``summary``, ``description``
lang       ``lang``, ``language``
=========  ===========================================================

Timestamps: RFC 3339 / ISO 8601 (``2024-03-05T14:30:00Z``, ``2024-03-05 14:30:00-05:00``,
``... UTC``), RFC 2822 (``Tue, 05 Mar 2024 14:30:00 GMT``), epoch seconds or milliseconds
(numbers of 9+ digits), a few unambiguous spelled-out forms (``Mar 5, 2024``, ``5 March 2024``), or
``time_format`` (``strptime``). Naive times are read in ``tz`` (default UTC). ``05/03/2024`` is
refused as ambiguous unless ``time_format`` says which is the day.

Date-only values (``2024-03-05``, ``20240305``, a ``time_format`` without time fields) become
00:00:00.000 of that day in ``tz`` (``date_only="start"``, default), or 23:59:59.999
(``date_only="end"``: no alert can fire before the news could have existed, for backtests that
must avoid look-ahead). Rows of one day then share one timestamp and keep their file order. Such
messages carry ``published_at_precision: "day"``.

De-duplication (``dedup=True``, default; ``finpulse replay/backtest --no-dedup`` turns it off): a story
counts once, as when crawled. In event-time order, a later row with a known id but another title or
time is a later version of that story (:func:`version_id`, ``duplicate_of`` = the story's first copy),
and the crawler's :class:`finpulse.ingest.dedup.Deduplicator` (in memory, on event time) marks
syndicated copies (same canonical URL) and near-duplicate titles with ``duplicate_of``. Marked
messages are still produced and scored; the window store does not count them again.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from finpulse.core.jsonl import iter_jsonl
from finpulse.core.settings import Settings
from finpulse.core.tickers import is_ticker
from finpulse.ingest.dedup import (
    MAX_ID_LEN,
    Deduplicator,
    MemoryStore,
    history_id,
    sha256_hex,
)
from finpulse.ingest.feeds import SUMMARY_MAX, clean_text

from .exceptions import IngestError

log = logging.getLogger(__name__)

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "title": ("title", "headline", "text"),
    "time": ("published_at", "timestamp", "datetime", "date", "time", "created_at"),
    "id": ("id",),
    "url": ("url", "link"),
    "source": ("source", "publisher"),
    "ticker": ("ticker", "tickers", "symbol", "stock"),
    "summary": ("summary", "description"),
    "lang": ("lang", "language"),
}
MAX_BAD_LOGGED = 20

_EPOCH_RE = re.compile(r"^\d{9,}(?:\.\d+)?$")
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{8}$")
_AMBIGUOUS_RE = re.compile(r"^\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}\b")
_ZONE_SUFFIX_RE = re.compile(r"\s*(?:UTC|GMT|Z)$", re.IGNORECASE)
_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%X", "%c", "%T", "%R", "%f", "%p")
_DATE_FORMATS = ("%Y/%m/%d", "%d %b %Y", "%d %B %Y", "%b %d, %Y", "%B %d, %Y", "%b %d %Y", "%B %d %Y")
_DATETIME_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%b %d, %Y %H:%M:%S", "%b %d, %Y %H:%M",
                     "%b %d, %Y %I:%M %p", "%B %d, %Y %I:%M %p", "%B %d, %Y %H:%M", "%d %b %Y %H:%M:%S",
                     "%d %b %Y %H:%M", "%d %B %Y %H:%M")


class ReplayError(IngestError, RuntimeError):
    """Replay stopped (the file cannot be read, or Kafka failed); ``result`` holds what was done.

    :param message: what went wrong.
    :param result: the partial :class:`ReplayResult`, when producing had started.
    """

    def __init__(self, message: str, result: ReplayResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class ReplayResult:
    """What :func:`replay` did.

    :param read: data rows read (good and bad).
    :param produced: messages acknowledged by the broker.
    :param bad: ``(line_no, reason)`` of every skipped row (1-based physical line of the row's start).
    :param filtered: good rows outside ``from_ts`` / ``to_ts``.
    :param marked_duplicate: messages of the time range sent with ``duplicate_of`` (later versions of
        an id, syndicated copies, near-duplicate titles): scored downstream, not counted again.
    :param topic: the topic produced to.
    :param elapsed_s: wall time.
    """

    read: int = 0
    produced: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    filtered: int = 0
    marked_duplicate: int = 0
    topic: str = ""
    elapsed_s: float = 0.0

    def summary(self) -> str:
        """One line for the command line."""
        return (f"read {self.read} rows, produced {self.produced} to {self.topic} ({self.marked_duplicate} marked "
                f"duplicate, not counted again), {len(self.bad)} bad, {self.filtered} outside the time range, "
                f"in {self.elapsed_s:.1f}s")


# --- time parsing --------------------------------------------------------------------------------

def _zone(tz: str | timezone) -> Any:
    if not isinstance(tz, str):
        return tz
    if tz.upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None


def parse_history_time(value: Any, *, tz: str = "UTC", time_format: str | None = None,
                       date_only: str = "start") -> tuple[datetime, bool]:
    """Parse one timestamp cell of a history file.

    :param value: the cell (string, or a JSON number for epoch seconds / milliseconds).
    :param tz: zone of naive values and of date-only values (IANA name, default ``UTC``).
    :param time_format: a ``strptime`` format to use instead of the built-in recognisers.
    :param date_only: ``start`` (00:00:00.000) or ``end`` (23:59:59.999) for date-only values.
    :returns: ``(aware UTC datetime, was_date_only)``.
    :raises ValueError: with the reason (empty, ambiguous, unrecognised).
    """
    if date_only not in ("start", "end"):
        raise ValueError("date_only must be 'start' or 'end'")
    zone = _zone(tz)
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise ValueError("empty timestamp")
    if isinstance(value, (int, float)) or (isinstance(value, str) and _EPOCH_RE.match(value.strip())
                                           and not time_format):
        x = float(value)
        if x > 1e14:
            x /= 1e6  # microseconds
        elif x > 1e11:
            x /= 1e3  # milliseconds
        try:
            return datetime.fromtimestamp(x, UTC), False
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch value {value!r} out of range") from None
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be a string or a number, got {type(value).__name__}")
    s = value.strip()
    day = False
    dt: datetime | None = None
    if time_format:
        try:
            dt = datetime.strptime(s, time_format)
        except ValueError:
            raise ValueError(f"timestamp {s!r} does not match time_format {time_format!r}") from None
        day = not any(d in time_format for d in _TIME_DIRECTIVES)
    else:
        if _ISO_DATE_RE.match(s):
            day = True
        iso = _ZONE_SUFFIX_RE.sub("+00:00", s) if not _ISO_DATE_RE.match(s) else s
        try:
            dt = datetime.fromisoformat(iso)
        except ValueError:
            dt = None
        if dt is None and any(c.isalpha() for c in s):
            try:
                dt = parsedate_to_datetime(s)  # RFC 2822
            except (TypeError, ValueError, IndexError):
                dt = None
        if dt is None:
            if _AMBIGUOUS_RE.match(s):
                raise ValueError(f"ambiguous date {s!r} (day/month order); pass time_format, e.g. '%m/%d/%Y'")
            for fmt, is_day in [(f, True) for f in _DATE_FORMATS] + [(f, False) for f in _DATETIME_FORMATS]:
                try:
                    dt = datetime.strptime(_ZONE_SUFFIX_RE.sub("", s), fmt)
                except ValueError:
                    continue
                day = is_day
                if not is_day and _ZONE_SUFFIX_RE.search(s):
                    dt = dt.replace(tzinfo=UTC)
                break
        if dt is None:
            raise ValueError(f"timestamp {s!r} is not a recognised date/time; pass time_format")
    if day:
        dt = datetime(dt.year, dt.month, dt.day, tzinfo=zone)
        if date_only == "end":
            dt += timedelta(days=1, milliseconds=-1)
    elif dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone)
    return dt.astimezone(UTC), day


def parse_bound(value: Any, *, tz: str = "UTC") -> float | None:
    """A ``from_ts`` / ``to_ts`` bound as epoch seconds.

    :param value: ``None``, an aware/naive ``datetime`` (naive = ``tz``), epoch seconds, or a string
        accepted by :func:`parse_history_time` (a date means 00:00 of that day).
    :param tz: zone of naive values.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=_zone(tz))).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return parse_history_time(value, tz=tz, date_only="start")[0].timestamp()


# --- reading -------------------------------------------------------------------------------------

def _open_text(path: Path, encoding: str) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in ("jsonl", "csv", "tsv"):
            raise ValueError("fmt must be 'jsonl', 'csv' or 'tsv'")
        return fmt
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if ext == ".tsv":
        return "tsv"
    if ext == ".csv":
        return "csv"
    raise ValueError(f"cannot tell the format of {path.name}: name it .jsonl/.csv/.tsv or pass fmt")


def _iter_csv(reader: Any, header: list[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Rows after the header as ``(line of the row's first physical line, dict or error)``."""
    next_line = reader.line_num + 1
    while True:
        line = next_line
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            next_line = reader.line_num + 1
            yield line, f"CSV error: {exc}"
            continue
        next_line = reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield line, f"expected {len(header)} fields, got {len(row)}"
            continue
        yield line, dict(zip(header, row, strict=True))


def _parse_tickers(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else re.split(r"[,;|\s]+", str(value))
    out: list[str] = []
    for item in items:
        t = str(item).strip().lstrip("$").upper()
        if not t:
            continue
        if not is_ticker(t):
            raise ValueError(f"ticker {item!r} is not a ticker (A-Z, digits, '.', '-', at most 10)")
        if t not in out:
            out.append(t)
    return out or None


# --- de-duplication ------------------------------------------------------------------------------

VERSION_MARK = "#rev-"
MANY_URL_COPIES = 25  # warn when one row's link makes this many rows its copies (a landing page, not an article?)


def version_id(story_id: str, title: str, published_at: str) -> str:
    """The id of a later version (edited title or time) of the story ``story_id`` in a history file.

    Stable across replays: ``<story_id>#rev-<16 hex of sha256(title, published_at)>``, or
    ``sha256:<hex>`` of that when it would exceed the 512-character id limit.

    :param story_id: the id the file gives the story (the id of its first copy).
    :param title: the cleaned title of this version.
    :param published_at: the RFC 3339 event time of this version, as produced.
    """
    digest = sha256_hex(title + "\x1f" + published_at)[:16]
    derived = f"{story_id}{VERSION_MARK}{digest}"
    return derived if len(derived) <= MAX_ID_LEN else "sha256:" + sha256_hex(derived)


def _run_sync(coro: Any) -> Any:
    """Run a coroutine that never suspends (the :class:`MemoryStore` only) without an event loop.

    Usable inside a running loop too (``asyncio.run`` is not).
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the in-memory de-duplication store suspended")


def _mark_duplicates(messages: list[tuple[float, int, dict]], *, max_payload_bytes: int | None = None
                     ) -> tuple[list[tuple[float, int, dict]], list[tuple[int, str]]]:
    """Mark copies in ``(event time, line, message)`` items sorted by event time (the crawler's rules).

    The first message of an id is the story; a later one with the same id (another title or time)
    gets :func:`version_id` and ``duplicate_of`` = the story's first copy. Each story goes through
    the crawler's :class:`Deduplicator` on a :class:`MemoryStore` whose clock is the event time (so
    its TTLs, 14 days for ids / URLs and 36 h for title fingerprints, run in event time, and memory
    stays bounded): a known canonical URL or a near-duplicate title gives ``duplicate_of``. Unlike
    the crawler, which drops an exact duplicate, every message is kept, marked. ``duplicate_of``
    always names a story's first copy that is not itself marked. A row whose link makes
    :data:`MANY_URL_COPIES` rows or more its copies is logged as a warning (a landing page would make a
    whole source one story; read such a file with ``url_col=""``).

    :param messages: the items; their messages are modified in place.
    :param max_payload_bytes: a marked message that has grown over this becomes a bad row.
    :returns: ``(kept items, bad rows)``.
    """
    from finpulse.core.errors import BadMessage
    from finpulse.ingest.producer import encode_message

    now = [0.0]
    dedup = Deduplicator(MemoryStore(clock=lambda: now[0]), "replay")
    taken = {msg["id"] for _, _, msg in messages}
    copies: Counter[str] = Counter()  # first id -> rows of other ids with its link (a claim lasts 14 days)
    stories: dict[str, str] = {}  # id in the file -> id its copies name (the first copy of the story)

    async def mark() -> None:
        for ts, _, msg in messages:
            now[0] = ts
            rid = msg["id"]
            if rid in stories:
                vid = version_id(rid, msg["title"], msg["published_at"])
                if vid in taken:  # another row of the file has that id: use the whole digest
                    vid = "sha256:" + sha256_hex(f"{rid}\x1f{msg['title']}\x1f{msg['published_at']}")
                taken.add(vid)
                msg["id"], msg["duplicate_of"] = vid, stories[rid]
                continue
            verdict = await dedup.check(msg)
            await dedup.confirm([verdict])  # a file's rows are all "delivered": claims last seen_ttl_s
            first = verdict.duplicate_of
            if verdict.duplicate and first == rid:  # its id is the hash of an earlier row's URL
                first = await dedup.store.get(dedup.seen_key(rid))
            if first and first != rid:
                msg["duplicate_of"] = stories.get(first, first)
                if verdict.duplicate:
                    copies[msg["duplicate_of"]] += 1
            stories[rid] = msg["duplicate_of"] or rid

    _run_sync(mark())
    for first, n in copies.items():
        if n >= MANY_URL_COPIES:
            log.warning("%d rows (other ids, same link) were marked copies of %r within %d days; if the file's "
                        "links are landing pages rather than articles, read it with url_col=''", n, first,
                        dedup.seen_ttl_s // 86400)
    kept: list[tuple[float, int, dict]] = []
    unfit: list[tuple[int, str]] = []
    for item in messages:
        msg = item[2]
        if msg["duplicate_of"] and max_payload_bytes is not None:
            try:
                encode_message(msg, max_bytes=max_payload_bytes, validate=False)
            except BadMessage as exc:
                unfit.append((item[1], f"{exc.detail} once marked duplicate_of {msg['duplicate_of']!r}"))
                continue
        kept.append(item)
    return kept, unfit


def read_history(path: str | Path, *, title_col: str | None = None, time_col: str | None = None,
                 id_col: str | None = None, url_col: str | None = None, source_col: str | None = None,
                 ticker_col: str | None = None, summary_col: str | None = None, lang_col: str | None = None,
                 source: str | None = None, tz: str = "UTC", time_format: str | None = None,
                 date_only: str = "start", fmt: str | None = None, encoding: str = "utf-8-sig",
                 delimiter: str | None = None, max_payload_bytes: int = 64 * 1024,
                 row_fields: Callable[[Mapping[str, Any], dict[str, Any]], Mapping[str, Any]] | None = None,
                 dedup: bool = True) -> tuple[list[dict], list[tuple[int, str]]]:
    """Read a history file into ``news.raw`` messages in event-time order (pure: no Kafka).

    Column parameters name a header (CSV) or key (JSONL), case-insensitively; ``None`` uses the
    defaults in :data:`DEFAULT_COLUMNS`; ``""`` disables an optional column (e.g. ``id_col=""`` when
    the file's ``id`` is a row number that is not unique across files).

    :param path: ``.jsonl``/``.ndjson``/``.json`` (one object per line), ``.csv`` or ``.tsv``, each
        optionally ``.gz``.
    :param title_col: the headline column.
    :param time_col: the event-time column; ``"date+time"`` joins two columns with a space.
    :param id_col: a stable id column; without one the id is sha256(source, title, published_at).
    :param url_col: the article URL column.
    :param source_col: the publisher column.
    :param ticker_col: tickers (one, or several separated by ``,;|`` or spaces; ``$`` stripped).
    :param summary_col: a summary / description column (truncated to 4000 characters).
    :param lang_col: a language column.
    :param source: source for rows that have none (default ``None``).
    :param tz: zone of naive and date-only timestamps (IANA name, default ``UTC``).
    :param time_format: ``strptime`` format of the time column (default: recognised formats).
    :param date_only: ``start`` (00:00 of the day, default) or ``end`` (23:59:59.999).
    :param fmt: ``jsonl``, ``csv`` or ``tsv`` (default: from the file name).
    :param encoding: text encoding of CSV files (default UTF-8, BOM allowed); JSONL is UTF-8.
    :param delimiter: CSV delimiter (default ``,``; ``\\t`` for ``.tsv``).
    :param max_payload_bytes: rows whose message would be larger are bad (``Settings.max_payload_bytes``).
    :param row_fields: ``(row, message) -> more fields`` of a message (e.g. a pre-scored file's
        classifier outputs); a ``ValueError`` or ``TypeError`` makes the row bad with its text.
    :param dedup: de-duplicate as the crawler does (default): in event-time order, a later version of
        an id (another title or time) becomes its own message with :func:`version_id` and
        ``duplicate_of`` = the story's first copy, and :class:`finpulse.ingest.dedup.Deduplicator`
        (in memory, on event time) marks syndicated copies (same canonical URL) and near-duplicate
        titles with ``duplicate_of``. Every message is kept; the marked ones are scored but not
        counted again. ``False`` for files that are already de-duplicated: nothing is marked, and a
        reused id with another title or time is a bad row.
    :returns: ``(messages, bad)``: messages sorted by ``published_at`` (stable), and the skipped
        rows as ``(line_no, reason)``. A row repeating an earlier row's id with the same title and
        time only adds its tickers to the first (multi-ticker datasets); with nothing to add it is
        reported as a duplicate.
    :raises ValueError: unknown format, a named column missing from the CSV header, no title or
        time column at all, text not decodable with ``encoding``.
    :raises FileNotFoundError: no such file.
    """
    from finpulse.core.errors import BadMessage
    from finpulse.core.rfc3339 import format as format_time
    from finpulse.ingest.producer import encode_message

    p = Path(path)
    kind = _detect_format(p, fmt)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    _zone(tz)
    if date_only not in ("start", "end"):
        raise ValueError("date_only must be 'start' or 'end'")
    explicit = {"title": title_col, "time": time_col, "id": id_col, "url": url_col, "source": source_col,
                "ticker": ticker_col, "summary": summary_col, "lang": lang_col}

    def resolver(keys: list[str], *, strict: bool) -> dict[str, list[str] | None]:
        lower = {k.strip().lower(): k for k in keys}
        out: dict[str, list[str] | None] = {}
        for role, given in explicit.items():
            if given == "":
                out[role] = None
                continue
            if given is not None:
                names = [g.strip() for g in given.split("+")] if role == "time" else [given.strip()]
                found = [lower.get(n.lower()) for n in names]
                if any(f is None for f in found):
                    if strict:
                        raise ValueError(f"{p.name}: column {given!r} ({role}) not in the header {keys}")
                    out[role] = None
                    continue
                out[role] = found  # type: ignore[assignment]
                continue
            hit = next((lower[c] for c in DEFAULT_COLUMNS[role] if c in lower), None)
            out[role] = [hit] if hit else None
        return out

    messages: list[tuple[float, int, dict]] = []
    bad: list[tuple[int, str]] = []
    first_line: dict[Any, tuple[int, dict]] = {}

    def convert(line: int, row: dict[str, Any], cols: dict[str, list[str] | None]) -> None:
        def get(role: str) -> Any:
            names = cols.get(role)
            if not names:
                return None
            if len(names) == 1:
                v = row.get(names[0])
                return None if isinstance(v, str) and not v.strip() else v
            parts = [str(row.get(n)).strip() for n in names if row.get(n) not in (None, "")]
            return " ".join(parts) or None

        for role in ("title", "time"):
            if cols[role] is None:
                wanted = explicit[role] or ", ".join(DEFAULT_COLUMNS[role])
                raise ValueError(f"no {role} field (looked for {wanted})")
        title_cols, time_cols = cols["title"], cols["time"]
        assert title_cols is not None and time_cols is not None  # checked just above
        title_raw = get("title")
        title = clean_text(str(title_raw)) if title_raw is not None else ""
        if not title:
            raise ValueError(f"empty title (column {title_cols[0]!r})")
        if len(title) > 2000:
            raise ValueError(f"title is {len(title)} characters, at most 2000")
        try:
            dt, day = parse_history_time(get("time"), tz=tz, time_format=time_format, date_only=date_only)
        except ValueError as exc:
            raise ValueError(f"{exc} (column {'+'.join(time_cols)!r})") from None
        published_at = format_time(dt)
        src = get("source")
        src = str(src).strip() if src is not None else source
        url = get("url")
        summary = clean_text(str(get("summary") or ""))[:SUMMARY_MAX] or None
        lang = get("lang")
        rid = get("id")
        rid = str(rid).strip() if rid is not None else history_id(source=src, title=title, published_at=published_at)
        msg: dict[str, Any] = {
            "id": rid,
            "title": title,
            "summary": summary,
            "url": str(url).strip() if url is not None else None,
            "source": src,
            "published_at": published_at,
            "fetched_at": None,
            "published_at_inferred": False,
            "tickers": _parse_tickers(get("ticker")),
            "lang": str(lang).strip() if lang is not None else None,
            "tags": None,
            "duplicate_of": None,
        }
        if day:
            msg["published_at_precision"] = "day"
        try:
            encode_message(msg, max_bytes=max_payload_bytes)
        except BadMessage as exc:
            raise ValueError(exc.detail) from None
        # with dedup, another title or time under a known id is a later version (kept, settled below)
        key: Any = (rid, title, published_at) if dedup else rid
        if key in first_line:
            n0, m0 = first_line[key]
            if m0["title"] == title and m0["published_at"] == published_at:
                extra = [t for t in (msg["tickers"] or []) if t not in (m0["tickers"] or [])]
                if extra:
                    m0["tickers"] = (m0["tickers"] or []) + extra
                    return
                raise ValueError(f"duplicate of line {n0}")
            raise ValueError(f"id {rid!r} already used at line {n0} by another headline")
        if row_fields is not None:
            try:
                msg.update(row_fields(row, msg))
            except TypeError as exc:
                raise ValueError(str(exc)) from None
        first_line[key] = (line, msg)
        messages.append((dt.timestamp(), line, msg))

    def take(rows: Iterator[tuple[int, dict[str, Any] | str]], fixed: dict[str, list[str] | None] | None) -> None:
        for line, row in rows:
            if isinstance(row, str):
                bad.append((line, row))
                continue
            cols = fixed if fixed is not None else resolver(list(row), strict=False)
            try:
                convert(line, row, cols)
            except ValueError as exc:
                bad.append((line, str(exc)))

    if kind == "jsonl":
        take(iter_jsonl(p), None)
    else:
        delim = delimiter or ("\t" if kind == "tsv" else ",")
        csv.field_size_limit(max(csv.field_size_limit(), 1 << 20))
        try:
            with _open_text(p, encoding) as fh:
                reader = csv.reader(fh, delimiter=delim)
                header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
                if header:
                    cols = resolver(header, strict=True)
                    if cols["title"] is None or cols["time"] is None:
                        role = "title" if cols["title"] is None else "time"
                        raise ValueError(f"{p.name}: no {role} column in the header {header}; "
                                         f"tried {', '.join(DEFAULT_COLUMNS[role])}, or pass {role}_col")
                    take(_iter_csv(reader, header), cols)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{p.name}: not valid {encoding} ({exc.reason}); pass encoding=") from None
    messages.sort(key=lambda item: item[0])  # stable: equal times keep file order
    if dedup:
        messages, unfit = _mark_duplicates(messages, max_payload_bytes=max_payload_bytes)
        bad.extend(unfit)
    bad.sort(key=lambda b: b[0])
    return [m for _, _, m in messages], bad


# --- producing -----------------------------------------------------------------------------------

def replay(path: str | Path, settings: Settings, *, speed: float | None = None, from_ts: Any = None,
           to_ts: Any = None, progress: bool = True, max_sleep_s: float = 10.0, producer: Any = None,
           batch: int = 1000, sleep: Callable[[float], None] = time.sleep, **read_options: Any) -> ReplayResult:
    """Produce a history file to ``news.raw`` of ``settings.namespace`` in event-time order.

    Messages are keyed by ``id``; the order holds within each partition (use a namespace whose topic
    has one partition, ``settings.with_overrides(partitions=1)`` before it exists, for a total order).
    Replaying a file twice produces the same ids, so downstream de-duplication counts each once.

    :param path: the history file (see :func:`read_history`).
    :param settings: broker, namespace, partitions (of a topic created here), payload limit.
    :param speed: ``None`` or ``0``: as fast as possible; ``N``: N times real time, i.e. the gap
        between consecutive event times divided by N is slept (each gap capped at ``max_sleep_s``).
    :param from_ts: produce only events at or after this (datetime, epoch seconds, or a string such as
        ``2024-03-01`` or ``2024-03-01T12:00:00Z``; naive = ``tz``).
    :param to_ts: produce only events strictly before this (same forms).
    :param progress: show a tqdm bar (rate, ETA) on stderr.
    :param max_sleep_s: longest real-time pause between two messages in ``speed`` mode.
    :param producer: a :class:`finpulse.ingest.producer.NewsProducer` to reuse (not closed here).
    :param batch: acknowledgements are checked every ``batch`` messages.
    :param sleep: the sleep function (tests).
    :param read_options: column mapping and parsing options of :func:`read_history` (``title_col``,
        ``time_col``, ``id_col``, ``url_col``, ``source_col``, ``ticker_col``, ``summary_col``,
        ``lang_col``, ``source``, ``tz``, ``time_format``, ``date_only``, ``fmt``, ``encoding``,
        ``delimiter``, ``dedup``). De-duplication runs over the whole file before ``from_ts`` /
        ``to_ts`` select, so ids and marks do not depend on the range.
    :returns: :class:`ReplayResult`; bad rows are also logged (the first 20, then a count).
    :raises ReplayError: the broker failed (``.result`` has the partial counts; replaying again is
        safe: same ids).
    :raises ValueError: bad arguments or an unreadable file (see :func:`read_history`).
    """
    from tqdm import tqdm

    from finpulse.core.messages import parse_time
    from finpulse.ingest.producer import NewsProducer, ProduceError

    if speed is not None and speed < 0:
        raise ValueError("speed must be >= 0")
    t0 = time.monotonic()
    tz = read_options.get("tz", "UTC")
    lo, hi = parse_bound(from_ts, tz=tz), parse_bound(to_ts, tz=tz)
    rows, bad = read_history(path, max_payload_bytes=settings.max_payload_bytes, **read_options)
    for line, reason in bad[:MAX_BAD_LOGGED]:
        log.warning("%s line %d skipped: %s", Path(path).name, line, reason)
    if len(bad) > MAX_BAD_LOGGED:
        log.warning("%s: %d more bad rows not shown", Path(path).name, len(bad) - MAX_BAD_LOGGED)
    timed = [(parse_time(m["published_at"]).timestamp(), m) for m in rows]
    selected = [(ts, m) for ts, m in timed if (lo is None or ts >= lo) and (hi is None or ts < hi)]
    result = ReplayResult(read=len(rows) + len(bad), bad=bad, filtered=len(timed) - len(selected),
                          marked_duplicate=sum(1 for _, m in selected if m.get("duplicate_of")))
    own = producer is None
    if own:
        producer = NewsProducer(settings, client_id="finpulse-replay")
    result.topic = producer.topic
    bar = tqdm(total=len(selected), unit="msg", desc=f"replay -> {producer.topic}", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    pending: list[Any] = []
    try:
        start = time.monotonic()
        offset = 0.0
        prev: float | None = None
        for ts, msg in selected:
            if speed:
                if prev is not None:
                    offset += min(max(0.0, ts - prev) / speed, max_sleep_s)
                prev = ts
                delay = start + offset - time.monotonic()
                if delay > 0:
                    if pending:  # what is due now goes out before we pause
                        result.produced += producer.wait(pending)
                        pending = []
                    sleep(delay)
            pending.append(producer.send(msg))
            bar.update(1)
            if len(pending) >= batch:
                result.produced += producer.wait(pending)
                pending = []
        if pending:
            result.produced += producer.wait(pending)
            pending = []
    except ProduceError as exc:
        result.produced += exc.delivered
        result.elapsed_s = time.monotonic() - t0
        raise ReplayError(f"replay of {path} stopped after {result.produced} messages: {exc}", result) from exc
    finally:
        bar.close()
        if own:
            producer.close()
    result.elapsed_s = time.monotonic() - t0
    log.info("%s: %s", Path(path).name, result.summary())
    return result
