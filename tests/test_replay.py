"""Replay of historical headlines: reading, event-time order, bad rows, and producing to a real broker."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from finpulse.core.messages import validate
from finpulse.core.settings import Settings
from finpulse.ingest.dedup import history_id
from finpulse.ingest.replay import (
    ReplayError,
    parse_bound,
    parse_history_time,
    read_history,
    replay,
    version_id,
)

DATES_ONLY = """headline,date,stock
Acme beats estimates,2024-03-05,ACME
Oil slides as inventories build,2024-03-04,
"Acme, Inc. names new CEO",2024-03-05,"ACME,$BETA"
Broken row,not-a-date,X
Ambiguous row,03/04/2024,
,2024-03-04,
Bad ticker row,2024-03-04,lower case!
Central bank holds rates,2024-03-04,
"""

FULL = """Headline Text,Published,Link,Publisher,Tickers
Fed holds rates,2024-03-05T14:00:00Z,https://x.example/1,Wire,
"Multi-line
headline about banks",2024-03-05 09:30:00-05:00,https://x.example/2,Wire,JPM
Naive time is read in tz,2024-03-05 13:00:00,,Wire,
RFC 2822 time,"Tue, 05 Mar 2024 13:00:00 GMT",,Wire,
Epoch seconds,1709647200,,Wire,
Fed holds rates,2024-03-05T14:00:00Z,https://x.example/1,Wire,
Too,many,fields,here,X,Y
Same story second ticker,2024-03-05T15:00:00Z,,Wire,AAPL
Same story second ticker,2024-03-05T15:00:00Z,,Wire,MSFT
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- reading -------------------------------------------------------------------------------------

def test_dates_only_csv_order_mapping_and_bad_rows(tmp_path):
    rows, bad = read_history(write(tmp_path, "d.csv", DATES_ONLY))
    assert [r["title"] for r in rows] == ["Oil slides as inventories build", "Central bank holds rates",
                                          "Acme beats estimates", "Acme, Inc. names new CEO"]
    assert [r["published_at"] for r in rows] == ["2024-03-04T00:00:00.000Z"] * 2 + ["2024-03-05T00:00:00.000Z"] * 2
    assert all(r["published_at_precision"] == "day" and r["published_at_inferred"] is False for r in rows)
    assert rows[2]["tickers"] == ["ACME"] and rows[3]["tickers"] == ["ACME", "BETA"] and rows[0]["tickers"] is None
    for r in rows:
        validate("news.raw", r)
        assert r["id"] == history_id(source=None, title=r["title"], published_at=r["published_at"])
    assert [line for line, _ in bad] == [5, 6, 7, 8]
    reasons = dict(bad)
    assert "not-a-date" in reasons[5] and "ambiguous" in reasons[6] and "empty title" in reasons[7]
    assert "ticker" in reasons[8]
    # the end-of-day rule and a time zone
    rows_end, _ = read_history(tmp_path / "d.csv", date_only="end", tz="America/New_York")
    assert rows_end[0]["published_at"] == "2024-03-05T04:59:59.999Z"


def test_full_timestamps_csv_with_column_mapping(tmp_path):
    rows, bad = read_history(write(tmp_path, "f.csv", FULL), title_col="headline text", time_col="Published",
                             url_col="Link", source_col="Publisher", ticker_col="Tickers", tz="Europe/Berlin")
    got = [(r["title"], r["published_at"]) for r in rows]
    assert got == [
        ("Naive time is read in tz", "2024-03-05T12:00:00.000Z"),
        ("RFC 2822 time", "2024-03-05T13:00:00.000Z"),
        ("Fed holds rates", "2024-03-05T14:00:00.000Z"),  # line 2 and line 7 share a time: file order
        ("Epoch seconds", "2024-03-05T14:00:00.000Z"),
        ("Multi-line headline about banks", "2024-03-05T14:30:00.000Z"),
        ("Same story second ticker", "2024-03-05T15:00:00.000Z"),
    ]
    titles = [t for t, _ in got]
    assert all("published_at_precision" not in r for r in rows)
    fed = rows[titles.index("Fed holds rates")]
    assert fed["url"] == "https://x.example/1" and fed["source"] == "Wire"
    assert rows[-1]["tickers"] == ["AAPL", "MSFT"]  # repeated story, other ticker: merged
    # line numbers are physical lines: the multi-line row starts at 3, so the next ones shift
    assert bad == [(8, "duplicate of line 2"), (9, "expected 5 fields, got 6")]


def test_jsonl_ids_epoch_millis_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"id": "n-1", "text": "Bank shares tumble", "created_at": 1709647200000, "ticker": "BAC"}),
        "",
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "n-2", "text": "No time at all"}),
        json.dumps({"id": 3, "title": "Numeric id", "timestamp": "2024-03-05T10:00:00+01:00", "tickers": ["c", "$WFC"]}),
    ]
    path = write(tmp_path, "h.jsonl", "\n".join(lines) + "\n")
    rows, bad = read_history(path, source="archive")
    assert [(r["id"], r["published_at"]) for r in rows] == [("3", "2024-03-05T09:00:00.000Z"),
                                                            ("n-1", "2024-03-05T14:00:00.000Z")]
    assert rows[0]["tickers"] == ["C", "WFC"] and rows[1]["source"] == "archive"
    assert [line for line, _ in bad] == [3, 4, 5]
    assert "not JSON" in bad[0][1] and "JSON object" in bad[1][1] and "no time field" in bad[2][1]
    again, _ = read_history(path, source="archive")
    assert [r["id"] for r in again] == [r["id"] for r in rows]  # stable ids
    hashed, _ = read_history(path, id_col="", source="archive")
    assert hashed[0]["id"] == history_id(source="archive", title="Numeric id", published_at="2024-03-05T09:00:00.000Z")


def test_default_column_priority_and_errors(tmp_path):
    path = write(tmp_path, "p.csv", "text,title,date,published_at\nbody text,The title,2024-01-01,2024-03-05T10:00:00Z\n")
    rows, bad = read_history(path)
    assert (rows[0]["title"], rows[0]["published_at"], bad) == ("The title", "2024-03-05T10:00:00.000Z", [])
    rows, _ = read_history(path, title_col="text", time_col="date")
    assert (rows[0]["title"], rows[0]["published_at"]) == ("body text", "2024-01-01T00:00:00.000Z")
    with pytest.raises(ValueError, match="no time column"):
        read_history(write(tmp_path, "n.csv", "title,when\nx,2024-01-01\n"))
    with pytest.raises(ValueError, match="not in the header"):
        read_history(path, url_col="permalink")
    with pytest.raises(ValueError, match="format"):
        read_history(write(tmp_path, "x.txt", "title\n"))
    two = write(tmp_path, "two.csv", "title,date,time\nSplit columns,2024-03-05,14:30\n")
    rows, _ = read_history(two, time_col="date+time")
    assert rows[0]["published_at"] == "2024-03-05T14:30:00.000Z"


def test_time_parsing_rules():
    assert parse_history_time("2024-03-05 10:00:00 UTC")[0] == datetime(2024, 3, 5, 10, tzinfo=UTC)
    assert parse_history_time("20240305") == (datetime(2024, 3, 5, tzinfo=UTC), True)
    assert parse_history_time("Mar 5, 2024")[1] is True
    assert parse_history_time("05/03/2024", time_format="%d/%m/%Y")[0].month == 3
    assert parse_history_time(1709647200.5)[0].microsecond == 500000
    with pytest.raises(ValueError, match="ambiguous"):
        parse_history_time("05/03/2024")
    assert parse_bound("2024-03-05") == datetime(2024, 3, 5, tzinfo=UTC).timestamp()
    assert parse_bound(datetime(2024, 3, 5)) == datetime(2024, 3, 5, tzinfo=UTC).timestamp()


# --- de-duplication (as the crawler) -------------------------------------------------------------

SYNDICATED = """title,published_at,source,url,guid
UPDATE 1-Acme Corp shares plunge 12% after profit warning - Reuters,2024-03-05T10:05:00Z,reuters,https://r.example/a,r-1
Acme Corp shares plunge 12% after profit warning,2024-03-05T10:00:00Z,wire,https://w.example/a?utm_source=x,w-1
Acme Corp shares plunge 15% after profit warning,2024-03-05T10:10:00Z,other,https://o.example/a,o-1
Acme profit warning: what it means for savers,2024-03-05T11:00:00Z,blog,https://w.example/a,b-1
Oil steady as traders await OPEC meeting,2024-03-05T12:00:00Z,wire,https://w.example/b,w-2
"""

EDITED = """guid,title,published_at,ticker
g-1,Bank X shares fall after results,2024-03-05T10:00:00Z,BX
g-2,Unrelated story about retail sales,2024-03-05T10:30:00Z,
g-1,Bank X shares slump after results,2024-03-05T11:00:00Z,BX
g-1,Bank X shares fall after results,2024-03-05T09:00:00Z,BX
g-1,Bank X shares fall after results,2024-03-05T09:00:00Z,BY
g-1,Bank X shares fall after results,2024-03-05T09:00:00Z,BY
"""


def test_syndicated_copies_across_sources_are_marked(tmp_path):
    path = write(tmp_path, "syn.csv", SYNDICATED)
    rows, bad = read_history(path, id_col="guid")
    assert bad == []
    by_id = {r["id"]: r for r in rows}
    assert [r["id"] for r in rows] == ["w-1", "r-1", "o-1", "b-1", "w-2"]  # event-time order
    assert by_id["w-1"]["duplicate_of"] is None  # the first copy is the story
    assert by_id["r-1"]["duplicate_of"] == "w-1"  # near-duplicate title from another source
    assert by_id["o-1"]["duplicate_of"] is None  # 15% is another fact than 12%
    assert by_id["b-1"]["duplicate_of"] == "w-1"  # the same article (canonical URL), another title
    assert by_id["w-2"]["duplicate_of"] is None
    for r in rows:
        validate("news.raw", r)
    # without dedup nothing is marked; the rows and ids are the same
    plain, plain_bad = read_history(path, id_col="guid", dedup=False)
    assert [r["id"] for r in plain] == [r["id"] for r in rows] and plain_bad == []
    assert all(r["duplicate_of"] is None for r in plain)


def test_edited_repeat_of_an_id_is_one_counted_story(tmp_path):
    path = write(tmp_path, "ed.csv", EDITED)
    rows, bad = read_history(path, id_col="guid")
    # line 6 repeats line 5 (same id, title, time): tickers merged into it; line 7 adds nothing
    assert bad == [(7, "duplicate of line 5")]
    counted = [r for r in rows if not r["duplicate_of"]]
    assert [(r["id"], r["published_at"]) for r in counted] == [("g-1", "2024-03-05T09:00:00.000Z"),
                                                                ("g-2", "2024-03-05T10:30:00.000Z")]
    assert counted[0]["tickers"] == ["BX", "BY"]  # the first by event time is the story (file line 5)
    later = [r for r in rows if r["duplicate_of"]]
    assert [r["duplicate_of"] for r in later] == ["g-1", "g-1"]
    assert [r["title"] for r in later] == ["Bank X shares fall after results", "Bank X shares slump after results"]
    assert [r["id"] for r in later] == [version_id("g-1", r["title"], r["published_at"]) for r in later]
    assert len({r["id"] for r in rows}) == len(rows)  # every message has its own id
    again, _ = read_history(path, id_col="guid")
    assert [r["id"] for r in again] == [r["id"] for r in rows]  # stable across replays
    for r in rows:
        validate("news.raw", r)
    # dedup=False: the old result, a reused id with another title or time is a bad row
    plain, plain_bad = read_history(path, id_col="guid", dedup=False)
    assert [(r["id"], r["title"]) for r in plain] == [("g-1", "Bank X shares fall after results"),
                                                     ("g-2", "Unrelated story about retail sales")]
    assert [line for line, _ in plain_bad] == [4, 5, 6, 7]
    assert all("already used at line 2 by another headline" in why for _, why in plain_bad)


def test_replay_counts_marked_duplicates(tmp_path):
    path = write(tmp_path, "ed.csv", EDITED)
    fake = FakeProducer()
    res = replay(path, Settings(namespace="t-fake"), producer=fake, progress=False, id_col="guid")
    assert (res.produced, res.marked_duplicate, len(res.bad)) == (4, 2, 1)
    assert "2 marked duplicate" in res.summary()
    assert sum(1 for m in fake.sent if m["duplicate_of"]) == 2
    only_late = replay(path, Settings(namespace="t-fake"), producer=FakeProducer(), progress=False, id_col="guid",
                       from_ts="2024-03-05T10:00:00Z")
    assert (only_late.produced, only_late.marked_duplicate) == (3, 2)  # marks do not depend on the range
    plain = replay(path, Settings(namespace="t-fake"), producer=FakeProducer(), progress=False, id_col="guid",
                   dedup=False)
    assert (plain.produced, plain.marked_duplicate, len(plain.bad)) == (2, 0, 4)


def test_a_landing_page_link_is_warned_about(tmp_path, caplog):
    rows = "".join(f"Story number {i} about markets today,2024-03-05T{i // 4:02d}:{i % 4 * 15:02d}:00Z,"
                   f"https://news.example/markets\n" for i in range(30))
    path = write(tmp_path, "landing.csv", "title,published_at,url\n" + rows)
    with caplog.at_level("WARNING", logger="finpulse.ingest.replay"):
        marked, _ = read_history(path)
    assert sum(1 for r in marked if r["duplicate_of"]) == 29 and "url_col=''" in caplog.text
    plain, _ = read_history(path, url_col="")
    assert all(r["duplicate_of"] is None for r in plain)


def test_cli_no_dedup_reaches_replay_and_backtest(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import finpulse.backtest
    import finpulse.ingest.replay
    from finpulse.backtest import BacktestError
    from finpulse.cli import main

    seen: list[tuple[str, bool]] = []

    def fake_replay(path, settings, **kw):
        seen.append(("replay", kw["dedup"]))
        raise ReplayError("stop here")

    def fake_backtest(path, rules_path, out_dir, **kw):
        seen.append(("backtest", kw["dedup"]))
        raise BacktestError("stop here")

    monkeypatch.setattr(finpulse.ingest.replay, "replay", fake_replay)
    monkeypatch.setattr(finpulse.backtest, "run_backtest", fake_backtest)
    monkeypatch.setenv("FINPULSE_KAFKA_BOOTSTRAP", "localhost:1")
    src = write(tmp_path, "h.csv", "published_at,title\n")
    for extra in ([], ["--no-dedup"]):
        CliRunner().invoke(main, ["replay", str(src), *extra])
        CliRunner().invoke(main, ["backtest", str(src), "--out", str(tmp_path / "o"), *extra])
    assert seen == [("replay", True), ("backtest", True), ("replay", False), ("backtest", False)]


STREAMS = Path("/work/shared/streams")


@pytest.mark.skipif(not (STREAMS / "bbc_business_2022-2024.csv").is_file(), reason="no shared streams")
def test_real_bbc_captures_count_each_story_once():
    path = STREAMS / "bbc_business_2022-2024.csv"
    rows, bad = read_history(path, id_col="guid")
    assert len(rows) + len(bad) == 2496
    assert not [why for _, why in bad if "already used" in why]  # a reused guid is no longer a bad row
    counted = [r for r in rows if not r["duplicate_of"]]
    assert len(counted) < 2000  # 613 of the 2,496 guids are repeats
    assert len({r["id"] for r in counted}) == len(counted)
    ids, firsts = {r["id"] for r in rows}, {r["duplicate_of"] for r in rows if r["duplicate_of"]}
    assert firsts <= ids  # duplicate_of names a message of the file ...
    assert not [r for r in rows if r["duplicate_of"] and r["id"] in firsts]  # ... that is not marked itself
    plain, plain_bad = read_history(path, id_col="guid", dedup=False)
    assert all(r["duplicate_of"] is None for r in plain) and len(plain) < len(rows)
    assert sum("already used" in why for _, why in plain_bad) > 500  # the old result


# --- producing -----------------------------------------------------------------------------------

class FakeProducer:
    topic = "news.raw.fake"

    def __init__(self):
        self.sent: list[dict] = []

    def send(self, msg):
        self.sent.append(msg)
        return msg

    def wait(self, futures, timeout_s=60.0):
        return len(futures)

    def close(self):
        pass


def test_speed_paces_by_scaled_event_time_gaps(tmp_path):
    path = write(tmp_path, "s.csv", "title,timestamp\na,2024-03-05T10:00:00Z\nb,2024-03-05T10:01:00Z\n"
                                    "c,2024-03-05T10:03:00Z\nd,2024-03-05T12:00:00Z\n")
    slept: list[float] = []
    res = replay(path, Settings(namespace="t-fake"), speed=60, max_sleep_s=5, producer=FakeProducer(),
                 progress=False, sleep=slept.append)
    assert res.produced == 4
    # the fake sleep does not advance the clock: each value is the cumulative schedule 1 s, 1+2 s, 3+5 s (capped)
    assert slept == pytest.approx([1.0, 3.0, 8.0], abs=0.2)
    fast = FakeProducer()
    t0 = time.monotonic()
    replay(path, Settings(namespace="t-fake"), producer=fast, progress=False, sleep=slept.append)
    assert time.monotonic() - t0 < 1 and len(slept) == 3 and [m["title"] for m in fast.sent] == list("abcd")


def test_replay_to_the_broker_in_event_time_order(tmp_path, namespace, kafka_bootstrap, capsys):
    from kafka import KafkaConsumer, TopicPartition

    settings = Settings(namespace=namespace, kafka_bootstrap=kafka_bootstrap, partitions=1)
    path = write(tmp_path, "d.csv", DATES_ONLY)
    res = replay(path, settings, from_ts="2024-03-04", to_ts="2024-03-06")
    assert (res.read, res.produced, res.filtered, len(res.bad)) == (8, 4, 0, 4)
    assert res.topic == f"news.raw.{namespace}" and "produced 4" in res.summary()
    assert "replay" in capsys.readouterr().err  # the progress bar
    only_5th = replay(path, settings, from_ts="2024-03-05", to_ts=datetime(2024, 3, 6, tzinfo=UTC),
                      progress=False)
    assert (only_5th.produced, only_5th.filtered) == (2, 2)

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(res.topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 6 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(json.loads(r.value) for r in records)
    finally:
        consumer.close()
    first, second = got[:4], got[4:]
    assert [m["published_at"] for m in first] == sorted(m["published_at"] for m in first)
    assert [m["title"] for m in first] == ["Oil slides as inventories build", "Central bank holds rates",
                                           "Acme beats estimates", "Acme, Inc. names new CEO"]
    assert [m["id"] for m in second] == [m["id"] for m in first[2:]]  # replaying again: same ids


def test_replay_reports_broker_failure_with_partial_counts(tmp_path):
    from finpulse.ingest.producer import ProduceError

    class Failing(FakeProducer):
        def wait(self, futures, timeout_s=60.0):
            raise ProduceError("broker down", delivered=1)

    path = write(tmp_path, "d.csv", DATES_ONLY)
    with pytest.raises(ReplayError) as err:
        replay(path, Settings(namespace="t-fake"), producer=Failing(), progress=False)
    assert err.value.result.produced == 1 and len(err.value.result.bad) == 4
