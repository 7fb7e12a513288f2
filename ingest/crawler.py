"""The RSS/Atom crawler behind ``finpulse crawl``: feeds -> ``news.raw`` (Kafka) or a JSONL file.

One poll of a feed (:meth:`Crawler.poll`):

1. conditional GET (``If-None-Match`` / ``If-Modified-Since`` from the last *delivered* response),
   at most ``per_host`` requests at a time per host, total timeout, body size cap
   (:func:`finpulse.ingest.feeds.fetch_feed`);
2. parse into ``news.raw`` messages (:func:`finpulse.ingest.feeds.parse_feed`); garbage, billion laughs,
   HTML error pages fail this feed only;
3. de-duplicate (:class:`finpulse.ingest.dedup.Deduplicator`): exact duplicates are dropped and counted,
   near duplicates get ``duplicate_of``;
4. deliver the new messages, oldest event first, to the sink (Kafka topic ``news.raw`` of the
   settings' namespace, or a JSONL file) and wait for the acknowledgement;
5. only then confirm the dedup claims (until then they expire after a few minutes) and remember
   the feed's ``ETag`` / ``Last-Modified``. If delivery fails, the dedup claims of the batch are
   released and the validators kept, so the next poll fetches and delivers the same entries again;
   if the crawler is killed between claim and delivery, the unconfirmed claims expire and a later
   poll delivers the entries: a failure or a kill never loses a headline (it may deliver one twice,
   with the same id, which the pipeline counts once).

:func:`crawl_once` polls every feed once and returns a :class:`CrawlReport` (per-feed counts);
:func:`crawl_forever` polls each feed every ``interval`` seconds (jittered), backing off
exponentially while a feed fails, until ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finpulse.core.connections import async_redis
from finpulse.core.heartbeat import BEAT_INTERVAL_S, beat, heartbeat_path
from finpulse.core.metrics import metrics
from finpulse.core.opsserver import start_ops_server, tcp_check
from finpulse.core.settings import Settings
from finpulse.core.stackstate import resolve_bootstrap
from finpulse.ingest.dedup import Deduplicator, MemoryStore, RedisStore, canonical_url, is_specific_url
from finpulse.ingest.feeds import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT_S,
    FeedConfig,
    FeedError,
    FeedState,
    fetch_feed,
    load_feeds,
    parse_feed,
)
from finpulse.ingest.feeds import user_agent as feed_user_agent

log = logging.getLogger(__name__)

FEED_STATE_TTL_S = 30 * 86400


@dataclass
class FeedResult:
    """The outcome of one poll of one feed.

    :param name: feed name.
    :param url: feed URL.
    :param status: ``ok``, ``not_modified`` (HTTP 304) or ``failed``.
    :param new: messages delivered (near duplicates included).
    :param duplicate: exact duplicates dropped (seen before, by id or canonical URL).
    :param near_duplicate: delivered messages marked ``duplicate_of`` (part of ``new``).
    :param invalid: entries that could not become a message (no title, schema, oversized).
    :param reason: ``code: detail`` when ``failed``.
    :param http_status: final HTTP status, when a response arrived.
    :param elapsed_s: wall time of the poll.
    :param warnings: tolerated problems (e.g. an encoding override) and the invalid entries' reasons.
    :param next_poll_s: seconds until the next poll (``crawl_forever`` only).
    """

    name: str
    url: str
    status: str = "failed"
    new: int = 0
    duplicate: int = 0
    near_duplicate: int = 0
    invalid: int = 0
    reason: str | None = None
    http_status: int | None = None
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    next_poll_s: float | None = None

    @property
    def failed(self) -> bool:
        """The poll failed (``reason`` says why)."""
        return self.status == "failed"

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class CrawlReport:
    """The per-feed results of :func:`crawl_once`.

    :param results: one :class:`FeedResult` per feed, in configuration order.
    :param elapsed_s: wall time of the whole round.
    """

    results: list[FeedResult]
    elapsed_s: float = 0.0

    @property
    def totals(self) -> dict[str, int]:
        """Sums over feeds: ``new``, ``duplicate``, ``near_duplicate``, ``invalid``, ``failed`` (feeds)."""
        return {
            "new": sum(r.new for r in self.results),
            "duplicate": sum(r.duplicate for r in self.results),
            "near_duplicate": sum(r.near_duplicate for r in self.results),
            "invalid": sum(r.invalid for r in self.results),
            "failed": sum(1 for r in self.results if r.failed),
        }

    def to_dict(self) -> dict:
        """A JSON-ready dict (``results``, ``totals``, ``elapsed_s``)."""
        return {"results": [r.to_dict() for r in self.results], "totals": self.totals,
                "elapsed_s": round(self.elapsed_s, 3)}

    def format(self) -> str:
        """A plain-text table for the command line, one line per feed plus a total."""
        width = max([len(r.name) for r in self.results] + [4])
        lines = [f"{'feed':<{width}}  {'status':<12} {'new':>5} {'dup':>5} {'near':>5} {'inval':>5}  reason"]
        for r in self.results:
            lines.append(f"{r.name:<{width}}  {r.status:<12} {r.new:>5} {r.duplicate:>5} {r.near_duplicate:>5} "
                         f"{r.invalid:>5}  {r.reason or ''}".rstrip())
        t = self.totals
        lines.append(f"{'total':<{width}}  {str(t['failed']) + ' failed':<12} {t['new']:>5} {t['duplicate']:>5} "
                     f"{t['near_duplicate']:>5} {t['invalid']:>5}")
        return "\n".join(lines)


# --- sinks ---------------------------------------------------------------------------------------

class KafkaSink:
    """Delivers to ``news.raw`` of the settings' namespace (topic created if missing).

    :param settings: broker, namespace, partitions.
    :param producer: a :class:`finpulse.ingest.producer.NewsProducer` to reuse (then not closed here).
    """

    def __init__(self, settings: Settings, producer: Any = None):
        self.settings = settings
        self._producer = producer
        self._owned = producer is None

    async def start(self) -> None:
        """Connect (in a thread: kafka-python blocks) and create the topic if missing."""
        if self._producer is None:
            from finpulse.ingest.producer import NewsProducer

            self._producer = await asyncio.to_thread(NewsProducer, self.settings)

    async def send(self, messages: list[dict]) -> None:
        """Produce ``messages`` in order and wait until all are acknowledged.

        :raises finpulse.ingest.producer.ProduceError: when any was not.
        """
        await self.start()
        await asyncio.to_thread(self._producer.send_many, messages)

    async def close(self) -> None:
        """Flush and close the producer if this sink created it."""
        if self._producer is not None and self._owned:
            await asyncio.to_thread(self._producer.close)
            self._producer = None


class JsonlSink:
    """Appends messages to a JSONL file (one compact JSON object per line), fsync'ed per batch.

    :param path: the output file (created with its directory; appended to when it exists).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the directory; terminate a last line left partial by a crash."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")

    def existing(self) -> Iterator[dict]:
        """The messages already in the file (unparsable lines are skipped with a warning)."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("%s line %d: not JSON, ignored for de-duplication", self.path, n)
                    continue
                if isinstance(msg, dict) and msg.get("id") and msg.get("title") and msg.get("published_at"):
                    yield msg

    def _write(self, messages: list[dict]) -> None:
        data = "".join(json.dumps(m, ensure_ascii=False, separators=(",", ":")) + "\n" for m in messages)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    async def send(self, messages: list[dict]) -> None:
        """Append ``messages`` and fsync."""
        async with self._lock:
            await asyncio.to_thread(self._write, messages)

    async def close(self) -> None:
        """Nothing to close (every batch is written and synced)."""


# --- the crawler ---------------------------------------------------------------------------------

class Crawler:
    """Polls feeds and delivers new headlines; holds the HTTP session, sink, dedup and feed state.

    Use as an async context manager (``async with Crawler(...) as c: await c.crawl_once()``).

    :param feeds: the feeds (:class:`~finpulse.ingest.feeds.FeedConfig` list) or the path of a feeds TOML.
    :param settings: namespace, Kafka and Redis addresses, ``future_tolerance_s``, payload limit.
    :param output: a ``.jsonl`` path to write to instead of Kafka.
    :param redis: a ``redis.asyncio`` client for dedup and feed state (not closed here); default: one
        from ``settings.redis_url``, or in-process memory when that is empty.
    :param sink: a custom sink (``async send(list[dict])``, ``async start()``, ``async close()``);
        overrides ``output``.
    :param timeout_s: total timeout of one fetch (default 20 s).
    :param max_bytes: body size cap (default 5 MiB, after decompression).
    :param per_host: concurrent requests per host (default 2).
    :param jitter: relative jitter of poll intervals (default 0.1 = +-10 %).
    :param max_backoff_s: longest delay between polls of a failing feed (default 1 h; never shorter
        than the feed's interval).
    :param user_agent: the ``User-Agent`` header (default: :func:`finpulse.ingest.feeds.user_agent` of
        ``settings.crawl_contact``).
    :param seen_ttl_s: how long ids / URLs are remembered for dedup (default 14 days).
    :param near_window_s: event-time window of near-duplicate detection (default 12 h).
    :param rng: ``random.Random`` for jitter (tests pass a seeded one).
    """

    def __init__(self, feeds: Sequence[FeedConfig] | str | Path, settings: Settings, *,
                 output: str | Path | None = None, redis: Any = None, sink: Any = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES, per_host: int = 2,
                 jitter: float = 0.1, max_backoff_s: float = 3600.0, user_agent: str | None = None,
                 seen_ttl_s: int = 14 * 86400, near_window_s: int = 12 * 3600, rng: random.Random | None = None):
        self.feeds: list[FeedConfig] = load_feeds(feeds) if isinstance(feeds, (str, Path)) else list(feeds)
        names = [f.name for f in self.feeds]
        if len(set(names)) != len(names):
            raise ValueError("feed names must be unique")
        if per_host < 1:
            raise ValueError("per_host must be >= 1")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.settings = settings
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.per_host = per_host
        self.jitter = jitter
        self.max_backoff_s = max_backoff_s
        if user_agent is None:
            user_agent = feed_user_agent(settings.crawl_contact)
            if not settings.crawl_contact.strip():
                log.warning("no crawl contact: set FINPULSE_CRAWL_CONTACT (your name and e-mail) so that "
                            "publishers can reach you; some (the SEC) block anonymous crawlers")
        self.user_agent = user_agent
        self.rng = rng or random.Random()
        if sink is not None:
            self.sink = sink
        elif output is not None:
            self.sink = JsonlSink(output)
        else:
            self.sink = KafkaSink(settings)
        self._redis = redis
        self._own_redis = False
        self._seen_ttl_s = seen_ttl_s
        self._near_window_s = near_window_s
        self.dedup: Deduplicator | None = None
        self.states: dict[str, FeedState] = {}
        self._host_sems: dict[str, asyncio.Semaphore] = {}
        self._session: Any = None
        self._started = False

    @property
    def prefix(self) -> str:
        """Key prefix of the crawler's Redis keys, ``finpulse:<ns>:crawl``."""
        return f"{self.settings.redis_prefix}:crawl"

    async def start(self) -> None:
        """Open the HTTP session, connect Redis and the sink (idempotent)."""
        if self._started:
            return
        import aiohttp

        if self._redis is None and self.settings.redis_url:

            self._redis = async_redis(self.settings.redis_url)
            self._own_redis = True
        store = RedisStore(self._redis) if self._redis is not None else MemoryStore()
        self.dedup = Deduplicator(store, self.prefix, seen_ttl_s=self._seen_ttl_s, near_window_s=self._near_window_s)
        await self.sink.start()
        if isinstance(store, MemoryStore) and isinstance(self.sink, JsonlSink):
            primed = 0
            for msg in self.sink.existing():  # a later run into the same file does not repeat it
                await self.dedup.remember(msg)
                primed += 1
            if primed:
                log.info("de-duplication primed with %d messages from %s", primed, self.sink.path)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=self.per_host, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True)
        self._started = True

    async def close(self) -> None:
        """Close the session, the sink, and the Redis client if this crawler created it."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        try:
            await self.sink.close()
        finally:
            if self._own_redis and self._redis is not None:
                await self._redis.aclose()
                self._redis = None
            self._started = False

    async def __aenter__(self) -> Crawler:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # --- feed state ------------------------------------------------------------------------------

    def _state_key(self, feed: FeedConfig) -> str:
        return f"{self.prefix}:feed:{feed.name}"

    async def _state(self, feed: FeedConfig) -> FeedState:
        state = self.states.get(feed.name)
        if state is None:
            state = FeedState(url=feed.url)
            if self.dedup is not None:
                try:
                    (saved,) = await self.dedup.store.hgetall_many([self._state_key(feed)])
                    if saved.get("url") == feed.url:
                        state = FeedState.from_dict(saved)
                except Exception as exc:  # noqa: BLE001 - only an optimisation (conditional GET)
                    log.warning("feed %s: could not load its state: %r", feed.name, exc)
            self.states[feed.name] = state
        if state.url != feed.url:  # validators of another URL are meaningless
            state.etag = state.last_modified = None
            state.url = feed.url
        return state

    async def _save_state(self, feed: FeedConfig, state: FeedState) -> None:
        assert self.dedup is not None
        key = self._state_key(feed)
        try:
            await self.dedup.store.delete(key)
            for k, v in state.to_dict().items():
                await self.dedup.store.hset_ttl(key, k, v, FEED_STATE_TTL_S)
        except Exception as exc:  # noqa: BLE001 - only an optimisation (conditional GET)
            log.warning("feed %s: could not save its state: %r", feed.name, exc)

    def _host_sem(self, host: str) -> asyncio.Semaphore:
        sem = self._host_sems.get(host)
        if sem is None:
            sem = self._host_sems[host] = asyncio.Semaphore(self.per_host)
        return sem

    def next_delay(self, feed: FeedConfig, failures: int, retry_after: float | None = None) -> float:
        """Seconds until the next poll of ``feed``.

        ``interval`` when healthy; after ``n`` consecutive failures ``interval * 2**n`` capped at
        ``max_backoff_s`` (but never below ``interval``), at least the server's ``Retry-After``
        (also capped); then jittered by +-``jitter``.

        :param feed: the feed.
        :param failures: consecutive failures so far.
        :param retry_after: the server's ``Retry-After`` in seconds, if any.
        """
        delay = feed.interval
        if failures > 0:
            delay = max(feed.interval, min(self.max_backoff_s, feed.interval * 2 ** min(failures, 30)))
        if retry_after:
            delay = max(delay, min(retry_after, max(self.max_backoff_s, feed.interval)))
        return delay * self.rng.uniform(1 - self.jitter, 1 + self.jitter)

    # --- one poll --------------------------------------------------------------------------------

    def _fit(self, msg: dict) -> dict | None:
        """``msg`` within ``max_payload_bytes`` (summary dropped if needed), or None."""
        from finpulse.ingest.producer import encode_message

        limit = self.settings.max_payload_bytes
        for candidate in (msg, {**msg, "summary": None}):
            if len(encode_message(candidate, validate=False)) <= limit:
                return candidate
        return None

    async def poll(self, feed: FeedConfig) -> FeedResult:
        """Fetch, parse, de-duplicate and deliver one feed. Never raises (but for cancellation).

        :param feed: the feed to poll.
        :returns: its :class:`FeedResult`.
        """
        await self.start()
        assert self.dedup is not None
        t0 = time.monotonic()
        result = FeedResult(name=feed.name, url=feed.url)
        state = await self._state(feed)
        retry_after = None
        try:
            async with self._host_sem(feed.host):
                fetched = await fetch_feed(self._session, feed.url, etag=state.etag,
                                           last_modified=state.last_modified, timeout_s=self.timeout_s,
                                           max_bytes=self.max_bytes, user_agent=self.user_agent)
            result.http_status = fetched.status
            if fetched.redirected:
                level = logging.WARNING if any(s in (301, 308) for s in fetched.redirected) else logging.INFO
                log.log(level, "feed %s: redirected %s to %s (update the feeds file if permanent)",
                        feed.name, fetched.redirected, fetched.url)
            if fetched.not_modified:
                result.status = "not_modified"
            else:
                await self._deliver(feed, fetched, result)
                state.etag = fetched.headers.get("etag")
                state.last_modified = fetched.headers.get("last-modified")
                await self._save_state(feed, state)
                result.status = "ok"
            state.failures, state.last_error = 0, None
        except FeedError as exc:
            retry_after = exc.retry_after
            result.reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken feed must not stop the others
            log.exception("feed %s: unexpected error", feed.name)
            result.reason = f"internal: {exc!r}"
        m = metrics()
        m.crawler_fetches.labels(outcome=result.status if not result.failed else
                                 "failed:" + (result.reason or "unknown").split(":", 1)[0]).inc()
        for verdict in ("new", "duplicate", "near_duplicate", "invalid"):
            if getattr(result, verdict):
                m.crawler_headlines.labels(verdict=verdict).inc(getattr(result, verdict))
        if result.failed:
            state.failures += 1
            state.last_error = result.reason
            log.warning("feed %s (%s) failed (%d in a row): %s", feed.name, feed.url, state.failures, result.reason)
        else:
            log.info("feed %s: %s, %d new (%d near-dup), %d duplicate, %d invalid", feed.name, result.status,
                     result.new, result.near_duplicate, result.duplicate, result.invalid)
        result.elapsed_s = time.monotonic() - t0
        result.next_poll_s = self.next_delay(feed, state.failures, retry_after)
        return result

    async def _deliver(self, feed: FeedConfig, fetched: Any, result: FeedResult) -> None:
        assert self.dedup is not None
        parsed = await asyncio.to_thread(parse_feed, fetched.body, feed, headers=fetched.headers, url=fetched.url,
                                         fetched_at=fetched.fetched_at,
                                         future_tolerance_s=self.settings.future_tolerance_s)
        result.warnings.extend(parsed.warnings)
        result.warnings.extend(parsed.invalid)
        result.invalid = len(parsed.invalid)
        for w in parsed.warnings:
            log.info("feed %s: %s", feed.name, w)
        for why in parsed.invalid:
            log.warning("feed %s: skipped %s", feed.name, why)
        messages = []
        for msg in parsed.messages:
            fitted = self._fit(msg)
            if fitted is None:
                result.invalid += 1
                result.warnings.append(f"entry {msg['id']!r}: larger than max_payload_bytes")
                log.warning("feed %s: skipped entry %r: larger than max_payload_bytes", feed.name, msg["id"])
                continue
            messages.append(fitted)
        # oldest first: the format is fixed-width RFC 3339 UTC, so strings sort in time order
        messages.sort(key=lambda m: m["published_at"])
        url_counts = Counter(canonical_url(m.get("url")) for m in messages if is_specific_url(m.get("url")))
        verdicts, out = [], []
        try:
            try:
                for msg in messages:
                    shared = url_counts.get(canonical_url(msg.get("url")), 0) > 1
                    verdict = await self.dedup.check(msg, use_url=not shared)
                    if verdict.duplicate:
                        result.duplicate += 1
                        continue
                    verdicts.append(verdict)
                    if verdict.duplicate_of:
                        msg = {**msg, "duplicate_of": verdict.duplicate_of}
                        result.near_duplicate += 1
                    out.append(msg)
            except Exception as exc:
                raise FeedError("dedup", repr(exc)) from exc
            if out:
                try:
                    await self.sink.send(out)
                except Exception as exc:
                    raise FeedError("deliver", repr(exc)) from exc
        except BaseException:
            # not delivered: release the claims so the next poll delivers these entries
            for verdict in verdicts:
                try:
                    await self.dedup.forget(verdict)
                except Exception as exc:  # noqa: BLE001
                    log.error("feed %s: could not release dedup claims %s: %r", feed.name, verdict.claimed, exc)
            result.near_duplicate = result.duplicate = 0
            raise
        result.new = len(out)
        try:
            await self.dedup.confirm(verdicts)
        except Exception as exc:  # noqa: BLE001 - delivered; the claims expire and a later poll repeats them
            log.error("feed %s: delivered %d headlines but could not confirm their dedup claims (%r): they may be "
                      "delivered again (same ids, de-duplicated downstream)", feed.name, len(out), exc)

    # --- rounds ----------------------------------------------------------------------------------

    async def crawl_once(self) -> CrawlReport:
        """Poll every feed once, concurrently (per-host limit applies).

        :returns: a :class:`CrawlReport` with one result per feed, in configuration order.
        """
        await self.start()
        t0 = time.monotonic()
        results = await asyncio.gather(*(self.poll(f) for f in self.feeds))
        return CrawlReport(results=list(results), elapsed_s=time.monotonic() - t0)

    async def run(self, stop: asyncio.Event | None = None,
                  on_result: Callable[[FeedResult], Awaitable[None] | None] | None = None,
                  serve_ops: bool = False) -> None:
        """Poll each feed on its own schedule until ``stop`` is set.

        The first poll of each feed happens within ``jitter * interval`` of the start; then every
        :meth:`next_delay`. Setting ``stop`` ends the waits at once; a poll in progress is finished
        (a delivery is never cut in half).

        :param stop: event that ends the loop; ``None`` runs until cancelled.
        :param on_result: called (sync or async) with every :class:`FeedResult`.
        :param serve_ops: serve ``/livez``, ``/readyz`` (Redis, the broker) and ``/metrics`` on
            ``crawler_ops_port`` while running (the ``finpulse crawl`` command does).
        """
        await self.start()
        stop = stop or asyncio.Event()
        ops = await self._start_ops() if serve_ops else None
        try:
            await self._run(stop, on_result)
        finally:
            if ops is not None:
                await ops.close()

    async def _start_ops(self):
        checks = {}
        if self._redis is not None:
            redis = self._redis

            async def redis_ok() -> None:
                await redis.ping()

            checks["redis"] = redis_ok
        if isinstance(self.sink, KafkaSink):
            settings = self.settings

            async def broker_ok() -> None:
                await tcp_check(resolve_bootstrap(settings))

            checks["broker"] = broker_ok
        return await start_ops_server(self.settings.ops_host, self.settings.crawler_ops_port, checks,
                                      metrics().registry, what="crawler operations endpoints")

    async def _run(self, stop: asyncio.Event,
                   on_result: Callable[[FeedResult], Awaitable[None] | None] | None) -> None:

        async def wait(seconds: float) -> None:
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
            except TimeoutError:
                pass

        async def loop(feed: FeedConfig) -> None:
            await wait(self.rng.uniform(0, self.jitter * feed.interval))
            while not stop.is_set():
                try:
                    result = await self.poll(feed)
                    if on_result is not None:
                        ret = on_result(result)
                        if inspect.isawaitable(ret):
                            await ret
                    delay = result.next_poll_s if result.next_poll_s is not None else feed.interval
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - e.g. a failing on_result; keep polling
                    log.exception("feed %s: error in the poll loop", feed.name)
                    delay = feed.interval
                await wait(delay)

        async def heartbeat() -> None:
            path = heartbeat_path(self.settings, "crawler")
            while not stop.is_set():
                beat(path)
                await wait(BEAT_INTERVAL_S)

        await asyncio.gather(heartbeat(), *(loop(f) for f in self.feeds))


async def crawl_once(feeds: Sequence[FeedConfig] | str | Path, settings: Settings, *,
                     output: str | Path | None = None, redis: Any = None, **options: Any) -> CrawlReport:
    """Poll every feed once and deliver the new headlines.

    :param feeds: feeds TOML path, or a list of :class:`~finpulse.ingest.feeds.FeedConfig`.
    :param settings: namespace, ``kafka_bootstrap``, ``redis_url`` (empty: in-memory dedup, which
        with ``output`` is primed from the ids already in that file).
    :param output: write JSONL to this file instead of producing to Kafka.
    :param redis: a ``redis.asyncio`` client to use instead of ``settings.redis_url`` (not closed).
    :param options: further :class:`Crawler` parameters (``timeout_s``, ``max_bytes``, ``per_host``,
        ``jitter``, ``max_backoff_s``, ``user_agent``, ``seen_ttl_s``, ``near_window_s``, ``sink``).
    :returns: :class:`CrawlReport`; ``report.format()`` is the table the CLI prints.
    """
    async with Crawler(feeds, settings, output=output, redis=redis, **options) as crawler:
        return await crawler.crawl_once()


async def crawl_forever(feeds: Sequence[FeedConfig] | str | Path, settings: Settings, *,
                        output: str | Path | None = None, redis: Any = None, stop: asyncio.Event | None = None,
                        on_result: Callable[[FeedResult], Awaitable[None] | None] | None = None,
                        serve_ops: bool = False, **options: Any) -> None:
    """Poll every feed on its interval until ``stop`` is set (or the task is cancelled).

    The CLI typically sets ``stop`` from SIGINT/SIGTERM handlers
    (``loop.add_signal_handler(signal.SIGTERM, stop.set)``) for a clean shutdown.

    :param feeds: feeds TOML path, or a list of :class:`~finpulse.ingest.feeds.FeedConfig`.
    :param settings: as for :func:`crawl_once`.
    :param output: write JSONL to this file instead of producing to Kafka.
    :param redis: a ``redis.asyncio`` client to use instead of ``settings.redis_url`` (not closed).
    :param stop: event that ends the crawl.
    :param on_result: called (sync or async) with each :class:`FeedResult` (e.g. to log or count).
    :param serve_ops: serve the operations endpoints on ``crawler_ops_port`` (:meth:`Crawler.run`).
    :param options: further :class:`Crawler` parameters.
    """
    async with Crawler(feeds, settings, output=output, redis=redis, **options) as crawler:
        await crawler.run(stop=stop, on_result=on_result, serve_ops=serve_ops)
