"""Feed configuration, HTTP fetching and RSS/Atom parsing (no Kafka, no Redis).

* :func:`load_feeds` reads the ``[[feeds]]`` tables of a TOML file into :class:`FeedConfig`.
* :func:`fetch_feed` does one conditional GET with aiohttp: ``User-Agent``, ``If-None-Match`` /
  ``If-Modified-Since``, gzip, redirects, a total timeout and a body size cap (streamed, aborted
  past the cap, also after decompression, so gzip bombs are caught too).
* :func:`parse_feed` turns the fetched bytes into ``news.raw`` messages with feedparser (RSS
  0.9x/1.0/2.0, Atom), refusing documents that declare XML entities (billion laughs) and documents
  that are not a feed (HTML error pages, JSON, binary garbage).

Every failure is a :class:`FeedError` with a short ``code`` that the crawler reports per feed.
"""

from __future__ import annotations

import calendar
import html
import io
import logging
import re
import unicodedata
import xml.sax
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from finpulse import __version__
from finpulse.core.http import parse_retry_after
from finpulse.core.tickers import is_ticker

from .exceptions import IngestError

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

REPO_URL = "https://github.com/finpulse/finpulse"
#: Sent with every request when no contact is configured (``user_agent("")``).
USER_AGENT = f"finpulse/{__version__} (+{REPO_URL})"


def user_agent(contact: str = "") -> str:
    """The crawler's ``User-Agent``: the software, and who runs it.

    Publishers want to know who polls them and how to reach that party; the SEC, for one, asks
    automated clients to declare a company name and a contact e-mail and may block those that do
    not. ``contact`` (``Settings.crawl_contact``, e.g. ``"Risk Desk Ltd ops@example.com"``) is
    appended after the project URL.

    :param contact: the operator's name and e-mail (or URL); empty: the software only.
    :raises ValueError: a contact with control characters or parentheses (it would break the header).
    """
    contact = " ".join(contact.split())
    if not contact:
        return USER_AGENT
    if any(c in contact for c in "()") or any(ord(c) < 32 or ord(c) == 127 for c in contact):
        raise ValueError(f"crawl contact {contact!r} must not contain parentheses or control characters")
    return f"finpulse/{__version__} (+{REPO_URL}; {contact})"
ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
          "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1")

DEFAULT_INTERVAL_S = 300.0
MIN_INTERVAL_S = 1.0
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
TITLE_MAX = 2000
SUMMARY_MAX = 4000
#: Dates before this are treated as missing (feeds that print the epoch or year 1 for "unknown").
EARLIEST_DATE = datetime(1995, 1, 1, tzinfo=UTC)

_NAME_RE = re.compile(r"^[\w.\- ]{1,100}$")
_FEED_KEYS = {"name", "url", "interval", "tickers", "tags", "lenient"}


class FeedError(IngestError):
    """A feed could not be fetched or parsed.

    :param code: short reason (``timeout``, ``connect``, ``http_503``, ``too_large``, ``bad_body``,
        ``xml_entities``, ``not_a_feed``, ``malformed``, ...).
    :param detail: human explanation.
    :param retry_after: seconds the server asked us to wait (``Retry-After``), if any.
    """

    def __init__(self, code: str, detail: str = "", *, retry_after: float | None = None):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


class FeedConfigError(IngestError, ValueError):
    """The feeds file is invalid (the message names the file, the feed and the key)."""


@dataclass(frozen=True)
class FeedConfig:
    """One ``[[feeds]]`` table.

    :param name: unique feed name; becomes the ``source`` of its messages.
    :param url: http(s) URL of the RSS/Atom document.
    :param interval: seconds between polls (default 300; jittered, longer while failing).
    :param tickers: tickers attached to every message of this feed (e.g. a company IR feed).
    :param tags: tags attached to every message of this feed.
    :param lenient: accept documents that are not well-formed XML when feedparser's tolerant parser
        can still read entries from them (default False: such a document is refused, ``malformed``).
    """

    name: str
    url: str
    interval: float = DEFAULT_INTERVAL_S
    tickers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    lenient: bool = False

    @property
    def host(self) -> str:
        """Lower-cased ``host[:port]`` of the URL (the per-host concurrency key)."""
        parts = urlsplit(self.url)
        host = (parts.hostname or "").lower()
        return f"{host}:{parts.port}" if parts.port else host


def feeds_from_data(data: Mapping[str, Any], *, origin: str = "<feeds>") -> list[FeedConfig]:
    """Validate a parsed feeds document (``{"feeds": [{...}, ...]}``).

    :param data: the TOML document as a dict.
    :param origin: file name used in error messages.
    :raises FeedConfigError: unknown keys, missing ``name``/``url``, duplicate names, a non-http(s)
        URL, a bad interval, ticker or tag.
    """
    tables = data.get("feeds")
    if not isinstance(tables, list) or not tables:
        raise FeedConfigError(f"{origin}: no [[feeds]] tables")
    out: list[FeedConfig] = []
    names: set[str] = set()
    for i, t in enumerate(tables, 1):
        where = f"{origin}: feed #{i}"
        if not isinstance(t, dict):
            raise FeedConfigError(f"{where}: must be a table")
        unknown = set(t) - _FEED_KEYS
        if unknown:
            raise FeedConfigError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(_FEED_KEYS)})")
        name, url = t.get("name"), t.get("url")
        if not isinstance(name, str) or not _NAME_RE.match(name.strip()):
            raise FeedConfigError(f"{where}: name must be 1-100 letters, digits, space, '_', '.', '-'")
        name = name.strip()
        where = f"{origin}: feed {name!r}"
        if name in names:
            raise FeedConfigError(f"{where}: duplicate name")
        names.add(name)
        if not isinstance(url, str) or urlsplit(url.strip()).scheme not in ("http", "https") \
                or not urlsplit(url.strip()).hostname:
            raise FeedConfigError(f"{where}: url must be an absolute http(s) URL, got {url!r}")
        interval = t.get("interval", DEFAULT_INTERVAL_S)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < MIN_INTERVAL_S:
            raise FeedConfigError(f"{where}: interval must be a number of seconds >= {MIN_INTERVAL_S}")
        tickers = t.get("tickers", [])
        if not isinstance(tickers, list) or not all(is_ticker(x) for x in tickers):
            raise FeedConfigError(f"{where}: tickers must be a list of upper-case tickers like 'AAPL', 'BRK.B'")
        tags = t.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(x, str) and x.strip() for x in tags):
            raise FeedConfigError(f"{where}: tags must be a list of non-empty strings")
        lenient = t.get("lenient", False)
        if not isinstance(lenient, bool):
            raise FeedConfigError(f"{where}: lenient must be true or false")
        out.append(FeedConfig(name=name, url=url.strip(), interval=float(interval), tickers=tuple(tickers),
                              tags=tuple(x.strip() for x in tags), lenient=lenient))
    return out


def load_feeds(path: str | Path) -> list[FeedConfig]:
    """Read and validate a feeds TOML file (``[[feeds]]`` tables, see ``config/feeds.toml``).

    :param path: the TOML file.
    :raises FeedConfigError: the file is missing, not TOML, or invalid.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FeedConfigError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise FeedConfigError(f"{p}: not valid TOML: {exc}") from None
    return feeds_from_data(data, origin=str(p))


# --- fetching ------------------------------------------------------------------------------------

@dataclass
class FeedState:
    """What the crawler remembers about one feed between polls.

    :param etag: ``ETag`` of the last successfully delivered response.
    :param last_modified: its ``Last-Modified``.
    :param failures: consecutive failed polls (drives the backoff).
    :param last_error: the last failure's ``code: detail``.
    :param url: the feed URL the validators belong to (they are dropped when the URL changes).
    """

    etag: str | None = None
    last_modified: str | None = None
    failures: int = 0
    last_error: str | None = None
    url: str | None = None

    def to_dict(self) -> dict[str, str]:
        """String fields for a Redis hash (empty values left out)."""
        d = {"etag": self.etag, "last_modified": self.last_modified, "url": self.url}
        return {k: v for k, v in d.items() if v}

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> FeedState:
        """Inverse of :meth:`to_dict`."""
        return cls(etag=d.get("etag") or None, last_modified=d.get("last_modified") or None, url=d.get("url") or None)


@dataclass
class Fetched:
    """The result of one successful :func:`fetch_feed`.

    :param status: final HTTP status (200, or 304 when ``not_modified``).
    :param body: the (decompressed) body, ``b""`` on 304.
    :param headers: response headers, lower-cased names.
    :param url: final URL after redirects.
    :param redirected: the redirect statuses followed, e.g. ``[301]``.
    :param fetched_at: when the response arrived (aware UTC).
    """

    status: int
    body: bytes
    headers: dict[str, str]
    url: str
    redirected: list[int] = field(default_factory=list)
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def not_modified(self) -> bool:
        """The server answered 304 to our conditional GET."""
        return self.status == 304


async def fetch_feed(session: Any, url: str, *, etag: str | None = None, last_modified: str | None = None,
                     timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES,
                     user_agent: str = USER_AGENT, max_redirects: int = 5) -> Fetched:
    """One conditional GET of a feed.

    :param session: an ``aiohttp.ClientSession`` (decompression of gzip/deflate left on).
    :param url: the feed URL.
    :param etag: sent as ``If-None-Match``.
    :param last_modified: sent as ``If-Modified-Since``.
    :param timeout_s: total time for connect, headers and body.
    :param max_bytes: larger bodies (declared or streamed, after decompression) are refused.
    :param user_agent: the ``User-Agent`` header.
    :param max_redirects: redirects followed before giving up.
    :returns: :class:`Fetched` (status 200 with a body, or 304).
    :raises FeedError: ``timeout``, ``connect``, ``redirects``, ``http_<status>``, ``too_large``,
        ``bad_body``, ``http_error``.
    """
    import aiohttp

    headers = {"User-Agent": user_agent, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        # the total timeout covers connect, headers and the whole body
        async with session.get(url, headers=headers, allow_redirects=True, max_redirects=max_redirects,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            rheaders = {k.lower(): v for k, v in resp.headers.items()}
            redirected = [r.status for r in resp.history]
            final = str(resp.url)
            if resp.status == 304:
                return Fetched(304, b"", rheaders, final, redirected)
            if not 200 <= resp.status < 300 or resp.status == 204:
                raise FeedError(f"http_{resp.status}", resp.reason or "",
                                retry_after=parse_retry_after(rheaders.get("retry-after")))
            declared = resp.content_length
            if declared is not None and declared > max_bytes:
                raise FeedError("too_large", f"Content-Length {declared} > limit {max_bytes}")
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise FeedError("too_large", f"body exceeds {max_bytes} bytes")
                chunks.append(chunk)
            return Fetched(resp.status, b"".join(chunks), rheaders, final, redirected)
    except FeedError:
        raise
    except TimeoutError:
        raise FeedError("timeout", f"no complete response within {timeout_s:g}s") from None
    except aiohttp.TooManyRedirects:
        raise FeedError("redirects", f"more than {max_redirects} redirects") from None
    except aiohttp.ClientConnectorError as exc:
        raise FeedError("connect", str(exc)) from None
    except aiohttp.ClientPayloadError as exc:
        raise FeedError("bad_body", str(exc)) from None
    except aiohttp.ClientResponseError as exc:
        raise FeedError("http_error", f"{exc.status} {exc.message}") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise FeedError("http_error", repr(exc)) from None


# --- parsing -------------------------------------------------------------------------------------

_SAFE_ENTITY_RE = re.compile(
    rb"""<!ENTITY\s+[A-Za-z_][\w.\-]*\s+(?:"(?:[^"&%<]|&\#\d{1,7};|&\#x[0-9A-Fa-f]{1,6};)*"|'(?:[^'&%<]|&\#\d{1,7};|&\#x[0-9A-Fa-f]{1,6};)*')\s*>""")
_ENTITY_DECL_RE = re.compile(rb"<!ENTITY", re.IGNORECASE)
_FIRST_ELEMENT_RE = re.compile(rb"<[A-Za-z_]")


def _ascii_view(body: bytes) -> bytes:
    """The body as ASCII-compatible bytes (UTF-16/32 re-encoded), for scanning the prolog."""
    head = body[:4]
    for bom, enc in ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
                     (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
                     (b"<\x00\x00\x00", "utf-32-le"), (b"\x00\x00\x00<", "utf-32-be"),
                     (b"<\x00", "utf-16-le"), (b"\x00<", "utf-16-be")):
        if head.startswith(bom):
            return body.decode(enc, "replace").encode("utf-8", "replace")
    return body


def check_entities(body: bytes) -> None:
    """Refuse documents that declare XML entities other than plain text / character references.

    Python's expat (>= 2.4) limits entity amplification and feedparser strips unsafe entity
    declarations before parsing, so billion laughs cannot hurt us; but such a document is never a
    genuine feed, and parsing what feedparser leaves of it yields junk headlines (literal
    ``&lol9;``). So: any ``<!ENTITY`` in the prolog whose value refers to other entities, is a
    parameter entity, or is external (``SYSTEM``/``PUBLIC``) refuses the whole document.

    :raises FeedError: ``xml_entities``.
    """
    data = _ascii_view(body)
    first = _FIRST_ELEMENT_RE.search(data)
    prolog = data[: first.start()] if first else data
    for m in _ENTITY_DECL_RE.finditer(prolog):
        if not _SAFE_ENTITY_RE.match(data, m.start()):
            snippet = data[m.start(): m.start() + 60].decode("utf-8", "replace")
            raise FeedError("xml_entities", f"document declares an expanding/external entity: {snippet!r}")


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "head", "title", "noscript", "template"}
    _BLOCK = {"p", "br", "div", "li", "ul", "ol", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
              "blockquote", "section", "article", "table", "hr", "figure", "figcaption", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


_TAG_RE = re.compile(r"<(?:[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?|/[A-Za-z][A-Za-z0-9]*\s*|!--.*?--)>", re.S)
_ENTITY_RE = re.compile(r"&(?:#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]{1,31});")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")


def clean_text(value: str | None, *, is_html: bool | None = None) -> str:
    """Plain text from a feed title or summary: tags stripped, entities unescaped, whitespace collapsed.

    :param value: the text (``None`` gives ``""``).
    :param is_html: whether ``value`` is HTML; ``None``: guess (it contains something tag-like).
        Plain text is only entity-unescaped (feeds often double-escape: ``AT&amp;amp;T``).
    """
    if not value:
        return ""
    if is_html is None:
        is_html = bool(_TAG_RE.search(value))
    if is_html:
        parser = _TextExtractor()
        parser.feed(value)
        parser.close()
        text = "".join(parser.parts)
    else:
        text = value
    for _ in range(2):  # double-escaped feeds; two rounds at most
        if not _ENTITY_RE.search(text):
            break
        text = html.unescape(text)
    text = unicodedata.normalize("NFC", _CTRL_RE.sub(" ", text))
    return " ".join(text.split())


def _detail_is_html(entry: Mapping[str, Any], key: str) -> bool | None:
    detail = entry.get(f"{key}_detail") or {}
    ctype = (detail.get("type") or "").lower()
    if "html" in ctype:
        return True
    return None  # text/plain: still strip when it contains tags (feeds lie about types)


def _struct_to_dt(st: Any) -> datetime | None:
    if not st:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(tuple(st)[:6] + (0, 0, 0)), UTC)
    except (OverflowError, ValueError, TypeError, OSError):
        return None


def entry_time(entry: dict[str, Any], *, now: datetime, future_tolerance_s: float) -> datetime | None:
    """The event time of an entry: ``published``, else ``updated`` (incl. ``dc:date``), else ``created``.

    Dates before 1995 or more than ``future_tolerance_s`` after ``now`` are treated as missing.

    :param entry: a feedparser entry.
    :param now: the fetch time (aware).
    :param future_tolerance_s: allowed clock skew into the future.
    :returns: aware UTC datetime, or ``None`` when the entry has no usable date.
    """
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # dict.get: FeedParserDict.get would map a missing published_parsed to updated_parsed (deprecated)
        dt = _struct_to_dt(dict.get(entry, key))
        if dt is None:
            continue
        if dt < EARLIEST_DATE or dt.timestamp() > now.timestamp() + future_tolerance_s:
            log.debug("ignoring implausible %s %s", key, dt)
            continue
        return dt
    return None


@dataclass
class ParsedFeed:
    """The result of :func:`parse_feed`.

    :param messages: valid ``news.raw`` messages, in document order, ``duplicate_of`` still ``None``.
    :param invalid: one reason per entry that could not become a message (no title, schema error).
    :param warnings: tolerated problems (encoding overrides, undeclared namespaces, salvaged XML).
    :param version: feedparser's format name (``rss20``, ``rss10``, ``atom10``, ...).
    """

    messages: list[dict]
    invalid: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    version: str = ""


def _is_tolerable(exc: Exception) -> bool:
    import feedparser

    if isinstance(exc, (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)):
        return True
    if isinstance(exc, xml.sax.SAXParseException) and "unbound prefix" in str(exc):
        return True  # an undeclared namespace prefix (media:, dc:): content is intact
    return False


def parse_feed(body: bytes, feed: FeedConfig, *, headers: Mapping[str, str] | None = None,
               url: str | None = None, fetched_at: datetime | None = None,
               future_tolerance_s: float = 300.0) -> ParsedFeed:
    """Parse a fetched RSS/Atom document into ``news.raw`` messages.

    :param body: the raw (decompressed) bytes.
    :param feed: the feed's configuration (name, tickers, tags, lenient).
    :param headers: response headers (``content-type`` carries the charset; lower-case names).
    :param url: final URL of the document, for resolving relative links (default ``feed.url``).
    :param fetched_at: fetch time (aware); the ``published_at`` of undated entries.
    :param future_tolerance_s: dates further in the future than this are treated as missing.
    :raises FeedError: ``xml_entities``, ``not_a_feed``, ``malformed`` (unless ``feed.lenient``).
    """
    import feedparser

    from finpulse.core.errors import BadMessage
    from finpulse.core.messages import validate
    from finpulse.core.rfc3339 import format as format_time
    from finpulse.ingest.dedup import canonical_url, entry_id

    fetched_at = fetched_at or datetime.now(UTC)
    url = url or feed.url
    if not body.strip():
        raise FeedError("not_a_feed", "empty body")
    check_entities(body)
    rheaders = {k.lower(): v for k, v in (headers or {}).items()
                if k.lower() in ("content-type", "content-language", "content-location")}
    rheaders.setdefault("content-location", url)
    # BytesIO, never the bytes themselves: feedparser treats a str/bytes argument as a URL or path.
    d = feedparser.parse(io.BytesIO(body), response_headers=rheaders, sanitize_html=True,
                         resolve_relative_uris=True)
    exc = d.get("bozo_exception") if d.get("bozo") else None
    version = d.get("version") or ""
    if not version:
        why = f"{type(exc).__name__}: {exc}" if exc else "no RSS/RDF/Atom root element"
        raise FeedError("not_a_feed", why)
    warnings: list[str] = []
    if exc is not None:
        msg = f"{type(exc).__name__}: {exc}"
        if _is_tolerable(exc):
            warnings.append(msg)
        elif feed.lenient:
            warnings.append(f"salvaged by the tolerant parser: {msg}")
        else:
            raise FeedError("malformed", msg)
    feed_lang = (d.get("feed") or {}).get("language")
    scope = (urlsplit(url).hostname or "").lower() or None
    # a link shared by several entries (an index page) identifies none of them
    links = Counter(canonical_url(e.get("link")) for e in d.entries if canonical_url(e.get("link")))
    messages: list[dict] = []
    invalid: list[str] = []
    for n, entry in enumerate(d.entries, 1):
        title = clean_text(entry.get("title"), is_html=_detail_is_html(entry, "title"))
        if not title:
            invalid.append(f"entry {n}: no title")
            continue
        title = title[:TITLE_MAX]
        summary = clean_text(entry.get("summary"), is_html=_detail_is_html(entry, "summary"))[:SUMMARY_MAX] or None
        if summary == title:
            summary = None
        link = entry.get("link")
        is_http = isinstance(link, str) and link.strip().lower().startswith(("http://", "https://"))
        link = link.strip() if is_http else None
        published = entry_time(entry, now=fetched_at, future_tolerance_s=future_tolerance_s)
        lang = ((entry.get("title_detail") or {}).get("language") or feed_lang or None)
        record = {
            "id": entry_id(guid=entry.get("id"), url=None if links.get(canonical_url(link), 0) > 1 else link,
                           source=feed.name, title=title, scope=scope),
            "title": title,
            "summary": summary,
            "url": link[:4096] if link else None,
            "source": feed.name,
            "published_at": format_time(published or fetched_at),
            "fetched_at": format_time(fetched_at),
            "published_at_inferred": published is None,
            "tickers": list(feed.tickers) or None,
            "lang": lang[:16] if isinstance(lang, str) else None,
            "tags": list(feed.tags) or None,
            "duplicate_of": None,
        }
        try:
            validate("news.raw", record)
        except BadMessage as err:
            invalid.append(f"entry {n}: {err.detail}")
            continue
        messages.append(record)
    return ParsedFeed(messages=messages, invalid=invalid, warnings=warnings, version=version)
