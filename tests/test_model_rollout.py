"""Promote, shadow and roll back a model version while a real worker runs (real broker, Redis, CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from finpulse.core.settings import Settings
from finpulse.models import Classifier
from finpulse.models.data import load_split

from .model_versions import make_version
from .support import ROOT, Worker, consume, create_topics, produce, wait_for, worker_env

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
TEXTS = [e.text for e in load_split("sentiment", "valid")][:100]
BASE = Classifier(device="cpu", verify=False).model_version


def raw(batch: int, n: int = 20) -> list[bytes]:
    return [json.dumps({"id": f"ro-{batch}-{i}", "title": TEXTS[batch * n + i], "source": "test",
                        "published_at": (START + timedelta(minutes=batch * n + i)).isoformat()
                        .replace("+00:00", "Z")}).encode() for i in range(n)]


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "finpulse.cli", "model", *args], cwd=ROOT,
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_workers_switch_at_the_next_batch_and_roll_back(stack, namespace, tmp_path):
    models = tmp_path / "models"
    make_version(models, "rollout-b", sentiment_bias=[6.0, 0.0, 0.0])  # calls almost everything negative
    env = worker_env(stack, namespace, FINPULSE_MODELS_DIR=str(models))
    settings = Settings(namespace=namespace, kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
    create_topics(stack.kafka_bootstrap, settings.all_topics(), settings.partitions)
    raw_topic, scored_topic = settings.topic(settings.topic_raw), settings.topic(settings.topic_scored)
    listing = json.loads(cli(env, "list", "--json"))
    assert [(v["version"], v["in_force"]) for v in listing["versions"] if not v["bundled"]] == [
        (BASE, True), ("rollout-b", False)]
    assert [v["version"] for v in listing["versions"] if v["bundled"]] == ["minilm-news-2026.11.29"]

    worker = Worker(env, tmp_path / "worker.log")
    try:
        def scored_versions(total: int) -> dict[str, str]:
            msgs = consume(stack.kafka_bootstrap, scored_topic, min_count=total, timeout=90)
            assert len({m["id"] for m in msgs}) == total, "every headline scored"
            return {m["id"]: m["model_version"] for m in msgs}

        produce(stack.kafka_bootstrap, raw_topic, raw(0))
        assert set(scored_versions(20).values()) == {BASE}

        cli(env, "shadow", "rollout-b")  # scores the same traffic, never published
        produce(stack.kafka_bootstrap, raw_topic, raw(1))
        versions = scored_versions(40)
        assert {versions[f"ro-1-{i}"] for i in range(20)} == {BASE}
        report = wait_for(lambda: (r := json.loads(cli(env, "shadow-report")))["n"] >= 20 and r, 60,
                          what="shadow comparisons")
        assert report["shadow"] == "rollout-b" and report["topic_agreement"] == 1.0
        assert report["sentiment_agreement"] < 1.0  # the shadow's biased labels were counted, not published
        cli(env, "shadow", "--off")

        assert "promoted rollout-b" in cli(env, "promote", "rollout-b", "--reason", "test")
        listing_text = cli(env, "list")
        assert "* rollout-b" in listing_text and f"  {BASE}" in listing_text
        produce(stack.kafka_bootstrap, raw_topic, raw(2))
        versions = scored_versions(60)
        assert {versions[f"ro-2-{i}"] for i in range(20)} == {"rollout-b"}
        wait_for(lambda: "-> rollout-b (switched at this batch)" in worker.log(), 10, what="switch logged")

        assert "rolled back rollout-b" in cli(env, "rollback", "--reason", "test")
        produce(stack.kafka_bootstrap, raw_topic, raw(3))
        versions = scored_versions(80)
        assert {versions[f"ro-3-{i}"] for i in range(20)} == {BASE}
        assert worker.proc.poll() is None  # no restart, no downtime
        listing = json.loads(cli(env, "list", "--json"))
        assert listing["in_force"] == BASE
        assert [e["action"] for e in listing["events"]] == ["rollback", "promote"]

        # a version this worker cannot load (promoted from a host that has it): logged, scoring goes on
        import asyncio

        from finpulse.core.connections import async_redis
        from finpulse.models.lifecycle import ModelControl

        async def promote_ghost() -> None:
            client = async_redis(stack.redis_url)
            await ModelControl(client, namespace, BASE).promote("ghost-version")
            await client.aclose()

        asyncio.run(promote_ghost())
        produce(stack.kafka_bootstrap, raw_topic, raw(4))
        versions = scored_versions(100)
        assert {versions[f"ro-4-{i}"] for i in range(20)} == {BASE}
        assert worker.log().count("cannot load model version ghost-version") == 1
        assert worker.proc.poll() is None
    finally:
        worker.stop()


def test_backtests_pin_the_live_version_in_force_or_the_one_named(stack, tmp_path, monkeypatch):
    import asyncio

    from click.testing import CliRunner

    from finpulse.cli import main
    from finpulse.core.connections import async_redis
    from finpulse.core.settings import LIVE_NAMESPACE, REPO_ROOT
    from finpulse.models.lifecycle import ModelControl

    models = tmp_path / "models"
    make_version(models, "bt-pinned", sentiment_bias=[6.0, 0.0, 0.0])
    for k, v in (("FINPULSE_KAFKA_BOOTSTRAP", stack.kafka_bootstrap), ("FINPULSE_REDIS_URL", stack.redis_url),
                 ("FINPULSE_MODELS_DIR", str(models))):
        monkeypatch.setenv(k, v)
    src = tmp_path / "history.csv"
    src.write_text("date,headline\n" + "".join(f"2024-03-04,{t.replace(',', ' ')}\n" for t in TEXTS[:10]))
    rules = REPO_ROOT / "config" / "rules.toml"

    async def control(op):
        client = async_redis(stack.redis_url)
        try:
            return await op(ModelControl(client, LIVE_NAMESPACE, BASE))
        finally:
            await client.aclose()

    res = CliRunner().invoke(main, ["backtest", str(src), "--rules", str(rules), "--out", str(tmp_path / "x"),
                                    "--quiet", "--model-version", "nope"])
    assert res.exit_code != 0 and "cannot pin model version 'nope'" in res.output
    asyncio.run(control(lambda c: c.promote("bt-pinned", by="test")))
    try:
        out = tmp_path / "out"
        res = CliRunner().invoke(main, ["backtest", str(src), "--rules", str(rules), "--out", str(out), "--quiet"])
        assert res.exit_code == 0, res.output
        s = json.loads((out / "summary.json").read_text())
        assert s["model_version_pinned"] == "bt-pinned" and s["model_version"] == "bt-pinned"
        out2 = tmp_path / "out2"
        res = CliRunner().invoke(main, ["backtest", str(src), "--rules", str(rules), "--out", str(out2), "--quiet",
                                        "--model-version", BASE])
        assert res.exit_code == 0, res.output
        s = json.loads((out2 / "summary.json").read_text())
        assert s["model_version_pinned"] == BASE and s["model_version"] == BASE
    finally:
        asyncio.run(control(lambda c: c.rollback(by="test")))
