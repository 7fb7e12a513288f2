"""The RSS/Atom crawler against a real local HTTP server, a real Redis and a real broker."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import random
import time
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from finpulse.core.messages import validate
from finpulse.core.settings import REPO_ROOT, Settings
from finpulse.ingest.crawler import Crawler, CrawlReport, FeedResult, JsonlSink, crawl_forever, crawl_once
from finpulse.ingest.dedup import Deduplicator, MemoryStore, canonical_url, entry_id, sha256_hex, title_tokens
from finpulse.ingest.feeds import (
    USER_AGENT,
    FeedConfig,
    FeedConfigError,
    FeedError,
    check_entities,
    clean_text,
    feeds_from_data,
    load_feeds,
)

FEEDS = Path(__file__).parent / "feeds"


# --- a local feed server ---------------------------------------------------------------------------

class FeedServer:
    """aiohttp.web on 127.0.0.1:<free port>, serving tests/feeds/* and misbehaving endpoints."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.active = 0
        self.max_active = 0
        self.port = 0
        self.closing = asyncio.Event()
        self.app = web.Application()
        self.app.middlewares.append(self._record)
        r = self.app.router
        r.add_get("/feeds/{name}", self.static)
        r.add_get("/latin1", self.latin1)
        r.add_get("/etag", self.etag)
        r.add_get("/redirect", self.redirect)
        r.add_get("/loop", self.loop)
        r.add_get("/gzip", self.gzipped)
        r.add_get("/gzip-bomb", self.gzip_bomb)
        r.add_get("/huge", self.huge)
        r.add_get("/huge-declared", self.huge_declared)
        r.add_get("/slow", self.slow)
        r.add_get("/slow-feed/{n}", self.slow_feed)
        r.add_get("/status/{code}", self.status)
        r.add_get("/garbage", self.garbage)

    @web.middleware
    async def _record(self, request, handler):
        self.requests.append((request.path, dict(request.headers)))
        return await handler(request)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    async def static(self, request):
        name = request.match_info["name"]
        path = FEEDS / name
        if not path.is_file():
            raise web.HTTPNotFound()
        ctype = "text/html" if name.endswith(".html") else "application/xml"
        return web.Response(body=path.read_bytes(), content_type=ctype)

    async def redirect(self, request):
        raise web.HTTPMovedPermanently(location="/feeds/atom.xml")

    async def loop(self, request):
        raise web.HTTPFound(location="/loop")

    async def garbage(self, request):
        return web.Response(body=b"\x00\x01\x02{not xml}\xff" * 100, content_type="application/octet-stream")

    async def latin1(self, request):
        body = (FEEDS / "latin1_header.xml").read_bytes()
        return web.Response(body=body, headers={"Content-Type": "text/xml; charset=iso-8859-1"})

    async def etag(self, request):
        headers = {"ETag": '"v1"', "Last-Modified": "Tue, 05 Mar 2024 15:00:00 GMT"}
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers=headers)
        return web.Response(body=(FEEDS / "rss10.rdf").read_bytes(), content_type="application/rdf+xml",
                            headers=headers)

    async def gzipped(self, request):
        body = gzip.compress((FEEDS / "rss20.xml").read_bytes())
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"})

    async def gzip_bomb(self, request):
        body = gzip.compress(b"<rss>" + b" " * (50 * 1024 * 1024), compresslevel=1)
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"})

    async def huge(self, request):
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"<item><title>x</title></item>" * 4096
        try:
            sent = 0
            while sent < 50 * 1024 * 1024:
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def huge_declared(self, request):
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        resp.content_length = 50 * 1024 * 1024
        await resp.prepare(request)
        try:
            await resp.write(b"<rss>")
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def slow(self, request):
        try:
            await asyncio.wait_for(self.closing.wait(), 5)
        except TimeoutError:
            pass
        return web.Response(text="too late")

    async def slow_feed(self, request):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0.15)
        finally:
            self.active -= 1
        body = (FEEDS / "rss10.rdf").read_bytes().replace(b"story/", f"s{request.match_info['n']}/".encode())
        return web.Response(body=body, content_type="application/xml")

    async def status(self, request):
        code = int(request.match_info["code"])
        return web.Response(status=code, text="nope", headers={"Retry-After": "120"} if code == 503 else {})


@pytest_asyncio.fixture
async def server():
    srv = FeedServer()
    runner = web.AppRunner(srv.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = site._server.sockets[0].getsockname()[1]
    yield srv
    srv.closing.set()
    await runner.cleanup()


def feed(server: FeedServer, name: str, path: str, **kw) -> FeedConfig:
    return FeedConfig(name=name, url=server.url(path), **kw)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def by_name(report: CrawlReport) -> dict[str, FeedResult]:
    return {r.name: r for r in report.results}


def memory_settings(namespace: str) -> Settings:
    return Settings(namespace=namespace, redis_url="", kafka_bootstrap="")


# --- configuration, ids, text --------------------------------------------------------------------

def test_sample_config_loads_and_bad_configs_are_refused(tmp_path):
    feeds = load_feeds(REPO_ROOT / "config" / "feeds.toml")
    assert len(feeds) >= 3 and all(f.url.startswith("https://") for f in feeds)
    assert len({f.name for f in feeds}) == len(feeds)
    base = {"name": "a", "url": "https://x.example/rss"}
    for bad, needle in [({**base, "intervall": 60}, "unknown key"),
                        ({**base, "url": "ftp://x.example/rss"}, "http(s)"),
                        ({**base, "tickers": ["aapl"]}, "tickers"),
                        ({**base, "interval": 0}, "interval")]:
        with pytest.raises(FeedConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            feeds_from_data({"feeds": [bad]})
    with pytest.raises(FeedConfigError, match="duplicate"):
        feeds_from_data({"feeds": [base, base]})
    (tmp_path / "f.toml").write_text("[[feeds]\nname=")
    with pytest.raises(FeedConfigError, match="TOML"):
        load_feeds(tmp_path / "f.toml")


def test_canonical_url_and_id_rules():
    assert canonical_url("HTTPS://WWW.Example.COM:443/News/A?utm_source=x&b=2&a=1&fbclid=z&gclid=q#frag") \
        == "https://www.example.com/News/A?a=1&b=2"
    assert canonical_url("http://Example.com") == "http://example.com/"
    assert canonical_url("/relative") is None and canonical_url("urn:x") is None
    # GUID: URIs as they are, bare GUIDs scoped by the feed host, long ones hashed
    assert entry_id(guid="tag:x.com,2024:1", url=None, source="s", title="t", scope="h") == "tag:x.com,2024:1"
    assert entry_id(guid="12345", url="https://x.com/a", source="s", title="t", scope="x.com") == "x.com/12345"
    assert entry_id(guid="g" * 600, url=None, source="s", title="t").startswith("sha256:")
    # else the canonical URL, else source + title
    assert entry_id(guid=None, url="https://X.com/a?utm_medium=rss", source="s", title="t") \
        == sha256_hex("https://x.com/a")
    assert entry_id(guid=None, url=None, source="s", title="t") == sha256_hex("s\x1ft")


def test_clean_text_and_entity_check():
    assert clean_text("<b>Fed</b> hikes &amp;amp; AT&amp;T <script>x()</script>", is_html=True) == "Fed hikes & AT&T"
    assert clean_text("Q&A: 5 < 6") == "Q&A: 5 < 6"
    assert clean_text("  Caf&eacute;\n\tdu  march&#233; ") == "Café du marché"
    check_entities(b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY nbsp "&#160;">]><rss/>')
    check_entities((FEEDS / "rss20.xml").read_bytes())
    for doc in [(FEEDS / "billion_laughs.xml").read_bytes(),
                b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
                b'<!DOCTYPE r [<!ENTITY % p "x">]><r/>',
                (FEEDS / "billion_laughs.xml").read_text().encode("utf-16")]:
        with pytest.raises(FeedError) as err:
            check_entities(doc)
        assert err.value.code == "xml_entities"


def test_title_normalisation_for_near_duplicates():
    a = title_tokens("Acme Corp shares plunge 12% after profit warning")
    assert title_tokens("UPDATE 2-Acme Corp shares plunge 12% after profit warning - Reuters") == a
    assert title_tokens("Acme Corp shares plunge 12% after profit warning | MarketWatch") == a
    assert "analysts" in title_tokens("Fed raises rates - analysts expect more")


# --- formats ---------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_rss20_rss10_atom_are_parsed(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    feeds = [feed(server, "ex", "/feeds/rss20.xml", tickers=("T",), tags=("us",)),
             feed(server, "rdf", "/feeds/rss10.rdf"), feed(server, "atom", "/feeds/atom.xml")]
    report = await crawl_once(feeds, memory_settings(namespace), output=out)
    assert [(r.status, r.new, r.invalid) for r in report.results] == [("ok", 3, 0), ("ok", 2, 0), ("ok", 2, 0)]
    assert "total" in report.format() and report.totals["new"] == 7
    msgs = read_jsonl(out)
    for m in msgs:
        validate("news.raw", m)
        assert m["published_at_inferred"] is False and m["fetched_at"].endswith("Z")
    got = {m["title"]: m for m in msgs}
    fed = got["Fed raises rates by 25bp & signals more hikes"]
    assert fed["id"] == "127.0.0.1/ex-1001" and fed["published_at"] == "2024-03-05T19:30:00.000Z"
    assert fed["summary"] == "The Federal Reserve raised its policy rate \u2014 again."
    assert fed["source"] == "ex" and fed["tickers"] == ["T"] and fed["tags"] == ["us"] and fed["lang"] == "en-us"
    assert got["Oil jumps 4% as OPEC+ extends output cuts"]["summary"] == "Brent crude rose to $85 & change."
    att = got["AT&T to sell DirecTV stake for $7.6 billion"]
    assert att["id"] == sha256_hex("https://www.example.com/news/att-directv")  # no GUID: canonical URL
    assert att["published_at"] == "2024-03-04T21:15:00.000Z"  # dc:date
    assert got["Sterling slips after weak UK retail sales"]["published_at"] == "2024-03-05T11:30:00.000Z"
    nv = got["Nvidia tops forecasts; shares up 9% & rising"]
    assert nv["url"] == "https://atom.example.org/articles/42"  # relative link resolved via xml:base
    assert nv["published_at"] == "2024-03-05T13:00:00.000Z" and nv["summary"] == "Revenue tripled."
    assert got["Treasury auction draws weak demand"]["published_at"] == "2024-03-05T11:00:00.000Z"  # updated
    # delivered oldest first within each feed
    ex = [m["published_at"] for m in msgs if m["source"] == "ex"]
    assert ex == sorted(ex)
    # the User-Agent names us, gzip is accepted
    path, headers = server.requests[0]
    assert headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("finpulse/")
    assert "gzip" in headers["Accept-Encoding"]


@pytest.mark.asyncio
async def test_user_agent_names_the_operator_when_a_contact_is_set(server, tmp_path, namespace, caplog):
    from finpulse.ingest.feeds import user_agent

    settings = Settings(namespace=namespace, redis_url="", kafka_bootstrap="",
                        crawl_contact="  Risk Desk Ltd   ops@riskdesk.example ")
    with caplog.at_level("WARNING", logger="finpulse.ingest.crawler"):
        await crawl_once([feed(server, "ex", "/feeds/rss20.xml")], settings, output=tmp_path / "c.jsonl")
    _, headers = server.requests[-1]
    assert headers["User-Agent"] == user_agent("Risk Desk Ltd ops@riskdesk.example")
    assert headers["User-Agent"].endswith("; Risk Desk Ltd ops@riskdesk.example)")
    assert "no crawl contact" not in caplog.text
    with caplog.at_level("WARNING", logger="finpulse.ingest.crawler"):
        await crawl_once([feed(server, "ex", "/feeds/rss20.xml")], memory_settings(namespace),
                         output=tmp_path / "d.jsonl")
    assert server.requests[-1][1]["User-Agent"] == USER_AGENT and "no crawl contact" in caplog.text
    for bad in ("ops@x.example (desk)", "ops@x.example\x00"):
        with pytest.raises(ValueError, match="crawl contact"):
            user_agent(bad)
    assert user_agent("ops@x.example\r\nX-Evil: 1").endswith("; ops@x.example X-Evil: 1)")  # no header injection


@pytest.mark.asyncio
async def test_missing_dates_fall_back_to_fetch_time(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    t0 = time.time()
    report = await crawl_once([feed(server, "undated", "/feeds/no_dates.xml")], memory_settings(namespace), output=out)
    r = report.results[0]
    assert (r.status, r.new, r.invalid) == ("ok", 3, 1) and "no title" in r.warnings[0]
    for m in read_jsonl(out):  # absent, far-future and epoch dates all become the fetch time
        assert m["published_at_inferred"] is True and m["published_at"] == m["fetched_at"]
        from finpulse.core.messages import parse_time

        assert abs(parse_time(m["published_at"]).timestamp() - t0) < 60


@pytest.mark.asyncio
async def test_declared_and_header_encodings(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    report = await crawl_once([feed(server, "cp", "/feeds/cp1252.xml"), feed(server, "latin", "/latin1")],
                              memory_settings(namespace), output=out)
    assert [r.status for r in report.results] == ["ok", "ok"]
    titles = {m["title"] for m in read_jsonl(out)}
    assert "\u201cSoci\u00e9t\u00e9 G\u00e9n\u00e9rale\u201d beats estimates \u2013 profit \u20ac1.2bn" in titles
    assert "B\u00f6rse: M\u00fcnchener R\u00fcck h\u00e4lt Prognose, Anleger \u00fcberrascht" in titles


# --- HTTP behaviour --------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_conditional_get_sends_validators_and_handles_304(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    async with Crawler([feed(server, "etag", "/etag")], memory_settings(namespace), output=out) as c:
        first = await c.crawl_once()
        second = await c.crawl_once()
    assert (first.results[0].status, first.results[0].new) == ("ok", 2)
    assert (second.results[0].status, second.results[0].http_status, second.results[0].new) == ("not_modified", 304, 0)
    (_, h1), (_, h2) = server.requests
    assert "If-None-Match" not in h1
    assert h2["If-None-Match"] == '"v1"' and h2["If-Modified-Since"] == "Tue, 05 Mar 2024 15:00:00 GMT"
    assert len(read_jsonl(out)) == 2


@pytest.mark.asyncio
async def test_redirects_and_gzip(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    report = by_name(await crawl_once([feed(server, "moved", "/redirect"), feed(server, "gz", "/gzip"),
                                       feed(server, "loop", "/loop")], memory_settings(namespace), output=out))
    assert (report["moved"].status, report["moved"].new) == ("ok", 2)
    assert (report["gz"].status, report["gz"].new) == ("ok", 3)
    assert report["loop"].failed and report["loop"].reason.startswith("redirects")


@pytest.mark.asyncio
async def test_garbage_feeds_are_skipped_and_the_others_keep_flowing(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    bad = {"malformed": "/feeds/malformed.xml", "html": "/feeds/html_error.html",
           "laughs": "/feeds/billion_laughs.xml", "garbage": "/garbage", "bomb": "/gzip-bomb", "huge": "/huge",
           "declared": "/huge-declared", "missing": "/status/404", "down": "/status/503", "slow": "/slow"}
    feeds = [feed(server, n, p) for n, p in bad.items()] + [feed(server, "good", "/feeds/rss10.rdf")]
    t0 = time.monotonic()
    async with Crawler(feeds, memory_settings(namespace), output=out, timeout_s=1.0, jitter=0.0,
                       per_host=16) as c:
        report = by_name(await c.crawl_once())
        assert c.states["down"].failures == 1
    assert time.monotonic() - t0 < 10
    codes = {n: (r.reason or "").split(":")[0] for n, r in report.items()}
    assert codes == {"malformed": "malformed", "html": "not_a_feed", "laughs": "xml_entities",
                     "garbage": "not_a_feed", "bomb": "too_large", "huge": "too_large", "declared": "too_large",
                     "missing": "http_404", "down": "http_503", "slow": "timeout", "good": ""}
    assert all(report[n].failed and report[n].new == 0 for n in bad)
    assert report["down"].next_poll_s == pytest.approx(600.0)  # backoff 300*2, above Retry-After 120
    assert (report["good"].status, report["good"].new) == ("ok", 2)
    assert {m["source"] for m in read_jsonl(out)} == {"good"}


@pytest.mark.asyncio
async def test_lenient_feed_accepts_salvaged_entries(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    report = await crawl_once([feed(server, "broken", "/feeds/malformed.xml", lenient=True)],
                              memory_settings(namespace), output=out)
    r = report.results[0]
    assert r.status == "ok" and r.new >= 1 and any("salvaged" in w for w in r.warnings)


@pytest.mark.asyncio
async def test_per_host_concurrency_limit(server, tmp_path, namespace):
    feeds = [feed(server, f"s{i}", f"/slow-feed/{i}") for i in range(6)]
    report = await crawl_once(feeds, memory_settings(namespace), output=tmp_path / "o.jsonl", per_host=2)
    assert all(r.status == "ok" for r in report.results)
    assert server.max_active == 2


def test_backoff_schedule():
    c = Crawler([FeedConfig("a", "https://x.example/a", interval=60)], memory_settings("t-backoff"),
                output="unused.jsonl", jitter=0.0, max_backoff_s=600)
    f = c.feeds[0]
    assert [c.next_delay(f, n) for n in range(6)] == [60, 120, 240, 480, 600, 600]
    assert c.next_delay(f, 1, retry_after=300) == 300
    assert c.next_delay(f, 1, retry_after=10**6) == 600
    c.jitter, c.rng = 0.1, random.Random(1)
    assert all(54 <= c.next_delay(f, 0) <= 66 for _ in range(100))


# --- de-duplication --------------------------------------------------------------------------------

async def _syndication_round(server, settings, out, redis=None):
    feeds = [feed(server, "wire", "/feeds/syndicated_a.xml"), feed(server, "portal", "/feeds/syndicated_b.xml")]
    async with Crawler(feeds, settings, output=out, redis=redis) as c:
        wire = await c.poll(feeds[0])  # the wire first, so "first copy" is deterministic
        portal = await c.poll(feeds[1])
    return wire, portal


def _check_syndication(wire, portal, msgs):
    assert (wire.new, wire.duplicate, wire.near_duplicate) == (2, 0, 0)
    # 77: near duplicate of wire a/1 (produced, marked); 78: same canonical URL as wire-2 (dropped);
    # 79: same words but another number (a different fact, not a duplicate); 80: unrelated
    assert (portal.new, portal.duplicate, portal.near_duplicate) == (3, 1, 1)
    by_id = {m["id"]: m for m in msgs}
    assert by_id["127.0.0.1/77"]["duplicate_of"] == "https://wire.example.com/a/1"
    assert by_id["127.0.0.1/79"]["duplicate_of"] is None and by_id["127.0.0.1/80"]["duplicate_of"] is None
    assert "127.0.0.1/78" not in by_id


@pytest.mark.asyncio
async def test_cross_feed_and_near_duplicates_in_redis(server, tmp_path, namespace, redis_client):
    settings = memory_settings(namespace)
    out = tmp_path / "crawl.jsonl"
    wire, portal = await _syndication_round(server, settings, out, redis=redis_client)
    _check_syndication(wire, portal, read_jsonl(out))
    key = f"finpulse:{namespace}:crawl:seen:https://wire.example.com/a/1"
    assert await redis_client.get(key) == b"https://wire.example.com/a/1"
    assert 13 * 86400 < await redis_client.ttl(key) <= 14 * 86400
    assert await redis_client.exists(f"finpulse:{namespace}:crawl:seen:{sha256_hex('https://wire.example.com/a/2')}")
    assert [k async for k in redis_client.scan_iter(f"finpulse:{namespace}:crawl:simhash:*")]
    # a second crawler process (same Redis) sees everything as duplicate
    wire2, portal2 = await _syndication_round(server, settings, out, redis=redis_client)
    assert (wire2.new, wire2.duplicate, portal2.new, portal2.duplicate) == (0, 2, 0, 4)
    assert len(read_jsonl(out)) == 5


@pytest.mark.asyncio
async def test_memory_dedup_behaves_the_same_and_is_primed_from_the_output(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    wire, portal = await _syndication_round(server, memory_settings(namespace), out)
    _check_syndication(wire, portal, read_jsonl(out))
    wire2, portal2 = await _syndication_round(server, memory_settings(namespace), out)  # a new process
    assert (wire2.new, portal2.new, portal2.duplicate) == (0, 0, 4)
    assert len(read_jsonl(out)) == 5


@pytest.mark.asyncio
async def test_entries_sharing_one_link_are_not_collapsed(server, tmp_path, namespace):
    out = tmp_path / "crawl.jsonl"
    report = await crawl_once([feed(server, "ir", "/feeds/shared_link.xml")], memory_settings(namespace), output=out)
    assert (report.results[0].new, report.results[0].duplicate) == (3, 0)
    assert len({m["id"] for m in read_jsonl(out)}) == 3


@pytest.mark.asyncio
async def test_near_duplicate_window_and_store_ttl():
    now = [1_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    d = Deduplicator(store, "finpulse:t:crawl", near_window_s=3600)
    base = {"title": "Acme Corp shares plunge 12% after profit warning"}
    v1 = await d.check({**base, "id": "a", "published_at": "2024-03-05T12:00:00Z"})
    v2 = await d.check({**base, "id": "b", "published_at": "2024-03-05T12:59:00Z"})
    v3 = await d.check({**base, "id": "c", "published_at": "2024-03-05T14:30:00Z"})  # outside the window
    assert (v1.duplicate_of, v2.duplicate_of, v3.duplicate_of) == (None, "a", None)
    assert (await d.check({**base, "id": "a", "published_at": "2024-03-05T12:00:00Z"})).duplicate
    await d.forget(v3)
    assert not (await d.check({**base, "id": "c", "published_at": "2024-03-05T14:30:00Z"})).duplicate
    now[0] += 15 * 86400  # seen keys expire
    assert not (await d.check({**base, "id": "a", "published_at": "2024-03-05T12:00:00Z"})).duplicate


@pytest.mark.asyncio
async def test_failed_delivery_loses_nothing(server, tmp_path, namespace, redis_client):
    class FlakySink(JsonlSink):
        fail = True

        async def send(self, messages):
            if FlakySink.fail:
                raise ConnectionError("broker down")
            await super().send(messages)

    out = tmp_path / "crawl.jsonl"
    f = feed(server, "etag", "/etag")
    async with Crawler([f], memory_settings(namespace), sink=FlakySink(out), redis=redis_client) as c:
        r1 = await c.poll(f)
        assert r1.failed and r1.reason.startswith("deliver") and r1.new == 0
        assert c.states["etag"].etag is None  # validators not remembered
        FlakySink.fail = False
        r2 = await c.poll(f)
        assert (r2.status, r2.new, r2.duplicate) == ("ok", 2, 0)
    assert "If-None-Match" not in server.requests[1][1]
    assert len(read_jsonl(out)) == 2
    # the validators of the delivered response are kept in Redis for the next process
    assert (await redis_client.hgetall(f"finpulse:{namespace}:crawl:feed:etag"))[b"etag"] == b'"v1"'


# --- crawl_forever -------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_crawl_forever_polls_on_interval_and_backs_off(server, tmp_path, namespace):
    feeds = [feed(server, "good", "/etag", interval=0.2), feed(server, "bad", "/status/500", interval=0.2)]
    stop = asyncio.Event()
    results: list[FeedResult] = []

    async def on_result(r: FeedResult) -> None:
        results.append(r)
        if sum(1 for x in results if x.name == "good") >= 6:
            stop.set()

    await asyncio.wait_for(crawl_forever(feeds, memory_settings(namespace), output=tmp_path / "o.jsonl",
                                         stop=stop, on_result=on_result, jitter=0.0, max_backoff_s=10), 15)
    good = [r for r in results if r.name == "good"]
    bad = [r for r in results if r.name == "bad"]
    assert good[0].status == "ok" and {r.status for r in good[1:]} == {"not_modified"}
    assert [r.next_poll_s for r in bad[:3]] == [0.4, 0.8, 1.6][:len(bad[:3])]
    assert 1 <= len(bad) < len(good)


@pytest.mark.asyncio
async def test_the_crawler_serves_its_metrics_and_health(server, tmp_path, namespace, caplog):
    import re

    import aiohttp

    feeds = [feed(server, "good", "/etag", interval=0.2), feed(server, "bad", "/status/500", interval=0.2)]
    stop = asyncio.Event()
    settings = memory_settings(namespace).with_overrides(crawler_ops_port=0)
    seen: list[FeedResult] = []
    scraped: dict[str, str] = {}

    async def on_result(r: FeedResult) -> None:
        seen.append(r)
        if len(seen) == 4:
            url = re.search(r"crawler operations endpoints listening on (\S+)", caplog.text).group(1)
            async with aiohttp.ClientSession() as http:
                for path in ("/livez", "/readyz", "/metrics"):
                    async with http.get(url + path) as resp:
                        scraped[path] = f"{resp.status} {await resp.text()}"
            stop.set()

    with caplog.at_level(logging.INFO, logger="finpulse.core.opsserver"):
        await asyncio.wait_for(crawl_forever(feeds, settings, output=tmp_path / "o.jsonl", stop=stop,
                                             on_result=on_result, jitter=0.0, serve_ops=True), 15)
    assert scraped["/livez"].startswith("200") and scraped["/readyz"].startswith("200")
    metrics_text = scraped["/metrics"]
    assert re.search(r'finpulse_crawler_fetches_total\{outcome="ok"\} [1-9]', metrics_text)
    assert re.search(r'finpulse_crawler_fetches_total\{outcome="failed:http_500"\} [1-9]', metrics_text)
    assert re.search(r'finpulse_crawler_headlines_total\{verdict="new"\} [1-9]', metrics_text)


# --- Kafka ---------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_crawl_produces_to_the_broker(server, namespace, kafka_bootstrap, redis_url):
    from kafka import KafkaConsumer, TopicPartition

    settings = Settings(namespace=namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, partitions=2)
    feeds = [feed(server, "ex", "/feeds/rss20.xml"), feed(server, "atom", "/feeds/atom.xml"),
             feed(server, "broken", "/feeds/html_error.html")]
    report = await crawl_once(feeds, settings)
    assert [r.new for r in report.results] == [3, 2, 0] and report.results[2].failed
    topic = f"news.raw.{namespace}"
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        assert len(parts) == 2
        consumer.assign(parts)
        consumer.seek_to_beginning()
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 5 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
    finally:
        consumer.close()
    assert len(got) == 5
    for rec in got:
        msg = json.loads(rec.value)
        validate("news.raw", msg)
        assert rec.key.decode() == msg["id"]
    # a second round delivers nothing new (Redis dedup, across processes)
    again = await crawl_once(feeds[:2], settings)
    assert again.totals["new"] == 0 and again.totals["duplicate"] == 5


async def test_a_kill_between_claim_and_delivery_cannot_lose_a_headline():
    """A claim lasts ``pending_ttl_s`` until the delivery confirms it: a crawler killed in between
    leaves a claim that expires, and a later poll delivers the headline (at worst twice, same id)."""
    now = [1_700_000_000.0]
    d = Deduplicator(MemoryStore(clock=lambda: now[0]), "finpulse:t:crawl")
    msg = {"id": "a-1", "title": "Regional lender halts withdrawals", "published_at": "2024-05-06T09:00:00Z"}
    assert not (await d.check(msg)).duplicate
    # ... killed here: produced nothing, confirmed nothing
    now[0] += 60
    assert (await d.check(msg)).duplicate  # a concurrent poll meanwhile leaves it to the first
    now[0] += d.pending_ttl_s
    again = await d.check(msg)
    assert not again.duplicate  # the claim expired: this poll delivers it
    await d.confirm([again])
    now[0] += 7 * 86400
    assert (await d.check(msg)).duplicate  # delivered and confirmed: remembered for seen_ttl_s
