"""Scoring alerts against known events (``finpulse.evaluation``): pure, on synthetic alerts and events;
and the real events file, when ``../shared/streams`` is there."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finpulse.core.settings import REPO_ROOT
from finpulse.evaluation import (
    Event,
    EventsError,
    format_duration,
    incidents,
    load_events,
    score_alerts,
    stream_name,
)

T0 = datetime(2020, 3, 1, tzinfo=UTC)
H = 3600.0
SHARED_EVENTS = REPO_ROOT.parent / "shared" / "streams" / "events.csv"


def at(hours: float) -> float:
    return (T0 + timedelta(hours=hours)).timestamp()


def iso(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def alert(aid: str, hours: float, status: str = "fired", severity: str = "warning", scope: str = "all") -> dict:
    return {"alert_id": aid, "status": status, "severity": severity, "window_end": iso(hours), "rule": "spike",
            "scope": scope}


EVENTS = [Event("crash", at(10), at(20)), Event("lockdown", at(100), at(110)), Event("quiet", at(200), at(210))]


def test_matching_rule_caught_lead_time_first_alert_and_unmatched():
    alerts = [
        alert("a-before", 9.5),                     # before the crash window: unmatched
        alert("a-crash", 12), alert("a-crash", 12.5, "resolved"),
        alert("a-crash2", 11, scope="topic:Oil"),   # earlier: the first match
        alert("a-end", 20),                         # exactly at the end: inside
        alert("a-after", 20.25),                    # after the end (no grace): unmatched
        alert("a-lock", 100),                       # exactly at the start: inside, lead 0
        alert("a-lock", 104, severity="critical"),  # escalation of the same incident: not counted again
        alert("a-far", 150),
        alert("r-only", 150.5, "resolved"),        # only resolved: not an incident
    ]
    ev = score_alerts(alerts, EVENTS, at(0), at(240))
    crash, lock, quiet = ev.events
    assert crash.caught and crash.first.alert_id == "a-crash2" and crash.lead_time_s == 1 * H
    assert [m.alert_id for m in crash.matches] == ["a-crash2", "a-crash", "a-end"]
    assert lock.caught and lock.lead_time_s == 0 and [m.alert_id for m in lock.matches] == ["a-lock"]
    assert not quiet.caught and quiet.lead_time_s is None and quiet.first is None
    assert [i.alert_id for i in ev.unmatched] == ["a-before", "a-after", "a-far"]
    assert len(ev.incidents) == 7
    assert ev.days == 10 and ev.unmatched_per_day == pytest.approx(0.3)
    assert ev.events_caught == 2 and ev.events_total == 3

    d = ev.as_dict()
    json.dumps(d)
    assert d["events_caught"] == 2 and d["events_total"] == 3 and d["unmatched_alerts"] == 3
    assert d["matched_alerts"] == 4 and d["incidents"] == 7 and d["days"] == 10 and d["unmatched_per_day"] == 0.3
    assert d["events"][0] == {"event": "crash", "start": iso(10).replace("Z", ".000Z"),
                              "end": iso(20).replace("Z", ".000Z"), "in_span": True, "caught": True,
                              "lead_time_s": 3600.0, "first_alert_id": "a-crash2",
                              "first_alert": {"alert_id": "a-crash2", "window_end": iso(11), "rule": "spike",
                                              "scope": "topic:Oil", "severity": "warning"},
                              "alerts": 3, "alert_ids": ["a-crash2", "a-crash", "a-end"]}
    assert d["events"][2]["caught"] is False and d["events"][2]["first_alert_id"] is None
    assert d["median_lead_time_s"] == 1800.0
    assert [u["alert_id"] for u in d["unmatched"]] == ["a-before", "a-after", "a-far"]


def test_grace_extends_the_window_after_the_end_only():
    alerts = [alert("late", 20.5), alert("early", 9.9)]
    assert not score_alerts(alerts, EVENTS[:1], at(0), at(48)).events[0].caught
    ev = score_alerts(alerts, EVENTS[:1], at(0), at(48), grace_s=H)
    assert ev.events[0].caught and ev.events[0].lead_time_s == 10.5 * H
    assert [i.alert_id for i in ev.unmatched] == ["early"]
    with pytest.raises(ValueError, match="grace"):
        score_alerts(alerts, EVENTS, at(0), at(1), grace_s=-1)


def test_one_incident_can_catch_overlapping_events_and_is_then_not_unmatched():
    events = [Event("a", at(0), at(10)), Event("b", at(5), at(15))]
    ev = score_alerts([alert("x", 7)], events, at(0), at(24))
    assert [r.caught for r in ev.events] == [True, True]
    assert [r.lead_time_s for r in ev.events] == [7 * H, 2 * H]
    assert ev.unmatched == () and ev.unmatched_per_day == 0


def test_escalation_time_is_the_first_fired_record_whatever_the_input_order():
    recs = [alert("x", 30, severity="critical"), alert("x", 25, "resolved"), alert("x", 12)]
    (inc,) = incidents(recs)
    assert inc.time == at(12) and inc.record["severity"] == "warning"
    # the incident started before the event: its escalation inside the window does not catch it
    ev = score_alerts([alert("x", 9), alert("x", 11, severity="critical")], EVENTS[:1], at(0), at(48))
    assert not ev.events[0].caught and [i.alert_id for i in ev.unmatched] == ["x"]


def test_events_outside_the_history_span_are_listed_not_counted():
    ev = score_alerts([], EVENTS, at(95), at(150))
    assert [r.in_span for r in ev.events] == [False, True, False]
    assert ev.events_total == 1 and ev.events_caught == 0
    assert ev.as_dict()["events_outside_span"] == 2


def test_no_alerts_and_a_zero_span():
    ev = score_alerts([], [], at(1), at(1))
    assert ev.days == 0 and ev.unmatched_per_day is None and ev.events_total == 0
    assert ev.as_dict()["median_lead_time_s"] is None
    with pytest.raises(ValueError, match="span_end"):
        score_alerts([], [], at(2), at(1))


def test_load_events_filters_by_stream_and_keeps_unnamed_ones(tmp_path):
    p = tmp_path / "events.csv"
    p.write_text("\ufeffstream,event,start,end,what an analyst expects,public record,extra\n"
                 'covid,Crash,2020-03-08T18:00:00Z,2020-03-10T06:00:00Z,market-wide,"Dow -7.8%, 9 Mar",x\n'
                 "bbc,Mini-budget,2022-09-23 08:00:00+00:00,2022-10-03T01:00:00+01:00,gilts,BoE,\n"
                 "\n"
                 ",Anywhere,2021-01-01T00:00:00Z,2021-01-02T00:00:00Z,,,\n")
    every = load_events(p)
    assert [e.name for e in every] == ["Crash", "Mini-budget", "Anywhere"]
    crash = every[0]
    assert crash.stream == "covid" and crash.start == datetime(2020, 3, 8, 18, tzinfo=UTC).timestamp()
    assert crash.expects == "market-wide" and crash.record == "Dow -7.8%, 9 Mar" and crash.line == 2
    assert every[1].end == datetime(2022, 10, 3, tzinfo=UTC).timestamp()
    assert [e.name for e in load_events(p, stream="covid")] == ["Crash", "Anywhere"]
    assert [e.name for e in load_events(p, stream="nothing")] == ["Anywhere"]


def test_load_events_without_a_stream_column_applies_to_any_stream(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("Event , Start,End\nA,2020-01-01T00:00:00Z,2020-01-01T01:00:00Z\n")
    assert [(e.name, e.stream) for e in load_events(p, stream="whatever")] == [("A", None)]


@pytest.mark.parametrize(("body", "match"), [
    ("event,start\nA,2020-01-01T00:00:00Z\n", "missing column"),
    ("event,start,end\nA,2020-01-01T00:00:00,2020-01-02T00:00:00Z\n", "line 2: start has no UTC offset"),
    ("event,start,end\nA,yesterday,2020-01-02T00:00:00Z\n", "line 2: start is not RFC 3339"),
    ("event,start,end\nA,2020-01-02T00:00:00Z,2020-01-01T00:00:00Z\n", "line 2: end .* is before start"),
    ("event,start,end\n,2020-01-01T00:00:00Z,2020-01-02T00:00:00Z\n", "line 2: empty event name"),
])
def test_load_events_rejects_bad_files(tmp_path, body, match):
    p = tmp_path / "e.csv"
    p.write_text(body)
    with pytest.raises(EventsError, match=match):
        load_events(p)


def test_stream_name_is_the_stem_without_compression():
    assert stream_name("/x/covid_2020-03_guardian_bbc.csv") == "covid_2020-03_guardian_bbc"
    assert stream_name(Path("a/b.c.jsonl.gz")) == "b.c"
    assert stream_name("plain") == "plain"


def test_format_duration():
    assert [format_duration(x) for x in (None, 5, 600, 5400, 3 * 86400)] == ["-", "5s", "10m", "1.5h", "3.0d"]


@pytest.mark.skipif(not SHARED_EVENTS.is_file(), reason="../shared/streams is not there")
def test_the_shared_events_file_loads_per_stream():
    every = load_events(SHARED_EVENTS)
    assert every and all(e.end >= e.start and e.stream for e in every)
    covid = load_events(SHARED_EVENTS, stream="covid_2020-03_guardian_bbc")
    assert covid and {e.stream for e in covid} == {"covid_2020-03_guardian_bbc"}
