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
