"""The worker's fault rule, without I/O: message faults are isolated, infrastructure faults waited out,
and arbitrary input never raises out of the parsing and scoring functions (property tests)."""

from __future__ import annotations

import json

import pytest
import redis.exceptions as rex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finpulse.core.errors import BadMessage
from finpulse.stream.messages import parse_raw
from finpulse.stream.pipeline import RawItem, score_batch
from finpulse.stream.resilience import InfrastructureDown, is_infrastructure_error, isolate, retry_infra

NOW = 1_760_000_000.0


class FakeTime:
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


async def test_retry_waits_out_an_outage_with_backoff():
    ft, calls = FakeTime(), []

    async def op():
        calls.append(ft.t)
        if len(calls) < 5:
            raise rex.ConnectionError("Connection refused")
        return "ok"

    assert await retry_infra(op, what="x", give_up_after_s=60, sleep=ft.sleep, clock=ft.clock) == "ok"
    assert ft.sleeps == [0.2, 0.4, 0.8, 1.6]


async def test_retry_gives_up_loudly_after_the_limit():
    ft = FakeTime()

    async def op():
        raise rex.TimeoutError("Timeout reading from socket")

    with pytest.raises(InfrastructureDown, match="still failing after 6"):
        await retry_infra(op, what="record in Redis", give_up_after_s=5, sleep=ft.sleep, clock=ft.clock)
    assert max(ft.sleeps) <= 5.0


async def test_a_message_fault_is_not_retried():
    ft, calls = FakeTime(), []

    async def op():
        calls.append(1)
        raise KeyError("title")

    with pytest.raises(KeyError):
        await retry_infra(op, what="x", give_up_after_s=60, sleep=ft.sleep, clock=ft.clock)
    assert calls == [1] and not ft.sleeps


def test_infrastructure_errors_are_told_apart():
    assert is_infrastructure_error(rex.ConnectionError()) and is_infrastructure_error(rex.BusyLoadingError())
    assert is_infrastructure_error(ConnectionRefusedError()) and is_infrastructure_error(TimeoutError())
    assert not is_infrastructure_error(ValueError()) and not is_infrastructure_error(RecursionError())
    assert not is_infrastructure_error(rex.ResponseError("WRONGTYPE"))  # a bug or a bad key, not an outage


async def test_isolate_finds_the_culprits_and_lets_the_rest_through():
    done: list[int] = []

    async def op(batch):
        if any(x % 7 == 3 for x in batch):
            raise TypeError("unhashable")
        done.extend(batch)

    failed = await isolate(list(range(30)), op, what="x", give_up_after_s=1)
    assert sorted(x for x, _ in failed) == [3, 10, 17, 24]
    assert all(isinstance(e, TypeError) for _, e in failed)
    assert sorted(done) == [x for x in range(30) if x % 7 != 3]


async def test_isolate_does_not_blame_messages_for_an_outage():
    async def op(batch):
        raise rex.ConnectionError("down")

    with pytest.raises(InfrastructureDown):
        await isolate([1, 2, 3], op, what="x", give_up_after_s=0)


# --- arbitrary input ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
raw_like = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.text(max_size=30), st.integers(), st.none()),
    "title": st.one_of(st.text(max_size=80), st.integers(), st.lists(st.text(max_size=5), max_size=3)),
    "source": st.one_of(st.text(max_size=10), st.none(), st.integers()),
    "published_at": st.one_of(st.sampled_from(["2025-10-09T08:00:00Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
                                               "9999-12-31T23:59:59Z", "2025-10-09", "nope", ""]),
                              st.integers(), st.floats()),
    "url": st.one_of(st.text(max_size=30), st.none()),
    "summary": st.one_of(st.text(max_size=30), st.none(), st.integers()),
    "tickers": st.one_of(st.lists(st.text(max_size=6), max_size=3), st.text(max_size=6), st.integers()),
    "duplicate_of": st.one_of(st.text(max_size=10), st.none(), st.integers()),
}).flatmap(lambda d: st.dictionaries(st.text(max_size=6), json_values, max_size=3).map(lambda extra: {**extra, **d}))
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    raw_like.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=20000).map(lambda n: (b"[" * n) + (b"]" * n)),
    st.integers(min_value=1, max_value=20000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(min_value=4301, max_value=20000).map(lambda n: b'{"title": "x", "n": ' + b"9" * n + b"}"),
)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_parse_raw_raises_only_bad_message(value):
    try:
        msg = parse_raw(value, max_bytes=65536, now=NOW, future_tolerance_s=300, oldest_ts=946684800.0)
    except BadMessage:
        return
    assert isinstance(msg["title"], str) and msg["title"].strip()


def fake_classify(texts):
    return [{"topic": "Markets", "topic_score": 0.9, "topics_top3": [{"topic": "Markets", "score": 0.9}],
             "sentiment": "neutral", "sentiment_probs": {"negative": 0.1, "neutral": 0.8, "positive": 0.1},
             "sentiment_score": 0.0, "model_version": "t"} for _ in texts]


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=8))
def test_every_message_is_scored_or_dead_lettered(values):
    items = [RawItem(v, "news.raw.t", 0, i) for i, v in enumerate(values)]
    out = score_batch(items, fake_classify, max_bytes=65536, future_tolerance_s=300, now=NOW, oldest_ts=946684800.0)
    assert len(out.scored) + len(out.dead) == len(values)
    assert sorted([d["offset"] for d in out.dead]) == sorted(set(d["offset"] for d in out.dead))
    assert len(out.encoded) == len(out.scored)
    for d in out.dead:
        assert d["reason"] and d["stage"] == "classify"


def test_the_poison_of_the_fault_run_is_dead_lettered():
    poison = b"[" * 30000 + b"]" * 30000
    good = json.dumps({"id": "g1", "title": "Shares rally", "published_at": "2025-10-09T08:00:00Z"}).encode()
    out = score_batch([RawItem(poison, "t", 0, 0), RawItem(good, "t", 0, 1)], fake_classify, max_bytes=65536,
                      future_tolerance_s=300, now=NOW)
    assert [d["offset"] for d in out.dead] == [0] and "nested too deeply" in out.dead[0]["reason"]
    assert [m["id"] for m in out.scored] == ["g1"]


@pytest.mark.parametrize("when, ok", [("1970-01-01T00:00:00Z", False), ("0001-01-01T00:00:00Z", False),
                                      ("1999-12-31T23:59:59Z", False), ("2000-01-01T00:00:00Z", True)])
def test_oldest_event_bound(when, ok):
    value = json.dumps({"id": "a", "title": "t", "published_at": when}).encode()
    if ok:
        parse_raw(value, max_bytes=65536, now=NOW, future_tolerance_s=300, oldest_ts=946684800.0)
    else:
        with pytest.raises(BadMessage) as info:
            parse_raw(value, max_bytes=65536, now=NOW, future_tolerance_s=300, oldest_ts=946684800.0)
        assert info.value.reason.startswith("too_old")


# --- a log that went backwards ---------------------------------------------------------------------

def test_find_resets():
    from finpulse.stream.logwatch import LogState, find_resets

    rec = LogState("c1", {"news.raw.x": "t1", "news.scored.x": "t2"})
    processed = {("news.raw.x", 0): 499, ("news.scored.x", 0): 10}
    same = LogState("c1", {"news.raw.x": "t1", "news.scored.x": "t2"},
                    {("news.raw.x", 0): 500, ("news.scored.x", 0): 40})
    assert find_resets(rec, processed, same) == []
    assert find_resets(LogState(), processed, same) == []  # nothing recorded yet: the first check records
    wiped = LogState("c2", {"news.raw.x": "t9", "news.scored.x": "t8"},
                     {("news.raw.x", 0): 500, ("news.scored.x", 0): 500})  # the new log is even longer
    assert [r.topic for r in find_resets(rec, processed, wiped)] == ["news.raw.x", "news.scored.x"]
    assert "cluster id changed" in find_resets(rec, processed, wiped)[0].why
    recreated = LogState("c1", {"news.raw.x": "t9", "news.scored.x": "t2"},
                         {("news.raw.x", 0): 900, ("news.scored.x", 0): 40})
    assert [(r.topic, "topic id" in r.why) for r in find_resets(rec, processed, recreated)] == [("news.raw.x", True)]
    truncated = LogState("c1", {"news.raw.x": "t1", "news.scored.x": "t2"},
                         {("news.raw.x", 0): 499, ("news.scored.x", 0): 40})
    assert [(r.topic, "truncated" in r.why) for r in find_resets(rec, processed, truncated)] == [("news.raw.x", True)]
    # a broker that tells no cluster id or topic ids (one signal less) is compared on offsets alone
    assert find_resets(rec, processed, LogState(None, {}, {("news.raw.x", 0): 500})) == []


def test_backlog_and_caught_up():
    from finpulse.stream.logwatch import backlog_of, caught_up

    ends = {("news.raw", 0): 100, ("news.raw", 1): 0, ("news.scored", 0): 50, ("alerts", 0): 9}
    processed = {("news.raw", 0): 39, ("news.scored", 0): 49}
    lags = backlog_of(ends, processed, {"news.raw", "news.scored"})
    assert lags == {("news.raw", 0): 60, ("news.raw", 1): 0, ("news.scored", 0): 0}
    now = 1000.0
    ok = {"news.raw|0": {"lag": 3, "at": now - 2}, "news.raw|1": {"lag": 0, "at": now - 2},
          "news.scored|0": {"lag": 0, "at": now - 9}, "news.scored|1": {"lag": 0, "at": now - 1}}
    assert caught_up(ok, now=now, partitions=2, per_partition=64)
    assert not caught_up({**ok, "news.raw|0": {"lag": 3000, "at": now - 2}}, now=now, partitions=2, per_partition=64)
    # a partition not reported recently (its worker died, a rebalance) holds closing back
    assert not caught_up({**ok, "news.scored|1": {"lag": 0, "at": now - 300}}, now=now, partitions=2,
                         per_partition=64)
    assert not caught_up({}, now=now, partitions=2, per_partition=64)


def test_a_backlog_report_remembers_since_when_the_partition_is_empty():
    from finpulse.stream.logwatch import backlog_report

    first = backlog_report(0, 100.0, None)
    assert first == {"lag": 0, "at": 100.0, "zero_since": 100.0}
    assert backlog_report(0, 105.0, first)["zero_since"] == 100.0        # still empty: since 100
    busy = backlog_report(3, 110.0, first)
    assert busy["zero_since"] is None                                    # news arrived
    assert backlog_report(0, 115.0, busy)["zero_since"] == 115.0         # empty again: counts anew
    assert backlog_report(0, 120.0, {"lag": 0, "at": 1.0})["zero_since"] == 120.0  # an old-format report


def test_a_worker_whose_graceful_stop_hangs_exits_with_the_fault_status():
    """stop_worker's SIGTERM is ignored here, as by a shutdown that hangs: the process exits by itself."""
    import subprocess
    import sys

    code = ("import signal, time\n"
            "import finpulse.stream.resilience as r\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "r.STOP_GRACE_S = 0.5\n"
            "r.stop_worker('test fault')\n"
            "time.sleep(30)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert out.returncode == 70, out.stderr
    assert "did not finish" in out.stderr


def test_any_worker_shutdown_that_overruns_its_deadline_ends_the_process():
    """The worker class Faust runs (built by the app factory) arms the shutdown deadline when its
    shutdown begins, whatever began it: a told stop that hangs exits EXIT_STOP_FORCED, a fault's
    EXIT_FAULT (CI saw a worker hang for over 60 s after a plain SIGINT)."""
    import subprocess
    import sys

    def run(faulted: bool) -> subprocess.CompletedProcess:
        code = ("import time\n"
                "import finpulse.stream.resilience as r\n"
                "from finpulse.core.settings import Settings\n"
                "from finpulse.stream import app as app_mod\n"
                "r.STOP_GRACE_S = 0.5\n"
                "app = app_mod.create_app(Settings(kafka_bootstrap='127.0.0.1:9', namespace='grace-test'))\n"
                f"if {faulted}: app_mod.current().faults.append('test fault')\n"
                "worker = app.Worker(loglevel='warn')\n"
                "worker.on_worker_shutdown()   # what Faust calls once the worker begins to stop\n"
                "time.sleep(30)                # a shutdown that never finishes\n")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=25)

    told, faulted = run(False), run(True)
    assert told.returncode == 75, told.stderr
    assert faulted.returncode == 70, faulted.stderr
    assert "did not finish in 0 s" in told.stderr and "status 75" in told.stderr
    assert "unfinished tasks" in told.stderr   # where the shutdown waited, for the operator
