"""WindowStore against a real redis-server (fixtures ``redis_client`` from tests/conftest.py)."""

import pytest

from finpulse.alerts.store import IDLE_AFTER_S, WindowStore, delete_namespace
from finpulse.alerts.windows import parse_time
from finpulse.core import constants as C
from finpulse.core.rfc3339 import format as format_time

pytestmark = pytest.mark.asyncio

T0 = int(parse_time("2026-01-05T10:00:00Z"))
SCORES = {"negative": -0.8, "positive": 0.6, "neutral": 0.0}


def art(i, ts, sentiment="negative", *, topic="Macro", tickers=("AAPL",), score=None, **extra):
    return {"id": f"a{i}", "published_at": format_time(ts), "title": f"headline {i}", "url": f"https://news.test/{i}",
            "source": "wire", "topic": topic, "sentiment": sentiment,
            "sentiment_score": SCORES[sentiment] if score is None else score, "tickers": list(tickers),
            "model_version": "m1", **extra}


def keys_of(raw):
    return sorted(k.decode() if isinstance(k, bytes) else k for k in raw)


async def test_counts_per_scope(redis_client):
    store = WindowStore(redis_client, "t")
    batch = [art(1, T0 + 5, "negative", tickers=["aapl", "$MSFT"]),
             art(2, T0 + 65, "positive", topic="Earnings", tickers=["AAPL"]),
             art(3, T0 + 125, "neutral", tickers=[]),
             art(4, T0 + 130, "negative", topic="Earnings", tickers=["MSFT"], score=-0.5)]
    res = await store.record(batch)
    assert (res.counted, res.duplicates, res.syndicated, res.late, res.invalid) == (4, 0, 0, 0, [])
    assert res.touched["all"] == [T0, T0 + 60, T0 + 120] and res.touched["ticker:MSFT"] == [T0, T0 + 120]
    end = T0 + 900
    a = await store.stats("all", end, 900)
    assert (a.n, a.negative, a.positive, a.neutral) == (4, 2, 1, 1)
    assert a.sum_score == pytest.approx(-0.7) and a.negative_rate == 0.5 and a.mean_score == pytest.approx(-0.175)
    assert a.model_versions == ("m1",) and (a.start, a.end) == (T0, T0 + 900)
    assert (await store.stats("topic:Macro", end, 900)).n == 2
    e = await store.stats("topic:Earnings", end, 900)
    assert (e.n, e.negative, e.positive) == (2, 1, 1)
    aapl = await store.stats("ticker:$aapl", end, 900)
    assert (aapl.n, aapl.negative) == (2, 1)
    msft = await store.stats("ticker:MSFT", end, 900)
    assert (msft.n, msft.negative) == (2, 2)
    multi = await store.window_stats("all", end, [900, 3600, 86400])
    assert [multi[w].n for w in (900, 3600, 86400)] == [4, 4, 4] and multi[3600].start == end - 3600
    assert (await store.window_stats("all", T0 + 120, [60]))[60].n == 1  # only bucket T0+60
    empty = await store.stats("ticker:NVDA", end, 900)
    assert empty.n == 0 and empty.negative_rate is None and empty.mean_score is None
    assert await store.scopes() == ["all", "ticker:AAPL", "ticker:MSFT", "topic:Earnings", "topic:Macro"]
    assert await store.scope_activity(since=T0 + 120) == {"all": T0 + 120, "ticker:MSFT": T0 + 120,
                                                          "topic:Earnings": T0 + 120, "topic:Macro": T0 + 120}
    assert (await store.scope_activity())["ticker:AAPL"] == T0 + 60
    assert await store.watermark() == T0 + 130 and await store.oldest_event() == T0 + 5


async def test_window_boundaries_on_event_time(redis_client):
    store = WindowStore(redis_client, "t")
    await store.record([art(1, T0 - 900, tickers=[]), art(2, T0 - 0.001, tickers=[]), art(3, T0, tickers=[]),
                        art(4, T0 - 900.001, tickers=[])])
    s = await store.stats("all", T0, 900)
    assert s.n == 2  # [T0-900, T0): includes the start and T0-1ms, excludes T0 and T0-900.001
    assert (await store.stats("all", T0 + 60, 900)).n == 2  # window moved one bucket: a1 out, a3 in


async def test_redelivery_is_never_counted_twice(redis_client):
    store = WindowStore(redis_client, "t")
    batch = [art(i, T0 + i * 10, tickers=["AAPL", "MSFT"]) for i in range(5)]
    first = await store.record(batch)
    again = await store.record(batch[2:] + batch[:2])  # redelivered, different order
    assert (first.counted, again.counted, again.duplicates) == (5, 0, 5)
    assert again.touched == {}
    for scope in ("all", "topic:Macro", "ticker:AAPL", "ticker:MSFT"):
        assert (await store.stats(scope, T0 + 900, 900)).n == 5
    assert (await store.metrics())["duplicates"] == 5


async def test_partial_record_is_repaired_by_redelivery(redis_client):
    """A crash between scope scripts leaves some scopes uncounted; the redelivery counts only those."""
    store = WindowStore(redis_client, "t")
    a = art(1, T0, tickers=["AAPL"])
    await store.record([a])
    # as if the process died after the claim and the all/topic scripts, before the ticker script
    await redis_client.delete(C.bucket_key("t", "ticker:AAPL", T0), C.seen_key("t", "ticker:AAPL", T0))
    res = await store.record([a])
    assert res.counted == 1 and res.touched == {"ticker:AAPL": [T0]}
    assert (await store.stats("all", T0 + 60, 60)).n == 1 and (await store.stats("ticker:AAPL", T0 + 60, 60)).n == 1


async def test_redelivery_with_other_labels_counts_the_first_labels(redis_client):
    """A redelivered article classified differently (another batch around it) keeps its first labels."""
    store = WindowStore(redis_client, "t")
    await store.record([art(1, T0, "negative", topic="Macro", score=-0.8)])
    res = await store.record([art(1, T0, "neutral", topic="Earnings", score=-0.1)])
    assert (res.counted, res.duplicates, res.relabelled, res.touched) == (0, 1, 1, {})
    for scope in ("all", "topic:Macro", "ticker:AAPL"):
        st = await store.stats(scope, T0 + 60, 60)
        assert (st.n, st.negative, st.neutral, st.sum_score) == (1, 1, 0, pytest.approx(-0.8))
    assert (await store.stats("topic:Earnings", T0 + 60, 60)).n == 0
    assert "topic:Earnings" not in await store.scopes()
    assert (await store.metrics())["relabelled"] == 1
    # a syndicated copy claims nothing
    await store.record([art(2, T0 + 1, duplicate_of="a1")])
    assert await redis_client.get(C.claim_key("t", "a2")) is None


async def test_syndicated_copies_are_not_counted(redis_client):
    store = WindowStore(redis_client, "t")
    res = await store.record([art(1, T0), art(2, T0 + 1, duplicate_of="a1"), art(3, T0 + 2, duplicate_of=None)])
    assert (res.counted, res.syndicated) == (2, 1)
    assert (await store.stats("all", T0 + 60, 60)).n == 2
    assert (await store.metrics())["syndicated"] == 1


async def test_late_events_are_counted_and_reported(redis_client):
    store = WindowStore(redis_client, "t", late_allowance_s=6 * 3600)
    await store.record([art(1, T0 + 7 * 3600)])
    res = await store.record([art(2, T0 + 59), art(3, T0 + 3600 + 1), art(2, T0 + 59)])
    assert res.late == 1 and res.counted == 2 and res.duplicates == 1  # a2 late; a3 within allowance
    assert (await store.stats("all", T0 + 60, 60)).n == 1               # still counted in its own bucket
    assert (await store.metrics())["late"] == 1
    # lateness is judged against the watermark as it advances inside a batch
    other = WindowStore(redis_client, "t2", late_allowance_s=60)
    res = await other.record([art(10, T0), art(11, T0 + 600), art(12, T0 + 100)])
    assert res.late == 1


async def test_invalid_articles_are_reported_not_counted(redis_client):
    store = WindowStore(redis_client, "t")
    res = await store.record([art(1, T0), {"id": "bad", "published_at": "soon"}, {**art(2, T0), "sentiment": "?"}])
    assert res.counted == 1 and [i for i, _ in res.invalid] == [1, 2]
    assert res.invalid[0][1].startswith("bad_time:")
    assert (await store.metrics())["invalid"] == 2


async def test_namespace_isolation(redis_client):
    a, b = WindowStore(redis_client, "live"), WindowStore(redis_client, "bt-1")
    await a.record([art(1, T0), art(2, T0 + 1)])
    assert (await b.record([art(1, T0)])).counted == 1  # same id, other namespace: counted there
    assert (await a.stats("all", T0 + 60, 60)).n == 2 and (await b.stats("all", T0 + 60, 60)).n == 1
    keys = keys_of([k async for k in redis_client.scan_iter(match="*")])
    assert all(k.startswith("finpulse:live:") or k.startswith("finpulse:bt-1:") for k in keys)
    assert await delete_namespace(redis_client, "bt-1") > 0
    assert (await b.stats("all", T0 + 60, 60)).n == 0 and (await a.stats("all", T0 + 60, 60)).n == 2
    with pytest.raises(ValueError):
        await delete_namespace(redis_client, "live")


async def test_script_keys_share_one_hash_tag(redis_client):
    store = WindowStore(redis_client, "ns", retention_s=3 * 86400)
    await store.record([art(1, T0, topic="Fed | Central Banks", tickers=["BRK.B"])])
    keys = keys_of([k async for k in redis_client.scan_iter(match="*")])
    b = T0
    for scope in ("all", "topic:Fed | Central Banks", "ticker:BRK.B"):
        for kind in ("b", "seen", "neg"):
            assert f"finpulse:ns:{{{scope}}}:{kind}:{b}" in keys
    ttl = await redis_client.ttl(C.bucket_key("ns", "all", b))
    assert 86400 + 900 < ttl <= 3 * 86400


async def test_top_negative_headlines(redis_client):
    store = WindowStore(redis_client, "t")
    batch = [art(i, T0 + i, score=-0.1 * i) for i in range(1, 8)]                 # bucket T0: -0.1 .. -0.7
    batch += [art(20 + i, T0 + 60 + i, score=-0.05 - 0.1 * i) for i in range(1, 4)]  # bucket T0+60
    batch += [art(30, T0 + 70, "positive", score=0.9), art(31, T0 + 71, "neutral", score=-0.99)]
    await store.record(batch)
    top = await store.top_negative("all", T0 + 900, 900)
    assert [h["sentiment_score"] for h in top] == pytest.approx([-0.7, -0.6, -0.5, -0.4, -0.35])
    assert set(top[0]) == {"id", "title", "url", "source", "published_at", "sentiment_score"}
    assert top[0]["title"] == "headline 7" and top[0]["published_at"] == format_time(T0 + 7)
    # only 5 are kept per bucket
    assert await redis_client.zcard(C.top_negative_key("t", "all", T0)) == 5
    assert len(await store.top_negative("all", T0 + 60, 60, k=3)) == 3


async def test_timeseries(redis_client):
    store = WindowStore(redis_client, "t")
    await store.record([art(i, T0 + i * 60, "negative" if i % 2 else "positive", tickers=[]) for i in range(10)])
    ts = await store.timeseries("all", T0 + 120, T0 + 600, step_s=120, window_s=300)
    assert [p["end"] for p in ts] == [T0 + 120, T0 + 240, T0 + 360, T0 + 480, T0 + 600]
    assert [p["n"] for p in ts] == [2, 4, 5, 5, 5]
    assert ts[-1]["negative"] == 3 and ts[-1]["negative_rate"] == pytest.approx(0.6)
    with pytest.raises(ValueError):
        await store.timeseries("all", T0, T0 + 600, step_s=90, window_s=300)
    assert "model_versions" not in ts[0]
    assert (await store.timeseries("all", T0 + 600, T0 + 600, step_s=60, window_s=600, with_versions=True))[0][
        "model_versions"] == ["m1"]
    # 90 days at hourly steps with a 24 h window (more than one chunk)
    year = await store.timeseries("all", T0 - 90 * 86400, T0 + 3600, step_s=3600, window_s=86400)
    assert len(year) == 90 * 24 + 2 and year[-1]["n"] == 10 and year[0]["n"] == 0


async def test_watermark_advances_per_partition(redis_client):
    import json
    import time

    store = WindowStore(redis_client, "t")
    await store.record([art(1, T0 + 600)], partitions=[1])
    await store.record([art(2, T0 + 60)], partitions=[0])
    assert await store.watermark() == T0 + 60  # partition 0 holds it: it may still have news to count
    now = time.time()
    just_emptied = {"news.raw.t|0": json.dumps({"lag": 0, "at": now, "zero_since": now - 5}),
                    "news.scored.t|0": json.dumps({"lag": 0, "at": now, "zero_since": now - 5})}
    await redis_client.hset(C.ns_key("t", C.BACKLOG_KEY), mapping=just_emptied)
    assert await store.idle_partitions() == set()  # empty for 5 s only: news may be arriving there
    assert await store.watermark() == T0 + 60
    report = {"news.raw.t|0": json.dumps({"lag": 0, "at": now, "zero_since": now - IDLE_AFTER_S}),
              "news.scored.t|0": json.dumps({"lag": 0, "at": now, "zero_since": now - 600})}
    await redis_client.hset(C.ns_key("t", C.BACKLOG_KEY), mapping=report)
    assert await store.idle_partitions() == {0}
    assert await store.watermark() == T0 + 600  # idle: processed to the end of its logs
    await redis_client.hset(C.ns_key("t", C.BACKLOG_KEY), "news.raw.t|0", json.dumps({"lag": 40, "at": time.time()}))
    assert await store.watermark() == T0 + 60  # a backlog again
    stale = json.dumps({"lag": 0, "at": time.time() - 300})
    await redis_client.hset(C.ns_key("t", C.BACKLOG_KEY), mapping={"news.raw.t|0": stale, "news.scored.t|0": stale})
    assert await store.watermark() == T0 + 60  # reports of a gone worker do not count
    # a partition that has counted nothing yet (its worker is starting, or retrying its first batch)
    # holds the watermark at the oldest event time, until it counts or is idle
    four = WindowStore(redis_client, "v", partitions=4)
    await four.record([art(5, T0 + 60), art(6, T0 + 500), art(7, T0 + 600), art(8, T0 + 900)],
                      partitions=[0, 0, 1, 2])
    assert await four.watermark() == T0 + 60  # partition 3 has counted nothing: the oldest event time
    await four.record([art(9, T0 + 700)], partitions=[3])
    assert await four.watermark() == T0 + 500  # partition 0 is the slowest now
    await four.record([art(10, T0 + 800)], partitions=[0])
    assert await four.watermark() == T0 + 600
    plain = WindowStore(redis_client, "u")  # without partitions (replays, backtests): the newest event time
    await plain.record([art(3, T0 + 60), art(4, T0 + 600)])
    assert await plain.watermark() == T0 + 600


async def test_the_entity_alias_table_is_bounded(redis_client, monkeypatch):
    import finpulse.alerts.store as store_mod

    monkeypatch.setattr(store_mod, "EMERGING_ALIASES_MAX", 2)
    store = WindowStore(redis_client, "t")
    names = ["Silicon Valley Bank (SVB)", "First Republic Bank (FRB)", "Signature Bank Group (SBG)"]
    for i, name in enumerate(names):
        await store.record([art(i, T0 + i, title=f"{name} shares plunge", tickers=())])
        assert await redis_client.hlen(C.ns_key("t", C.ENTITY_ALIASES_KEY)) <= 2
    assert await redis_client.hget(C.ns_key("t", C.ENTITY_ALIASES_KEY), "SBG") is not None  # the newest stays


async def test_recent_headlines_of_a_scope(redis_client):
    store = WindowStore(redis_client, "t", retention_s=3 * 86400)
    batch = [art(i, T0 + 10 * i, "negative" if i % 3 == 0 else "neutral", topic="Energy | Oil", tickers=["XOM"])
             for i in range(35)]
    await store.record(batch)
    await store.record(batch[-5:])  # redelivered: not listed twice
    recent = await store.recent_headlines("ticker:XOM")
    assert [h["id"] for h in recent] == [f"a{i}" for i in range(34, 4, -1)]  # the 30 newest, newest first
    assert recent[0]["topic"] == "Energy | Oil" and recent[0]["sentiment"] == "neutral"
    assert recent[1]["sentiment"] == "negative" and recent[1]["url"] == "https://news.test/33"
    assert [h["id"] for h in await store.recent_headlines("topic:Energy | Oil", k=2)] == ["a34", "a33"]
    assert 0 < await redis_client.ttl(C.recent_key("t", "ticker:XOM")) <= 3 * 86400
