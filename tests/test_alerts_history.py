"""Alert history and silences in Redis (one Redis and the cluster: the ``redis_client`` fixture)."""

from __future__ import annotations

import pytest

import finpulse.alerts.history as history_mod
from finpulse.alerts.history import AlertHistory
from finpulse.alerts.silences import Silences

pytestmark = pytest.mark.asyncio


def record(i: int, scope: str = "topic:Macro", severity: str = "warning", status: str = "fired") -> dict:
    return {"event_id": f"al_{i}.{status}.{severity}", "alert_id": f"al_{i}", "scope": scope, "status": status,
            "severity": severity, "window_end": f"2024-05-06T{9 + i // 60:02d}:{i % 60:02d}:00.000Z", "rule": "r"}


async def test_history_is_idempotent_filtered_and_bounded(redis_client, monkeypatch):
    h = AlertHistory(redis_client, "t")
    await h.add([record(1), record(2, "topic:Earnings", "critical"), record(1)])  # record 1 produced twice
    await h.add([record(1, status="resolved")])
    rows = await h.query()
    assert len(rows) == 3 and rows[0]["event_id"] == "al_2.fired.critical"  # newest window end first
    assert [r["alert_id"] for r in await h.query(severity="critical")] == ["al_2"]
    assert {r["status"] for r in await h.query(scope="topic:Macro")} == {"fired", "resolved"}
    assert await h.query(until=0) == []
    await h.acknowledge("al_1", "desk", "looking")
    assert all(r["acknowledged"]["by"] == "desk" for r in await h.query(scope="topic:Macro"))
    monkeypatch.setattr(history_mod, "MAX_RECORDS", 5)
    for i in range(6):
        await h.acknowledge(f"al_x{i}", "desk", now=2000 + i)
    assert len(await h.acks()) <= 5 and "al_x5" in await h.acks()  # bounded, the newest kept
    await h.add([record(10 + i) for i in range(6)])
    kept = await h.query(limit=100)
    assert len(kept) == 5 and "al_1.fired.warning" not in {r["event_id"] for r in kept}  # the oldest went


async def test_open_alerts_take_the_newest_fired_record_and_stop_reading_once_all_are_found(redis_client):
    from finpulse.alerts.history import open_alerts

    class Counting:  # the same client; counts the record reads (500 ids each)
        def __init__(self, inner):
            self.inner, self.reads = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        async def hmget(self, *args):
            self.reads += 1
            return await self.inner.hmget(*args)

    client = Counting(redis_client)
    h = AlertHistory(client, "t-open")
    def at(i: int, **kw) -> dict:  # window ends one minute apart from 2024-05-06 00:00
        return {**record(1, **kw), "event_id": f"al_{i}.{kw.get('status', 'fired')}", "alert_id": f"al_{i}",
                "window_end": f"2024-05-{6 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00.000Z"}

    await h.add([at(i, scope=f"topic:Old{i}") for i in range(1, 1200)])  # 1,199 older alerts
    newest = {**at(1300), "alert_id": "al_5", "event_id": "al_5.fired.critical", "severity": "critical"}
    await h.add([newest, at(1301, status="resolved")])
    states = [{"alert_id": "al_5", "rule": "r"}, {"alert_id": "al_missing", "rule": "r"}]
    client.reads = 0
    got = await open_alerts(h, states[:1])
    assert got[0]["record"]["event_id"] == "al_5.fired.critical"  # the newest of al_5's two fired records
    assert client.reads == 1  # found in the first 500: the other 700 are not read
    got = await open_alerts(h, states)  # one without any record: all read, record None
    assert got[0]["record"]["severity"] == "critical" and got[1]["record"] is None
    assert await open_alerts(h, []) == []


async def test_silences_expire_and_name_what_they_hold(redis_client):
    now = [1000.0]
    s = Silences(redis_client, "t", clock=lambda: now[0])
    await s.add("scope:topic:Macro", 60, by="desk", reason="known story")
    assert (await s.silencing({"scope": "topic:Macro", "alert_id": "al_1"}))["by"] == "desk"
    assert await s.silencing({"scope": "topic:Earnings", "alert_id": "al_2"}) is None
    await s.add("alert:al_2", 10, by="desk")
    assert await s.silencing({"scope": "topic:Earnings", "alert_id": "al_2"}) is not None
    now[0] += 61
    assert await s.active() == {} and await s.silencing({"scope": "topic:Macro", "alert_id": "al_1"}) is None
    with pytest.raises(ValueError):
        await s.add("scope:x", 0, by="desk")
