"""Stable ids, canonical URLs and (near-)duplicate detection for the ingestion side.

Id rules (see ``docs/ingestion.md``):

* crawled entry with a GUID: the GUID itself when it is a URI (``http://...``, ``urn:...``,
  ``tag:...``, globally unique by construction), else ``<feed host>/<guid>`` (a bare ``12345`` is
  only unique within its publisher); a GUID over 512 characters becomes ``sha256:<hex>``;
* else the sha256 hex of the canonical link (:func:`canonical_url`);
* else the sha256 hex of ``source + "\\x1f" + title``;
* replayed row: the file's id column, else the sha256 hex of ``source, title, published_at``.

Duplicate detection (:class:`Deduplicator`) works on a small key/value *store* with TTLs, either
Redis (:class:`RedisStore`, single-key commands only, so it runs on Redis Cluster) or process
memory (:class:`MemoryStore`, same interface, for a crawl without Redis):

* exact duplicates: ``SET finpulse:<ns>:crawl:seen:<id> <id> NX EX ttl`` on the id, and the same on
  the sha256 of the canonical URL (so a story with another GUID but the same link is caught across
  feeds). An exact duplicate is not produced again.
* near duplicates (syndicated copies with small edits): a 64-bit SimHash of the normalised title,
  looked up by 8 bands of 8 bits in hashes ``finpulse:<ns>:crawl:simhash:<slot>:<band>:<value>``
  (``slot`` = event time // window, so keys expire on their own); a candidate is confirmed when the
  normalised word sets have a Jaccard similarity >= 0.7 and the numbers in both titles are the same.
  A near duplicate *is* produced, with ``duplicate_of`` set to the id of the first copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from finpulse.core.codec import as_str

MAX_ID_LEN = 512

#: Query parameters removed from URLs before hashing (exact names, case-insensitive).
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "igshid", "mc_cid", "mc_eid",
    "_hsenc", "_hsmi", "mkt_tok", "ncid", "cmpid", "s_cid", "guccounter", "guce_referrer",
    "guce_referrer_sig", "sr_share", "taid", "soc_src", "soc_trk",
})
#: Query parameter prefixes removed from URLs before hashing.
TRACKING_PREFIXES = ("utm_",)

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def sha256_hex(text: str) -> str:
    """The sha256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_url(url: str | None) -> str | None:
    """The canonical form of an ``http(s)`` URL, used for ids and duplicate detection.

    Scheme and host are lower-cased, a default port and the fragment are dropped, an empty path
    becomes ``/``, tracking parameters (``utm_*``, ``fbclid``, ``gclid``, ... see
    :data:`TRACKING_PARAMS`) are removed and the remaining ``key=value`` pairs are sorted by key
    (stable, values untouched). The path is kept byte for byte (it is case-sensitive).

    :param url: any string; ``None``, relative URLs and non-HTTP schemes give ``None``.
    :returns: the canonical URL, or ``None`` when ``url`` is not an absolute http(s) URL.
    """
    if not url or not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    pairs = [p for p in parts.query.split("&") if p]
    kept = []
    for pair in pairs:
        key = unquote_plus(pair.split("=", 1)[0]).lower()
        if key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES):
            continue
        kept.append(pair)
    kept.sort(key=lambda p: p.split("=", 1)[0])
    return urlunsplit((scheme, netloc, parts.path or "/", "&".join(kept), ""))


def url_key(url: str | None) -> str | None:
    """sha256 hex of :func:`canonical_url` of ``url``, or ``None`` when it has none."""
    canon = canonical_url(url)
    return sha256_hex(canon) if canon else None


def is_specific_url(url: str | None) -> bool:
    """Whether ``url`` can identify one article: canonical, and more than a bare host (``/``)."""
    canon = canonical_url(url)
    if not canon:
        return False
    parts = urlsplit(canon)
    return parts.path not in ("", "/") or bool(parts.query)


def entry_id(*, guid: str | None, url: str | None, source: str | None, title: str,
             scope: str | None = None) -> str:
    """The stable id of a crawled entry (rules in the module docstring).

    :param guid: the entry's GUID / Atom id, if any.
    :param url: the entry's link, used when there is no GUID (only if it is a specific http(s) URL).
    :param source: feed name, for the last-resort hash.
    :param title: the cleaned title, for the last-resort hash.
    :param scope: the feed's host; a GUID that is not a URI is prefixed with it.
    """
    guid = (guid or "").strip()
    if guid:
        if not _SCHEME_RE.match(guid) and scope:
            guid = f"{scope}/{guid}"
        if len(guid) > MAX_ID_LEN or any(c.isspace() for c in guid):
            return "sha256:" + sha256_hex(guid)
        return guid
    if is_specific_url(url):
        return sha256_hex(canonical_url(url))  # type: ignore[arg-type]
    return sha256_hex(f"{source or ''}\x1f{title}")


def history_id(*, source: str | None, title: str, published_at: str) -> str:
    """The stable id of a replayed row without an id column.

    :param source: the row's source (or ``None``).
    :param title: the cleaned title.
    :param published_at: the RFC 3339 event time exactly as produced (``format_time`` output).
    """
    return sha256_hex(f"{source or ''}\x1f{title}\x1f{published_at}")


# --- near-duplicate fingerprints -------------------------------------------------------------------

_PREFIX_RE = re.compile(r"^\s*(?:(?:update|updated)\s*\d*|rpt|brief|exclusive|corrected|refile|wrapup\s*\d*)\s*[-:]\s*",
                        re.IGNORECASE)
_SUFFIX_RE = re.compile(
    r"\s+[-|\u2013\u2014]\s+"
    r"((?:[A-Z0-9][\w.&'\u2019]*|[\w.-]+\.[a-z]{2,})(?:\s+(?:[A-Z0-9&][\w.&'\u2019]*|of|the|and)){0,3})\s*$"
)
_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)*|[^\W_]+")
_NUMBER_RE = re.compile(r"^\d+(?:[.,]\d+)*$")
_STOPWORDS = frozenset("a an the of to in on for and or at by with from as is are be its it s".split())
MIN_TOKENS = 4


def title_tokens(title: str) -> list[str]:
    """Normalised word tokens of a headline, for near-duplicate detection.

    NFKC, wire-service prefixes (``UPDATE 2-``, ``BRIEF-``, ``RPT-`` ...) and a trailing publisher
    suffix (`` - Reuters``, `` | MarketWatch``) removed, lower-cased, punctuation dropped (numbers keep
    their decimal separators), stop words removed.
    """
    text = unicodedata.normalize("NFKC", title or "")
    text = _PREFIX_RE.sub("", text)
    text = _SUFFIX_RE.sub("", text)
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOPWORDS]


def _h64(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "big")


def simhash(tokens: Sequence[str]) -> int:
    """64-bit SimHash of word unigrams and bigrams (blake2b feature hashes, stable across runs)."""
    weights = [0] * 64
    features = list(tokens) + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
    for feat in features:
        h = _h64(feat)
        for i in range(64):
            weights[i] += 1 if (h >> i) & 1 else -1
    out = 0
    for i, w in enumerate(weights):
        if w > 0:
            out |= 1 << i
    return out


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Jaccard similarity of two token sets (0 when both are empty)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 0.0


def _numbers(tokens: Iterable[str]) -> list[str]:
    return sorted(t for t in tokens if _NUMBER_RE.match(t))


# --- stores --------------------------------------------------------------------------------------

class MemoryStore:
    """In-process stand-in for the few Redis commands :class:`Deduplicator` uses (with TTLs).

    :param clock: wall clock in seconds (``time.time``); injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._strings: dict[str, tuple[str, float]] = {}
        self._hashes: dict[str, tuple[dict[str, str], float]] = {}
        self._ops = 0

    def _sweep(self) -> None:
        self._ops += 1
        if self._ops % 5000:
            return
        now = self._clock()
        for table in (self._strings, self._hashes):
            for key in [k for k, (_, exp) in table.items() if exp <= now]:
                del table[key]

    async def set_nx(self, key: str, value: str, ttl_s: int) -> bool:
        """``SET key value NX EX ttl_s``; True when the key was set."""
        self._sweep()
        cur = self._strings.get(key)
        if cur is not None and cur[1] > self._clock():
            return False
        self._strings[key] = (value, self._clock() + ttl_s)
        return True

    async def get(self, key: str) -> str | None:
        """``GET key``."""
        cur = self._strings.get(key)
        return cur[0] if cur is not None and cur[1] > self._clock() else None

    async def delete(self, *keys: str) -> None:
        """``DEL key`` for each key (strings and hashes)."""
        for key in keys:
            self._strings.pop(key, None)
            self._hashes.pop(key, None)

    async def hset_ttl(self, key: str, field_: str, value: str, ttl_s: int) -> None:
        """``HSET key field value`` then ``EXPIRE key ttl_s``."""
        self._sweep()
        now = self._clock()
        cur = self._hashes.get(key)
        data = cur[0] if cur is not None and cur[1] > now else {}
        data[field_] = value
        self._hashes[key] = (data, now + ttl_s)

    async def hgetall_many(self, keys: Sequence[str]) -> list[dict[str, str]]:
        """``HGETALL`` of each key."""
        now = self._clock()
        out = []
        for key in keys:
            cur = self._hashes.get(key)
            out.append(dict(cur[0]) if cur is not None and cur[1] > now else {})
        return out

    async def hdel(self, key: str, field_: str) -> None:
        """``HDEL key field``."""
        cur = self._hashes.get(key)
        if cur is not None:
            cur[0].pop(field_, None)

    async def expire(self, keys: Sequence[str], ttl_s: int) -> None:
        """``EXPIRE key ttl_s`` for each existing (string) key."""
        now = self._clock()
        for key in keys:
            cur = self._strings.get(key)
            if cur is not None and cur[1] > now:
                self._strings[key] = (cur[0], now + ttl_s)


class RedisStore:
    """The store interface on a ``redis.asyncio`` client (``Redis`` or ``RedisCluster``).

    Only single-key commands are used; :meth:`hgetall_many` pipelines them without a transaction.

    :param client: the ``redis.asyncio`` client; not closed by this object.
    """

    def __init__(self, client: Any):
        self.client = client

    async def set_nx(self, key: str, value: str, ttl_s: int) -> bool:
        return bool(await self.client.set(key, value, nx=True, ex=int(ttl_s)))

    async def get(self, key: str) -> str | None:
        value = await self.client.get(key)
        return None if value is None else as_str(value)

    async def delete(self, *keys: str) -> None:
        for key in keys:  # one key per command: keys may live in different cluster slots
            await self.client.delete(key)

    async def hset_ttl(self, key: str, field_: str, value: str, ttl_s: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, field_, value)
        pipe.expire(key, int(ttl_s))
        await pipe.execute()

    async def hgetall_many(self, keys: Sequence[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        rows = await pipe.execute()
        return [{as_str(k): as_str(v) for k, v in row.items()} for row in rows]

    async def hdel(self, key: str, field_: str) -> None:
        await self.client.hdel(key, field_)

    async def expire(self, keys: Sequence[str], ttl_s: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:  # single-key commands: keys may live in different cluster slots
            pipe.expire(key, int(ttl_s))
        await pipe.execute()


# --- the deduplicator ----------------------------------------------------------------------------

@dataclass
class Verdict:
    """What :meth:`Deduplicator.check` decided about one message.

    :param duplicate: True for an exact duplicate (same id or same canonical URL): do not produce.
    :param duplicate_of: for an exact duplicate, the id seen first; for a new message that is a
        near duplicate, the id of the first copy (goes into the message's ``duplicate_of``).
    :param claimed: store keys this check created (undone by :meth:`Deduplicator.forget`).
    :param registered: ``(hash key, field)`` near-duplicate index entries this check created.
    """

    duplicate: bool
    duplicate_of: str | None = None
    claimed: list[str] = field(default_factory=list)
    registered: list[tuple[str, str]] = field(default_factory=list)


class Deduplicator:
    """Exact and near-duplicate detection across polls, feeds and crawler processes.

    :param store: a :class:`RedisStore` or :class:`MemoryStore`.
    :param prefix: key prefix, ``Settings.redis_prefix + ":crawl"`` (``finpulse:<ns>:crawl``).
    :param seen_ttl_s: how long an id / URL is remembered (default 14 days; longer than any feed
        keeps an item).
    :param near_window_s: two copies more than this apart in event time are never near duplicates
        (default 12 h: syndication happens within hours, while template headlines such as
        "Stocks open higher" recur daily).
    :param jaccard_min: word-set similarity a SimHash candidate needs to be confirmed (default 0.7).
    :param min_tokens: titles with fewer normalised tokens are never near-duplicate checked.
    :param pending_ttl_s: how long a claim made by :meth:`check` lasts until :meth:`confirm` (after the
        delivery) extends it to ``seen_ttl_s``. A crawler killed between the two leaves a claim that
        expires after this, so the headline is delivered again by a later poll: a kill can only
        duplicate a headline (with the same id, de-duplicated downstream), never lose it.
    """

    BANDS = 8
    BAND_BITS = 8

    def __init__(self, store: Any, prefix: str, *, seen_ttl_s: int = 14 * 86400,
                 near_window_s: int = 12 * 3600, jaccard_min: float = 0.7, min_tokens: int = MIN_TOKENS,
                 pending_ttl_s: int = 300):
        self.store = store
        self.pending_ttl_s = int(min(pending_ttl_s, seen_ttl_s))
        self.prefix = prefix.rstrip(":")
        self.seen_ttl_s = int(seen_ttl_s)
        self.near_window_s = int(near_window_s)
        self.jaccard_min = jaccard_min
        self.min_tokens = min_tokens

    def seen_key(self, key: str) -> str:
        """``<prefix>:seen:<id or url hash>``."""
        return f"{self.prefix}:seen:{key}"

    def _band_keys(self, h: int, slot: int) -> list[str]:
        mask = (1 << self.BAND_BITS) - 1
        return [f"{self.prefix}:simhash:{slot}:{b}:{(h >> (b * self.BAND_BITS)) & mask:02x}"
                for b in range(self.BANDS)]

    async def check(self, msg: dict, *, use_url: bool = True) -> Verdict:
        """Claim ``msg`` (a ``news.raw`` dict with ``id``, ``title``, ``published_at``) as seen.

        :param msg: the message; not modified.
        :param use_url: also claim its canonical URL (False when the URL is shared by several entries
            of one document, e.g. every item links to the home page).
        :returns: a :class:`Verdict`; after the delivery call :meth:`confirm`, on a failed delivery
            :meth:`forget` with it. Until confirmed, the claim lasts ``pending_ttl_s``.
        """
        verdict = Verdict(duplicate=False)
        mid = msg["id"]
        if not await self.store.set_nx(self.seen_key(mid), mid, self.pending_ttl_s):
            return Verdict(duplicate=True, duplicate_of=mid)
        verdict.claimed.append(self.seen_key(mid))
        ukey = url_key(msg.get("url")) if use_url and is_specific_url(msg.get("url")) else None
        if ukey and ukey != mid:
            if not await self.store.set_nx(self.seen_key(ukey), mid, self.pending_ttl_s):
                first = await self.store.get(self.seen_key(ukey))
                # keep the id claim: this GUID is now known to be a copy of an earlier story
                return Verdict(duplicate=True, duplicate_of=first or None)
            verdict.claimed.append(self.seen_key(ukey))
        try:
            await self._near(msg, verdict)
        except BaseException:
            await self.forget(verdict)
            raise
        return verdict

    async def _near(self, msg: dict, verdict: Verdict) -> None:
        tokens = title_tokens(msg["title"])
        if len(tokens) < self.min_tokens:
            return
        from finpulse.core.messages import parse_time

        ts = parse_time(msg["published_at"]).timestamp()
        h = simhash(tokens)
        slot = int(ts // self.near_window_s)
        keys = [k for s in (slot - 1, slot, slot + 1) for k in self._band_keys(h, s)]
        numbers = _numbers(tokens)
        best: tuple[float, str] | None = None
        for row in await self.store.hgetall_many(keys):
            for cid, raw in row.items():
                if cid == msg["id"]:
                    continue
                try:
                    cand = json.loads(raw)
                except ValueError:
                    continue
                if abs(cand["t"] - ts) > self.near_window_s:
                    continue
                ctoks = cand["w"].split(" ")
                if _numbers(ctoks) != numbers or jaccard(tokens, ctoks) < self.jaccard_min:
                    continue
                if best is None or (cand["t"], cid) < best:
                    best = (cand["t"], cid)
        if best is not None:
            verdict.duplicate_of = best[1]
            return  # copies are not indexed: duplicate_of always names an original
        value = json.dumps({"t": ts, "w": " ".join(tokens)}, separators=(",", ":"))
        ttl = 3 * self.near_window_s
        for key in self._band_keys(h, slot):
            await self.store.hset_ttl(key, msg["id"], value, ttl)
            verdict.registered.append((key, msg["id"]))

    async def confirm(self, verdicts: Sequence[Verdict]) -> None:
        """The messages of ``verdicts`` were delivered: keep their claims for ``seen_ttl_s``."""
        keys = [k for v in verdicts for k in v.claimed]
        if keys:
            await self.store.expire(keys, self.seen_ttl_s)

    async def forget(self, verdict: Verdict) -> None:
        """Undo what :meth:`check` claimed, so the message is new again on the next poll."""
        for key, field_ in verdict.registered:
            await self.store.hdel(key, field_)
        if verdict.claimed:
            await self.store.delete(*verdict.claimed)
        verdict.claimed, verdict.registered = [], []

    async def remember(self, msg: dict) -> None:
        """Record an already delivered message (e.g. from an existing JSONL output file).

        Its id and URL become seen, and it joins the near-duplicate index unless it has
        ``duplicate_of`` itself.
        """
        mid = msg["id"]
        await self.store.set_nx(self.seen_key(mid), mid, self.seen_ttl_s)
        ukey = url_key(msg.get("url")) if is_specific_url(msg.get("url")) else None
        if ukey:
            await self.store.set_nx(self.seen_key(ukey), mid, self.seen_ttl_s)
        if not msg.get("duplicate_of"):
            await self._near(msg, Verdict(duplicate=False))
