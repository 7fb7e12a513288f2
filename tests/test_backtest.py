"""``finpulse backtest``: real broker, Redis and worker; the alert logic is tested on pre-scored input
(``scored_input=True``) so the classifier's predictions cannot decide the outcome."""

from __future__ import annotations

import csv
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finpulse.backtest import (
    TIMESERIES_COLUMNS,
    BacktestError,
    backtest_rules,
    default_namespace,
    dump_rules_toml,
    read_scored_history,
    run_backtest,
)
from finpulse.core.settings import REPO_ROOT
from finpulse.ingest.replay import read_history

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


# --- unit --------------------------------------------------------------------------------------

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
