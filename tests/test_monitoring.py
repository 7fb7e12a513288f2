"""Model monitoring: prediction distributions per model version and hour, the reference taken from the
live stream, and the PSI drift rule (models/drift.py, stream/monitoring.py)."""

from __future__ import annotations

import random

import pytest

from finpulse.models.drift import PSI_ALERT, confidence_bin, distribution, drift_report, prediction_fields, psi
from finpulse.stream.monitoring import HOUR, ModelMonitor

H0 = 1_767_600_000 // HOUR * HOUR


def scored(rng: random.Random, neg_share: float, version: str = "m1", conf: float = 0.9) -> dict:
    sent = "negative" if rng.random() < neg_share else rng.choice(["neutral", "positive"])
    probs = {"negative": 0.05, "neutral": 0.05, "positive": 0.05}
    probs[sent] = conf
    return {"topic": rng.choice(["Macro", "Earnings", "Energy | Oil"]), "topic_score": conf, "sentiment": sent,
            "sentiment_probs": probs, "model_version": version}


def test_confidence_bins_and_psi():
    assert [confidence_bin(p) for p in (0.1, 0.45, 0.5, 0.94, 0.95, 1.0)] == \
        ["<0.40", "0.40-0.50", "0.50-0.60", "0.90-0.95", ">=0.95", ">=0.95"]
    same = {"a": 0.5, "b": 0.5}
    assert psi(same, same) == 0
    assert psi(same, {"a": 0.9, "b": 0.1}) > PSI_ALERT
    assert 0 < psi(same, {"a": 0.55, "b": 0.45}) < 0.1
    assert psi({"a": 1.0}, {"b": 1.0}) > 1  # a category seen on one side only is a large shift, not infinite


def test_the_drift_rule_judges_only_with_enough_headlines():
    rng = random.Random(1)
    ref = prediction_fields(scored(rng, 0.2) for _ in range(2000))["m1"]
    same = prediction_fields(scored(rng, 0.2) for _ in range(1000))["m1"]
    darker = prediction_fields(scored(rng, 0.7) for _ in range(1000))["m1"]
    unsure = prediction_fields(scored(rng, 0.2, conf=0.45) for _ in range(1000))["m1"]
    assert drift_report(ref, same)["drifted"] == []
    rep = drift_report(ref, darker)
    assert rep["judged"] and rep["drifted"] == ["sentiment"]
    assert rep["kinds"]["sentiment"]["status"] == "drift" and rep["kinds"]["topic"]["status"] == "stable"
    assert set(drift_report(ref, unsure)["drifted"]) == {"topic_confidence", "sentiment_confidence"}
    few = prediction_fields(scored(rng, 0.7) for _ in range(100))["m1"]
    assert drift_report(ref, few)["judged"] is False and drift_report(ref, few)["drifted"] == []
    assert abs(sum(distribution(ref, "sentiment").values()) - 1) < 1e-9


@pytest.mark.asyncio
async def test_the_reference_comes_from_the_live_stream_of_the_version(redis_client):
    rng = random.Random(2)
    mon = ModelMonitor(redis_client, "t", reference_min=1500, window_hours=2)
    # hour 0 and 1: the version's first traffic (20 % negative) becomes its reference
    await mon.observe([scored(rng, 0.2) for _ in range(1000)], now=H0 + 10)
    ref, meta = await mon.reference("m1", now=H0 + HOUR + 5)
    assert ref == {} and meta == {"frozen": False, "n": 1000, "from": H0}  # 1,000 < 1,500 in complete hours
    await mon.observe([scored(rng, 0.2) for _ in range(1000)], now=H0 + HOUR + 10)
    ref, meta = await mon.reference("m1", now=H0 + 2 * HOUR + 5)
    assert meta["frozen"] and meta["n"] == 2000 and ref["n"] == 2000
    # later hours drift: 70 % negative; another version's traffic does not count for m1
    for h in (5, 6):
        await mon.observe([scored(rng, 0.7) for _ in range(600)], now=H0 + h * HOUR + 10)
    await mon.observe([scored(rng, 0.2, version="m2") for _ in range(50)], now=H0 + 6 * HOUR + 20)
    rep = await mon.report("m1", now=H0 + 6 * HOUR + 30)
    assert rep["n_current"] == 1200 and rep["n_reference"] == 2000 and rep["drifted"] == ["sentiment"]
    # the reference stays frozen: the drifted hours did not move it
    assert (await mon.reference("m1", now=H0 + 7 * HOUR))[0]["n"] == 2000
    assert [v for v, _ in await mon.versions()] == ["m2", "m1"]
