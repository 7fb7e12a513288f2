"""``finpulse backtest``: real broker, Redis and worker; the alert logic is tested on pre-scored input
(``scored_input=True``) so the classifier's predictions cannot decide the outcome."""

from __future__ import annotations

import csv
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from finpulse.backtest import (
    TIMESERIES_COLUMNS,
    BacktestError,
    _active_ends,
    _runs,
    _sample_ends,
    _series_rows,
    backtest_rules,
    default_namespace,
    dump_rules_toml,
    read_scored_history,
    run_backtest,
    summary_line,
)
from finpulse.core.settings import REPO_ROOT
from finpulse.ingest.replay import read_history
from finpulse.report import ScopeVolume, binned_volume, volume_bin, write_report

START = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
TOPICS = ("Earnings", "Macro", "Energy | Oil")
BURST_TOPIC = "Energy | Oil"
LIVE_TOPICS = ("news.raw", "news.scored", "news.dlq", "alerts", "alerts.dlq")

RULES = """
[detector]
close_delay = "0s"

[[rules]]
name = "topic-spike"
scope_type = "topic"
short_window = "15m"
baseline_window = "1h"
min_count = 8
levels = { warning = 0.5 }
min_lift = 0.10
resolve_below = 0.40
resolve_hold = "30m"
cooldown = "1h"

[[endpoints]]                      # must be ignored: a backtest never calls webhooks
name = "risk-desk"
url = "http://127.0.0.1:9/hook"
internal = true
secret = "whsec_dGVzdA=="
format = "json"
"""


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def burst_rows() -> list[dict]:
    """09:00-13:00: one headline per topic every 2 minutes, 20 % negative; 11:00-11:15: 30 more
    headlines on Energy | Oil, all negative. File order is not event-time order."""
    rows = []
    for i in range(120):
        t = START + timedelta(minutes=2 * i)
        for k, topic in enumerate(TOPICS):
            neg = (i + k) % 5 == 0
            rows.append({"id": f"r{i}-{k}", "title": f"{topic} headline {i}", "published_at": iso(t + timedelta(seconds=10 * k)),
                         "topic": topic, "sentiment": "negative" if neg else ("positive" if i % 2 else "neutral"),
                         "sentiment_score": -0.8 if neg else (0.6 if i % 2 else 0.0)})
    for j in range(30):
        rows.append({"id": f"b{j}", "title": f"Tanker spill shuts oil terminal {j}", "tickers": ["XOM"],
                     "published_at": iso(START + timedelta(hours=2, seconds=30 * j + 5)), "topic": BURST_TOPIC,
                     "sentiment": "negative", "sentiment_score": -0.9})
    return sorted(rows, key=lambda r: r["id"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bt-in")
    rules = d / "rules.toml"
    rules.write_text(RULES)
    burst = d / "burst.jsonl"
    with open(burst, "w") as f:
        for r in burst_rows():
            f.write(json.dumps(r) + "\n")
        f.write('{"id": "x1", "title": "no scores", "published_at": "2024-05-06T10:00:00Z"}\n')  # line 391
        f.write("{not json\n")  # line 392
    return {"rules": rules, "burst": burst}


def load_alerts(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def live_topic_offsets(bootstrap: str) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        existing = c.topics()
        tps = [TopicPartition(t, p) for t in LIVE_TOPICS if t in existing for p in c.partitions_for_topic(t)]
        return {f"{tp.topic}/{tp.partition}": off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


@pytest.fixture(scope="module")
def first_run(stack, files, tmp_path_factory):
    """Live data first (Redis keys and a message on the live news.raw), then a pre-scored backtest
    with the namespace kept for inspection."""
    import redis

    from tests.support import produce

    r = redis.Redis.from_url(stack.redis_url)
    r.hset("finpulse:live:metrics", mapping={"counted": 7})
    r.set("finpulse:live:{det}:cursor", 1714986000)
    r.hset("finpulse:live:{topic:Energy | Oil}:b:1714986000", mapping={"n": 3, "negative": 1})
    produce(stack.kafka_bootstrap, "news.raw", [b'{"id": "live-1"}'])
    live_before = {k: r.dump(k) for k in r.scan_iter("finpulse:live:*")}
    keys_before = set(r.scan_iter("*"))
    offsets_before = live_topic_offsets(stack.kafka_bootstrap)
    out = tmp_path_factory.mktemp("bt-out1")
    summary = run_backtest(files["burst"], files["rules"], out, scored_input=True, keep=True, progress=False,
                           kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
    after = {
        "live": {k: r.dump(k) for k in r.scan_iter("finpulse:live:*")},
        "new_keys": set(r.scan_iter("*")) - keys_before,
        "offsets": live_topic_offsets(stack.kafka_bootstrap),
    }
    r.close()
    return {"summary": summary, "out": out, "live_before": live_before, "offsets_before": offsets_before, **after}


# --- integration -------------------------------------------------------------------------------

@pytest.mark.integration
def test_injected_burst_yields_exactly_the_expected_alert(first_run):
    s, out = first_run["summary"], first_run["out"]
    assert s["complete"] and s["ok"]
    assert s["rows_read"] == 392 and s["produced"] == 390 and s["processed"] == 390 and s["dead_lettered"] == 0
    assert [b["line"] for b in s["bad_rows"]] == [391, 392]
    assert "topic" in s["bad_rows"][0]["reason"]
    alerts = load_alerts(out)
    assert [(a["status"], a["rule"], a["scope"]) for a in alerts] == [
        ("fired", "topic-spike", f"topic:{BURST_TOPIC}"), ("resolved", "topic-spike", f"topic:{BURST_TOPIC}")]
    fired, resolved = alerts
    assert fired["alert_id"] == resolved["alert_id"]
    assert iso(START + timedelta(hours=2)) < fired["window_end"] <= iso(START + timedelta(hours=2, minutes=15))
    assert resolved["window_end"] > iso(START + timedelta(hours=2, minutes=15))
    assert fired["namespace"] == s["namespace"] and fired["model_version"] == "prescored"
    assert s["alerts_by_scope"] == {f"topic:{BURST_TOPIC}": {"fired": 1, "resolved": 1}}
    assert s["event_time"] == {"first": "2024-05-06T09:00:00.000Z", "last": "2024-05-06T12:58:20.000Z",
                               "span_s": 14300.0}
    assert s["model_version"] == "prescored" and s["throughput_rows_per_s"] > 0

    with open(out / "timeseries.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == TIMESERIES_COLUMNS
    assert {r["scope"] for r in rows} >= {"all", *(f"topic:{t}" for t in TOPICS)}
    at_fire = next(r for r in rows if r["scope"] == fired["scope"] and r["window_end"] == fired["window_end"])
    assert int(at_fire["count"]) == fired["count"] and int(at_fire["negative"]) == fired["negative_count"]
    assert float(at_fire["baseline_rate"]) == pytest.approx(fired["baseline_rate"], abs=1e-6)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["namespace"] == s["namespace"]


@pytest.mark.integration
def test_backtest_never_touches_live_keys_or_topics(first_run):
    ns = first_run["summary"]["namespace"]
    assert re.fullmatch(r"bt-[0-9a-f]{8}-\d{8}T\d{9}", ns)
    assert first_run["live"] == first_run["live_before"] and len(first_run["live"]) == 3
    assert first_run["offsets"] == first_run["offsets_before"]
    assert first_run["new_keys"], "keep=True leaves the backtest's own keys"
    assert all(k.decode().startswith(f"finpulse:{ns}:") for k in first_run["new_keys"])


@pytest.mark.integration
def test_same_file_and_rules_give_the_same_alerts(stack, files, first_run, tmp_path):
    import redis

    s2 = run_backtest(files["burst"], files["rules"], tmp_path, scored_input=True, progress=False,
                      kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
    assert s2["namespace"] != first_run["summary"]["namespace"]

    def strip(alerts):
        return [{k: v for k, v in a.items() if k not in ("created_at", "namespace")} for a in alerts]

    assert strip(load_alerts(tmp_path)) == strip(load_alerts(first_run["out"]))
    r = redis.Redis.from_url(stack.redis_url)
    assert not list(r.scan_iter(f"finpulse:{s2['namespace']}:*")), "keep=False removes the namespace's keys"
    r.close()


@pytest.mark.integration
def test_classify_path_with_dates_only_csv_via_cli(stack, files, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from finpulse.cli import main

    src = tmp_path / "history.csv"
    lines = ["date,headline,ticker"]
    for i in range(12):
        day = "2024-03-04" if i < 6 else "2024-03-05"
        lines.append(f"{day},Company {i} reports quarterly results,T{i % 3}")
    lines.insert(4, "05/03/2024,Ambiguous date headline,")  # line 5
    lines.insert(8, "2024-03-04,,")                           # line 9: no title
    src.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("FINPULSE_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
    monkeypatch.setenv("FINPULSE_REDIS_URL", stack.redis_url)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["backtest", str(src), "--rules", str(files["rules"]), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "complete" in res.output.strip().splitlines()[-1]
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "classify" and s["complete"]
    assert s["rows_read"] == 14 and s["produced"] == 12 and s["processed"] == 12
    assert [b["line"] for b in s["bad_rows"]] == [5, 9]
    assert s["event_time"]["first"] == "2024-03-04T00:00:00.000Z"
    assert s["event_time"]["last"] == "2024-03-05T00:00:00.000Z"
    assert s["counted"] + s["dead_lettered"] == 12 and s["model_version"]
    assert (out / "timeseries.csv").read_text().count("\n") > 1 and (out / "report.png").exists()
    assert (out / "alerts.jsonl").exists()


@pytest.mark.integration
def test_incomplete_processing_exits_non_zero(stack, files, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from finpulse.cli import main

    monkeypatch.setenv("FINPULSE_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
    monkeypatch.setenv("FINPULSE_REDIS_URL", stack.redis_url)
    res = CliRunner().invoke(main, ["backtest", str(files["burst"]), "--rules", str(files["rules"]), "--out",
                                    str(tmp_path), "--scored-input", "--timeout", "0", "--quiet"])
    assert res.exit_code == 1, res.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert not s["complete"] and not s["ok"] and "did not complete" in s["incomplete_reason"]


def long_history_rows() -> list[dict]:
    """2019-2022, three headlines a month (Macro / Earnings, one in four negative), plus two bursts of
    12 negative headlines in 10 minutes: Energy | Oil on 2021-06-15 11:00 (inside an event) and
    Macro on 2020-02-10 09:00 (a false alarm: no event)."""
    rows = []
    for y in range(2019, 2023):
        for m in range(1, 13):
            for k, day in enumerate((3, 13, 23)):
                i = len(rows)
                neg = i % 4 == 0
                rows.append({"published_at": f"{y}-{m:02d}-{day:02d}T10:{k:02d}:00Z", "title": f"Routine {i}",
                             "topic": ("Macro", "Earnings")[i % 2], "sentiment": "negative" if neg else "neutral",
                             "sentiment_score": -0.6 if neg else 0.0})
    for j in range(12):
        rows.append({"published_at": iso(datetime(2021, 6, 15, 11, tzinfo=UTC) + timedelta(seconds=50 * j)),
                     "title": f"Tanker spill {j}", "topic": BURST_TOPIC, "sentiment": "negative",
                     "sentiment_score": -0.9})
        rows.append({"published_at": iso(datetime(2020, 2, 10, 9, tzinfo=UTC) + timedelta(seconds=50 * j)),
                     "title": f"Rumour {j}", "topic": "Macro", "sentiment": "negative", "sentiment_score": -0.8})
    return rows


LONG_EVENTS = """stream,event,start,end,what an analyst expects,public record
long_history,Oil spill,2021-06-15T10:00:00Z,2021-06-15T18:00:00Z,oil negative surge,test
other_stream,Elsewhere,2021-06-15T10:00:00Z,2021-06-16T00:00:00Z,ignored,test
long_history,Quiet day,2022-03-01T00:00:00Z,2022-03-02T00:00:00Z,nothing fires,test
long_history,Before the history,2010-01-01T00:00:00Z,2010-01-02T00:00:00Z,outside the span,test
"""


@pytest.mark.integration
def test_years_of_sparse_history_with_events(stack, files, tmp_path):
    """Four years of a few headlines a month (over 2 million minute buckets): the run completes, the
    time series covers only where there is data, the report is written and the alerts are scored."""
    src = tmp_path / "long_history.csv"
    rows = long_history_rows()
    with open(src, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    events = tmp_path / "events.csv"
    events.write_text(LONG_EVENTS)
    out = tmp_path / "out"
    s = run_backtest(src, files["rules"], out, scored_input=True, progress=False, events=events,
                     kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
    assert s["complete"] and s["ok"] and s["processed"] == len(rows) == 168
    assert s["event_time"]["first"] == "2019-01-03T10:00:00.000Z" and s["event_time"]["span_s"] > 3.9 * 365 * 86400
    fired = [a for a in load_alerts(out) if a["status"] == "fired"]
    assert {(a["scope"], a["window_end"][:10]) for a in fired} == {(f"topic:{BURST_TOPIC}", "2021-06-15"),
                                                                    ("topic:Macro", "2020-02-10")}

    with open(out / "timeseries.csv", newline="") as fh:
        ts = list(csv.DictReader(fh))
    assert {r["scope"] for r in ts} == {"all", "topic:Macro", "topic:Earnings", f"topic:{BURST_TOPIC}"}
    assert len(ts) < 40_000, "only the window ends near data, not every minute of four years"
    oil = [r for r in ts if r["scope"] == f"topic:{BURST_TOPIC}"]
    assert oil and all(r["window_end"].startswith("2021-06-15") for r in oil)
    oil_fired = next(a for a in fired if a["scope"] == f"topic:{BURST_TOPIC}")
    at_fire = next(r for r in oil if r["window_end"] == oil_fired["window_end"])
    assert int(at_fire["count"]) == oil_fired["count"] and int(at_fire["negative"]) == oil_fired["negative_count"]
    assert float(at_fire["baseline_rate"]) == pytest.approx(oil_fired["baseline_rate"], abs=1e-6)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    ev = s["evaluation"]
    assert ev["stream"] == "long_history" and ev["events_ignored"] == 1 and ev["grace_s"] == 0
    assert [(e["event"], e["in_span"], e["caught"]) for e in ev["events"]] == [
        ("Oil spill", True, True), ("Quiet day", True, False), ("Before the history", False, False)]
    oil_ev = ev["events"][0]
    assert oil_ev["first_alert_id"] == oil_fired["alert_id"]
    assert oil_ev["lead_time_s"] == (datetime.fromisoformat(oil_fired["window_end"])
                                     - datetime(2021, 6, 15, 10, tzinfo=UTC)).total_seconds()
    assert ev["events_caught"] == 1 and ev["events_total"] == 2 and ev["unmatched_alerts"] == 1
    assert ev["unmatched"][0]["scope"] == "topic:Macro"
    assert ev["days"] == pytest.approx(s["event_time"]["span_s"] / 86400, abs=1e-3)
    assert ev["unmatched_per_day"] == pytest.approx(1 / ev["days"], rel=1e-3)  # 4 significant digits
    assert json.loads((out / "summary.json").read_text())["evaluation"] == ev
    assert "events (long_history) caught 1/2" in summary_line(s)


def test_cli_passes_the_events_options(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import finpulse.backtest
    from finpulse.cli import main

    seen = {}

    def fake(path, rules_path, out_dir, **kw):
        seen.update(kw)
        raise BacktestError("stop here")

    monkeypatch.setattr(finpulse.backtest, "run_backtest", fake)
    src, ev = tmp_path / "h.csv", tmp_path / "e.csv"
    src.write_text("published_at,title\n")
    ev.write_text("event,start,end\n")
    res = CliRunner().invoke(main, ["backtest", str(src), "--out", str(tmp_path / "o"), "--events", str(ev),
                                    "--events-stream", "covid", "--events-grace", "600"])
    assert res.exit_code == 1 and "stop here" in res.output
    assert seen["events"] == str(ev) and seen["events_stream"] == "covid" and seen["events_grace_s"] == 600


def test_bad_events_file_is_refused_before_the_run(files, tmp_path):
    ev = tmp_path / "e.csv"
    ev.write_text("event,start,end\nX,2020-01-02T00:00:00Z,2020-01-01T00:00:00Z\n")
    with pytest.raises(BacktestError, match="before start"):
        run_backtest(files["burst"], files["rules"], tmp_path / "o", events=ev, progress=False)
    with pytest.raises(BacktestError, match="grace"):
        run_backtest(files["burst"], files["rules"], tmp_path / "o", events=ev, events_grace_s=-1, progress=False)


# --- unit --------------------------------------------------------------------------------------

def test_time_series_reads_and_samples_only_around_the_data():
    s = 60
    starts = np.array([0, 60, 600, 6000, 6060], dtype=np.int64)
    assert _runs(starts, s, gap=10) == [(0, 660), (6000, 6120)]
    assert _runs(starts, s, gap=10, longest=5) == [(0, 120), (600, 660), (6000, 6120)]
    ranges = _active_ends(starts, s, 300, 60, 7200)
    assert ranges.tolist() == [[60, 360], [660, 900], [6060, 6360]]
    every = _sample_ends(ranges, s, 1000, [5940])
    assert len(every) == 6 + 5 + 6 + 1 and every[0] == 60 and 5940 in every and every[-1] == 6360
    few = _sample_ends(ranges, s, 5)
    assert len(few) <= 5 and few.tolist() == [60, 300, 780, 6120, 6360]
    assert _active_ends(starts, s, 300, 10_000, 20_000).shape == (0, 2)  # clipped to the span
    # windows sum the buckets that lie in them: [e - 120, e) and [e - 300, e - 120)
    counts = np.array([[1, 1, 0, 0, -500_000]] * 5, dtype=np.int64)
    rows = _series_rows("all", [("r", 120, 180, None)], starts, counts, np.array([120, 300, 720, 6360]))
    assert [(r["count"], r["negative_rate"], r["baseline_count"], r["mean_score"]) for r in rows] == [
        (2, 1.0, 0, -0.5), (0, None, 2, None), (1, 1.0, 0, -0.5), (0, None, 1, None)]


def test_report_spanning_years_with_events_and_volume(tmp_path):
    day = 86400
    t0 = int(datetime(2019, 1, 1, tzinfo=UTC).timestamp())
    starts = np.array([t0 + k * 10 * day for k in range(146)], dtype=np.int64)
    vol = ScopeVolume(starts=starts, n=np.full(146, 3), negative=np.ones(146, dtype=np.int64), bucket_s=60)
    assert volume_bin(4 * 365 * day) == 14 * day
    bs, n, neg = binned_volume(vol, 14 * day)
    assert n.sum() == 438 and neg.sum() == 146 and len(bs) <= 110
    rows = [{"scope": "all", "rule": "r", "ts": int(b) + 60 * k, "short_window_s": 900, "count": 3, "negative": 1,
             "negative_rate": 1 / 3, "baseline_count": 0, "baseline_rate": 0.3, "threshold": 0.5}
            for b in starts for k in range(1, 4)]
    alert = {"scope": "all", "status": "fired", "window_end": iso(datetime(2021, 6, 15, 11, 15, tzinfo=UTC)),
             "negative_rate": 0.9, "rule": "r"}
    summary = {"file": "x.csv", "mode": "scored", "produced": 438, "alerts_fired": 1, "alerts_resolved": 0,
               "namespace": "bt-x", "event_time": {"first": iso(datetime(2019, 1, 1, tzinfo=UTC)),
                                                   "last": iso(datetime(2022, 12, 30, tzinfo=UTC))},
               "evaluation": {"stream": "x", "events_caught": 1, "events_total": 1, "unmatched_alerts": 0,
                              "unmatched_per_day": 0.0, "events": [
                                  {"event": "Oil spill", "start": "2021-06-15T10:00:00Z", "end": "2021-06-15T18:00:00Z",
                                   "in_span": True, "caught": True, "lead_time_s": 4500.0, "alerts": 1,
                                   "first_alert": {"rule": "r", "scope": "all"}},
                                  {"event": "Outside", "start": "2010-01-01T00:00:00Z", "end": "2010-01-02T00:00:00Z",
                                   "in_span": False, "caught": False, "lead_time_s": None}]}}
    out = tmp_path / "r.png"
    write_report(out, {"all": rows, "topic:Empty": []}, [alert], summary, volume={"all": vol})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



def test_rules_for_a_backtest_drop_endpoints_and_round_trip(tmp_path):
    shipped = tomllib.loads((REPO_ROOT / "config" / "rules.toml").read_text())
    assert tomllib.loads(dump_rules_toml(shipped)) == shipped
    p = tmp_path / "rules.toml"
    p.write_text(RULES)
    text, config = backtest_rules(p)
    assert "endpoints" not in tomllib.loads(text) and config.endpoints == ()
    assert [r.name for r in config.rules] == ["topic-spike"] and config.close_delay_s == 0


def test_read_scored_history_orders_validates_and_keeps_replay_ids(tmp_path):
    p = tmp_path / "scored.csv"
    p.write_text("published_at,title,source,topic,sentiment,sentiment_score\n"
                 "2024-05-06T10:00:00Z,Second,wire,Macro,negative,-0.5\n"
                 "2024-05-06T09:00:00Z,First,wire,Macro,Positive,0.25\n"
                 "2024-05-06T09:30:00Z,Bad score,wire,Macro,negative,-3\n"
                 "2024-05-06T09:40:00Z,No sentiment,wire,Macro,,0\n")
    msgs, bad = read_scored_history(p)
    assert [m["title"] for m in msgs] == ["First", "Second"]
    assert [m["id"] for m in msgs] == [m["id"] for m in read_history(p)[0] if m["title"] in ("First", "Second")]
    assert msgs[0]["sentiment"] == "positive" and msgs[0]["sentiment_probs"]["positive"] == 0.25
    assert [line for line, _ in bad] == [4, 5]


def test_namespace_default_and_live_refused(files, tmp_path):
    a = default_namespace(files["burst"], files["rules"], now=0)
    assert a == default_namespace(files["burst"], files["rules"], now=0)
    assert re.fullmatch(r"bt-[0-9a-f]{8}-19700101T000000000", a)
    with pytest.raises(BacktestError, match="live"):
        run_backtest(files["burst"], files["rules"], tmp_path, namespace="live", progress=False)
