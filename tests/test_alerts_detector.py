"""Detector on a real Redis: event-time closing, batch-split independence, at-least-once emission."""

import json
import random
import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from finpulse.alerts.detector import Detector
from finpulse.alerts.rules import Level, Rule, make_alert_id
from finpulse.alerts.store import WindowStore
from finpulse.alerts.windows import parse_time
from finpulse.core.rfc3339 import format as format_time

pytestmark = pytest.mark.asyncio

T0 = int(parse_time("2026-01-05T00:00:00Z"))
MIN = 60
CLOCK = 1767700000.0
SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "core" / "schemas" / "alert.json").read_text())

RULES = (
    Rule(name="market", scope_type="all", short_window_s=900, baseline_window_s=3600, min_count=20,
         levels=(Level("warning", 0.5), Level("critical", 0.7)), resolve_below=0.35, resolve_hold_s=300,
         cooldown_s=600),
    Rule(name="ticker", scope_type="ticker", short_window_s=900, baseline_window_s=3600, min_count=5,
         levels=(Level("warning", 0.6),), min_lift=0.15, resolve_below=0.45, resolve_hold_s=300, cooldown_s=600),
)


def art(i, ts, sentiment, tickers=(), **extra):
    score = {"negative": -0.9, "positive": 0.8, "neutral": 0.05}[sentiment]
    return {"id": f"a{i}", "published_at": format_time(ts), "title": f"headline {i}", "url": f"https://n.test/{i}",
            "source": "wire", "topic": "Macro", "sentiment": sentiment, "sentiment_score": score - (i % 7) / 100,
            "tickers": list(tickers), "model_version": "m1", **extra}


def history(minutes=150, spike=(90, 105), seed=7, gap=(30, 3 * 3600)):
    """Event-time ordered headlines: 25 % negative, a quiet gap of 3 h after minute 30, then a
    15-minute burst at 85 % with AAPL in it."""
    rng = random.Random(seed)
    out = []
    for m in range(minutes):
        t_m = T0 + m * MIN + (gap[1] if m >= gap[0] else 0)
        burst = spike[0] <= m < spike[1]
        for j in range(6 if burst else 4):
            neg = rng.random() < (0.85 if burst else 0.25)
            sent = "negative" if neg else rng.choice(["neutral", "positive"])
            tickers = ["AAPL"] if burst and j % 2 == 0 else (["MSFT"] if rng.random() < 0.3 else [])
            ts = t_m + j * 9 + rng.random() * 5
            out.append(art(len(out), ts, sent, tickers))
            if j == 1 and m % 10 == 0:  # a syndicated copy now and then
                out.append(art(len(out), ts + 0.5, sent, tickers, duplicate_of=out[-1]["id"]))
    return out


def split(items, sizes):
    out, i = [], 0
    for n in sizes:
        if i >= len(items):
            break
        out.append(items[i:i + n])
        i += n
    if i < len(items):
        out.append(items[i:])
    return out


async def replay(redis, ns, batches, evaluate_every=1):
    store = WindowStore(redis, ns)
    det = Detector(store, RULES, clock=lambda: CLOCK)
    emitted = []
    for k, batch in enumerate(batches):
        await store.record(batch)
        if k % evaluate_every == 0:
            got = await det.evaluate()
            emitted += got
            await det.mark_emitted(got)
    got = await det.flush()
    emitted += got
    await det.mark_emitted(got)
    return [{k: v for k, v in a.items() if k != "namespace"} for a in emitted]


async def test_batch_split_independence(redis_client):
    arts = history()
    rng = random.Random(3)
    reference = await replay(redis_client, "one-batch", [arts])
    kinds = [(a["rule"], a["scope"], a["status"], a["severity"]) for a in reference]
    assert ("market", "all", "fired", "warning") in kinds and ("market", "all", "fired", "critical") in kinds
    assert ("market", "all", "resolved", "critical") in kinds and ("ticker", "ticker:AAPL", "fired", "warning") in kinds
    assert not any(a["scope"] == "ticker:MSFT" for a in reference)
    variants = {
        "random-1-50": split(arts, [rng.randint(1, 50) for _ in range(len(arts))]),
        "random-1-5": split(arts, [rng.randint(1, 5) for _ in range(len(arts))]),
        "per-minute": split(arts, [4] * len(arts)),
    }
    for ns, batches in variants.items():
        assert await replay(redis_client, ns, batches) == reference, ns
    # evaluating only now and then (a busy worker) changes nothing either
    assert await replay(redis_client, "sparse-eval", variants["random-1-5"], evaluate_every=17) == reference


async def test_bucket_is_evaluated_only_once_closed(redis_client):
    store = WindowStore(redis_client, "t")
    rule = Rule(name="r", scope_type="all", short_window_s=300, baseline_window_s=3600, min_count=5,
                levels=(Level("warning", 0.5),), resolve_below=0.3)
    det = Detector(store, [rule], clock=lambda: CLOCK)
    await store.record([art(i, T0 + 3600 + i, "negative") for i in range(8)])
    assert await det.evaluate() == []          # bucket [T0+3600, T0+3660) still open
    assert await det.cursor() is None          # nothing evaluated yet
    await store.record([art(100, T0 + 3660, "neutral")])
    got = await det.evaluate()                 # an event at T0+3660 closes it
    assert [(a["status"], a["window_end"], a["count"], a["negative_count"]) for a in got] == [
        ("fired", format_time(T0 + 3660), 8, 8)]
    assert got[0]["alert_id"] == make_alert_id("r", "all", T0 + 3360, T0 + 3660)


async def test_close_delay(redis_client):
    store = WindowStore(redis_client, "t")
    det = Detector(store, RULES, close_delay_s=120)
    await store.record([art(1, T0, "neutral"), art(2, T0 + 150, "neutral")])
    await det.evaluate()
    assert await det.cursor() is None          # watermark T0+150 - 120 s < T0+60: nothing closed
    await store.record([art(3, T0 + 181, "neutral")])
    await det.evaluate()
    assert await det.cursor() == T0 + 60


async def test_pending_until_marked_emitted(redis_client):
    """At-least-once: a crash between producing and acknowledging returns the same records."""
    arts = history()
    store = WindowStore(redis_client, "t")
    det = Detector(store, RULES, clock=lambda: CLOCK)
    await store.record(arts)
    first = await det.evaluate()
    assert first
    restarted = Detector(WindowStore(redis_client, "t"), RULES, clock=lambda: CLOCK + 999)
    assert await restarted.evaluate() == first  # same records, same ids, original created_at
    assert await restarted.mark_emitted(first[:2]) == 2
    assert await restarted.pending() == first[2:]
    assert await restarted.mark_emitted([a["event_id"] for a in first[2:]]) == len(first) - 2
    assert await restarted.evaluate() == []
    # redelivered input is not counted again and cannot create a second alert
    res = await store.record(arts)
    assert res.counted == 0 and res.duplicates == len(arts) - res.syndicated
    assert await restarted.evaluate() == []


async def test_workers_sharing_a_namespace_produce_each_record_once(redis_client):
    """Each worker runs a detector on the shared state: the one that created a record produces it; the
    others do not, unless its emission lease ran out (it crashed before acknowledging)."""
    arts = history()
    store = WindowStore(redis_client, "t")
    now = [CLOCK]
    a = Detector(store, RULES, clock=lambda: now[0], emit_lease_s=30)
    b = Detector(WindowStore(redis_client, "t"), RULES, clock=lambda: now[0], emit_lease_s=30)
    await store.record(arts)
    first = await a.evaluate()
    assert first and await b.evaluate() == [] and await b.tick(CLOCK) == []
    assert await a.evaluate() == first  # its own records, until it acknowledges them
    now[0] += 31  # a crashed before mark_emitted: b takes the records over, and a no longer gets them
    assert await b.evaluate() == first and await a.evaluate() == []
    assert await b.mark_emitted(first) == len(first)
    now[0] += 60
    assert await a.evaluate() == [] and await b.evaluate() == [] and await a.pending() == []
    assert not [k async for k in redis_client.scan_iter(match="*{det}:emitting")]


async def test_scopes_idle_past_the_longest_span_leave_the_scope_index(redis_client):
    """Bounded memory: the scope index forgets scopes with no news for longer than the longest rule span
    (short + baseline window) before the detector's cursor, once no alert or cooldown is open there;
    news for a forgotten scope brings it back."""
    store = WindowStore(redis_client, "t")
    det = Detector(store, RULES, clock=lambda: CLOCK)
    assert det.scope_horizon_s == 900 + 3600 + 60
    old = [art(i, T0 + i, "neutral", tickers=[f"OLD{i}"]) for i in range(5)]
    burst = [art(100 + i, T0 + 60 + i * 30, "negative", tickers=["BURST"]) for i in range(12)]
    await store.record(old + burst)
    fired = await det.evaluate()
    assert [a["scope"] for a in fired if a["status"] == "fired"] == ["ticker:BURST"]
    assert ("ticker", "ticker:BURST") in await det.states()
    # 40 minutes on: BURST's alert is still open (or cooling down), the idle tickers are not yet past the span
    await store.record([art(200 + i, T0 + 2400 + i * 60, "neutral") for i in range(5)])
    await det.evaluate()
    assert {"ticker:OLD0", "ticker:BURST"} <= set(await store.scopes())
    # two hours later only market-wide news: every idle ticker is forgotten
    await store.record([art(300 + i, T0 + 7200 + i * 60, "neutral") for i in range(120)])
    await det.evaluate()
    assert await det.states() == {}
    scopes = set(await store.scopes())
    assert not any(sc.startswith("ticker:") for sc in scopes) and {"all", "topic:Macro"} <= scopes
    await store.record([art(500, T0 + 9400, "neutral", tickers=["OLD1"])])
    assert "ticker:OLD1" in await store.scopes()
    # a scope the detector still holds state for is kept whatever its age
    assert await store.forget_idle_scopes(T0 + 10**6, keep={"all"}) >= 2
    assert await store.scopes() == ["all"]


async def test_records_match_schema_and_list_top_headlines(redis_client):
    arts = history()
    alerts = await replay(redis_client, "t", [arts])
    validator = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
    for a in alerts:
        validator.validate({**a, "namespace": "t"})
        heads = a["top_headlines"]
        assert len(heads) <= 5
        assert [h["sentiment_score"] for h in heads] == sorted(h["sentiment_score"] for h in heads)
    fired = next(a for a in alerts if a["status"] == "fired" and a["rule"] == "market")
    assert len(fired["top_headlines"]) == 5
    assert fired["event_id"] == f"{fired['alert_id']}.fired.{fired['severity']}"
    assert fired["model_version"] == "m1" and fired["spike_test"] == "wilson"
    assert fired["wilson_lower"] >= fired["statistic_threshold"] and fired["negative_rate"] >= fired["threshold"]
    assert fired["created_at"] == format_time(CLOCK)
    resolved = next(a for a in alerts if a["status"] == "resolved" and a["rule"] == "market")
    assert resolved["alert_id"] == fired["alert_id"] and resolved["fired_window_end"] == fired["window_end"]
    assert resolved["negative_rate"] < 0.35


async def test_tick_resolves_when_news_is_quiet(redis_client):
    store = WindowStore(redis_client, "live")
    det = Detector(store, RULES[:1], clock=lambda: CLOCK)
    await store.record([art(i, T0 + 70 * MIN + i, "negative") for i in range(30)] + [art(99, T0 + 71 * MIN, "neutral")])
    fired = await det.evaluate()
    assert [a["status"] for a in fired] == ["fired"]
    await det.mark_emitted(fired)
    assert await det.evaluate() == []          # no new news: the watermark does not move
    resolved = await det.tick(now=T0 + 101 * MIN)
    # the burst leaves the 15-min window at 86 min (calm), hold 5 min -> resolved at 91 min
    assert [(a["status"], a["window_end"]) for a in resolved] == [("resolved", format_time(T0 + 91 * MIN))]
    assert resolved[0]["alert_id"] == fired[0]["alert_id"]
    assert await det.open_alerts() == []


async def test_detector_state_is_per_namespace(redis_client):
    arts = history()
    await replay(redis_client, "bt-a", [arts])
    det_b = Detector(WindowStore(redis_client, "bt-b"), RULES)
    assert await det_b.pending() == [] and await det_b.states() == {} and await det_b.cursor() is None
    keys = [k.decode() for k in [k async for k in redis_client.scan_iter(match="*{det}*")]]
    assert keys and all(k.startswith("finpulse:bt-a:{det}:") for k in keys)


async def test_stray_old_event_is_crossed_quickly(redis_client):
    store = WindowStore(redis_client, "t")
    det = Detector(store, RULES, clock=lambda: CLOCK)
    await store.record([art(0, T0 - 60 * 86400, "negative", ["AAPL"])])
    await store.record(history())
    started = time.monotonic()
    got = await det.evaluate()
    assert time.monotonic() - started < 5
    assert ("market", "fired") in {(a["rule"], a["status"]) for a in got}
    assert await det.cursor() == int(await store.watermark()) // MIN * MIN


async def test_rule_windows_are_validated(redis_client):
    store = WindowStore(redis_client, "t", retention_s=86400)
    with pytest.raises(ValueError):
        Detector(store, [Rule(name="r", scope_type="all", short_window_s=90)])
    with pytest.raises(ValueError):
        Detector(store, [Rule(name="r", scope_type="all")])  # 15 min + 24 h > 1 day retention


def busy_history(seed):
    """Six hours over eight tickers: background news at 25 % negative, and random bursts, some of
    them negative, on single tickers and on the whole market."""
    rng = random.Random(seed)
    tickers = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH"]
    bursts = [(rng.choice(tickers + [None]), rng.randint(20, 340), rng.random()) for _ in range(10)]
    out = []
    for m in range(360):
        news = [("negative" if rng.random() < 0.25 else "neutral", rng.sample(tickers, rng.randint(0, 1)))
                for _ in range(rng.randint(1, 4))]
        for who, start, neg in bursts:
            if start <= m < start + 12:
                news += [("negative" if rng.random() < neg else "positive", [who] if who else [])
                         for _ in range(rng.randint(1, 3))]
        for j, (sentiment, tick) in enumerate(news):
            out.append(art(len(out), T0 + m * MIN + j * 59 / len(news), sentiment, tick))
    return out


async def test_detector_matches_deciding_every_boundary(redis_client):
    """The detector skips reads and decisions that cannot matter (alerts.detector.decisions); its
    alerts must equal those of decide() at every boundary over fully read windows."""
    from finpulse.alerts.rules import decide
    from finpulse.alerts.windows import boundaries, bucket_start

    fired = 0
    for seed in range(4):
        arts = busy_history(seed)
        ns = f"eq{seed}"
        got = await replay(redis_client, ns, split(arts, [random.Random(seed).randint(1, 40) for _ in arts]))
        store = WindowStore(redis_client, ns)
        oldest = min(parse_time(a["published_at"]) for a in arts)
        newest = max(parse_time(a["published_at"]) for a in arts)
        first, last = bucket_start(oldest, MIN), bucket_start(newest, MIN) + MIN
        expected = []
        for rule in RULES:
            scopes = ["all"] if rule.scope_type == "all" else sorted(
                {f"ticker:{t}" for a in arts for t in a["tickers"]})
            for sc in scopes:
                ser = await store.bucket_series(sc, first - rule.span_s, last)
                state = None
                for e in boundaries(first, last, MIN):
                    d = decide(rule, sc, ser.window(e - rule.short_window_s, e),
                               ser.window(e - rule.span_s, e - rule.short_window_s), state)
                    if d.emits:
                        expected.append((d.emits, rule.name, sc, d.severity, format_time(e), d.alert_id))
                    state = d.state
        observed = [(a["status"], a["rule"], a["scope"], a["severity"], a["window_end"], a["alert_id"]) for a in got]
        assert sorted(observed) == sorted(expected), seed
        fired += len(expected)
    assert fired >= 8, fired  # the bursts do fire (and resolve) alerts


async def test_backtest_flush_takes_over_records_leased_to_the_stopped_worker(redis_url, namespace):
    """A backtest stops its worker once every row is counted; records that worker created but had not
    acknowledged are still under its emission lease. The final flush produces them anyway (nobody else
    will), so the report does not lose them; afterwards nothing is pending."""
    from finpulse.alerts.config import AlertsConfig
    from finpulse.backtest import _flush
    from finpulse.core.connections import async_redis
    from finpulse.core.settings import Settings

    settings = Settings(redis_url=redis_url, namespace=namespace)
    config = AlertsConfig(rules=RULES)
    r = async_redis(redis_url)
    try:
        store = WindowStore.from_settings(r, settings)
        worker = Detector.from_config(store, config, emit_lease_s=3600)  # the stopped worker's lease holds
        await store.record(history())
        leased = await worker.evaluate()
        assert leased, "the history must produce alerts for this test to mean anything"
        outsider = Detector.from_config(WindowStore.from_settings(r, settings), config)
        assert await outsider.evaluate() == []  # leased to the worker: a live peer leaves them alone
        records, *_ = await _flush(settings, config, None)
        got = {rec["event_id"] for rec in records}
        assert {rec["event_id"] for rec in leased} <= got
        assert await worker.pending() == []
    finally:
        await r.aclose()
