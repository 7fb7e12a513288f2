"""A story spread over five topics fires exactly one alert, on its (emerging) entity: a backtest through
the real broker, Redis and worker with the shipped rules, on pre-scored real-shaped input."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta

from finpulse.backtest import run_backtest
from finpulse.core.settings import REPO_ROOT

START = datetime(2023, 3, 1, 0, 0, tzinfo=UTC)
SOURCES = ("wire-a", "paper-b", "site-c")
TOPICS = ("Markets", "Macro", "Earnings", "Energy | Oil", "Stock Commentary", "Politics")
BACKGROUND = (
    "markets steady as traders await inflation data {n}",
    "shares edge higher in quiet trade {n}",
    "bond yields slip ahead of jobs report {n}",
    "oil prices hold near two-week high {n}",
    "retail sales beat forecasts in february {n}",
    "factory orders fall for a second month {n}",
)
STORY = [  # (hours after the story starts, title, topic, sentiment)
    (0.0, "Silicon Valley Bank (SVB) shares plunge as it scrambles to raise capital", "Stock Movement", "negative"),
    (0.7, "SVB sell-off drags bank stocks lower", "Markets", "negative"),
    (1.5, "Startups rush to pull deposits from SVB", "Company | Product News", "negative"),
    (2.2, "Regulators shut down Silicon Valley Bank", "Fed | Central Banks", "negative"),
    (2.9, "SVB failure is the biggest bank collapse since 2008", "General News | Opinion", "negative"),
    (3.6, "What the SVB collapse means for tech start-ups", "General News | Opinion", "neutral"),
    (4.3, "Silicon Valley Bank customers fear for payroll", "Company | Product News", "negative"),
    (5.0, "Politicians call for inquiry into SVB failure", "Politics", "negative"),
    (5.8, "SVB parent files for bankruptcy protection", "Company | Product News", "negative"),
    (6.5, "Silicon Valley Bank: deposits to be guaranteed, officials say", "Fed | Central Banks", "neutral"),
]


def rows() -> list[dict]:
    rng = random.Random(11)
    out = []
    t = START
    n = 0
    while t < START + timedelta(days=10):   # ten days of about 40 headlines a day, one in four negative
        n += 1
        neg = n % 4 == 0
        out.append({"published_at": t.isoformat(), "title": BACKGROUND[n % len(BACKGROUND)].format(n=n),
                    "source": SOURCES[n % 3], "topic": TOPICS[n % len(TOPICS)],
                    "sentiment": "negative" if neg else "neutral", "sentiment_score": -0.7 if neg else 0.0})
        t += timedelta(minutes=rng.randint(20, 50))
    story_start = START + timedelta(days=8, hours=9)
    for i, (h, title, topic, sentiment) in enumerate(STORY):
        out.append({"published_at": (story_start + timedelta(hours=h)).isoformat(), "title": title,
                    "source": SOURCES[i % 3], "topic": topic, "sentiment": sentiment,
                    "sentiment_score": -0.8 if sentiment == "negative" else 0.0})
    return sorted(out, key=lambda r: r["published_at"])


def test_a_story_over_five_topics_fires_one_entity_alert(stack, tmp_path):
    src = tmp_path / "svb_like.csv"
    data = rows()
    with open(src, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(data[0]))
        w.writeheader()
        w.writerows(data)
    assert len({topic for _, _, topic, _ in STORY}) >= 5
    out = tmp_path / "out"
    s = run_backtest(src, REPO_ROOT / "config" / "rules.toml", out, scored_input=True, progress=False,
                     kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
    assert s["complete"] and s["processed"] == len(data)
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    fired = {a["alert_id"]: a for a in alerts if a["status"] == "fired"}
    assert [(a["rule"], a["scope"]) for a in fired.values()] == [("entity-negative-surge",
                                                                   "entity:Silicon Valley Bank")]
    alert = next(iter(fired.values()))
    assert alert["spike_test"] == "surge" and alert["p_value"] < 1e-4 / 8 and alert["severity"] == "critical"
    # the headlines that named it only by its acronym count too, and the alert shows them
    assert alert["negative_count"] >= 5
    assert any("SVB" in h["title"] and "Silicon" not in h["title"] for h in alert["top_headlines"])
    assert alert["window_end"] < (START + timedelta(days=8, hours=9 + 7)).isoformat().replace("+00:00", "Z")
