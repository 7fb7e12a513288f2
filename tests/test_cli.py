"""The command line, run the way a user runs it (click's runner, real files, real servers)."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from finpulse.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def test_classify_arguments_print_one_json_object_per_text(runner):
    res = runner.invoke(main, ["classify", "Fed hikes rates by 75bp", "Apple beats estimates"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert [x["text"] for x in lines] == ["Fed hikes rates by 75bp", "Apple beats estimates"]
    assert all({"topic", "sentiment", "sentiment_score", "topics_top3"} <= set(x) for x in lines)


def test_classify_file_keeps_order_and_reports_malformed_lines(runner, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "Oil slumps"}\n{broken\n{"id": "c", "text": "   "}\n'
                   '{"id": "d", "text": "Gold rallies"}\n{"id": "e"}\n')
    out = tmp_path / "out.jsonl"
    res = runner.invoke(main, ["classify", "--input", str(src), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "d"]
    errors = [json.loads(x) for x in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    assert sorted(e["line"] for e in errors) == [2, 3, 5]
    assert "line 2" in res.stderr and "classified=2 errors=3" in res.stderr


def test_classify_csv_and_plain_text(runner, tmp_path):
    csv_in = tmp_path / "in.csv"
    csv_in.write_text('id,text\nx1,"Fed hikes, again"\nx2,Oil slumps\n')
    txt_in = tmp_path / "in.txt"
    txt_in.write_text("Fed hikes\nOil slumps\n")
    for src, ids in ((csv_in, ["x1", "x2"]), (txt_in, [1, 2])):
        out = tmp_path / (src.name + ".out")
        assert runner.invoke(main, ["classify", "--input", str(src), "--output", str(out)]).exit_code == 0
        assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ids


def test_evaluate_prints_metrics_and_confusion(runner, tmp_path):
    data = tmp_path / "small.csv"
    data.write_text("text,label\n$AAPL falls after downgrade,0\nStocks rally as inflation cools,1\n"
                    "Company to present at conference,2\n")
    res = runner.invoke(main, ["evaluate", "--data", str(data), "--task", "sentiment", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["n"] == 3 and 0 <= rep["accuracy"] <= 1 and len(rep["confusion_matrix"]) == 3


def test_alerts_test_webhook_against_a_local_receiver(runner):
    import asyncio

    from aiohttp import web

    from finpulse.alerts.signing import verify

    got: list[str] = []
    ready = threading.Event()
    state: dict = {}

    async def handle(request):
        body = await request.read()
        got.append(verify(body, request.headers, "s3cret-for-tests"))
        return web.Response(status=200)

    def serve():
        loop = asyncio.new_event_loop()
        state["loop"] = loop

        async def start():
            app = web.Application()
            app.router.add_post("/h", handle)
            r = web.AppRunner(app)
            await r.setup()
            site = web.TCPSite(r, "127.0.0.1", 0)
            await site.start()
            state["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/h"
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(10)
    try:
        res = runner.invoke(main, ["alerts", "test-webhook", state["url"], "--secret", "s3cret-for-tests"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["ok"] is True and len(got) == 1
        # the secret may come from the environment; a wrong one is reported as a failure
        res = runner.invoke(main, ["alerts", "test-webhook", state["url"]],
                            env={"FINPULSE_WEBHOOK_SECRET": "wrong"})
        assert res.exit_code == 1 and json.loads(res.stdout)["ok"] is False
    finally:
        state["loop"].call_soon_threadsafe(state["loop"].stop)


def test_stack_up_replay_and_down(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("FINPULSE_STACK_STATE", str(tmp_path / "stack.json"))
    monkeypatch.delenv("FINPULSE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("FINPULSE_REDIS_URL", raising=False)
    res = runner.invoke(main, ["stack", "up"])
    assert res.exit_code == 0, res.output
    try:
        assert "FINPULSE_KAFKA_BOOTSTRAP=127.0.0.1:" in res.stdout
        hist = tmp_path / "hist.csv"
        hist.write_text("date,headline\n2024-01-03,Oil slumps\n2024-01-02,Fed hikes\nnot-a-date,Bad row\n")
        res = runner.invoke(main, ["replay", str(hist), "--namespace", "clitest"])
        assert res.exit_code == 0, res.output
        assert "produced 2 to news.raw.clitest" in res.stdout and "line 4" in res.stderr
    finally:
        res = runner.invoke(main, ["stack", "down"])
        assert res.exit_code == 0 and "stopped" in res.stdout


@pytest.mark.parametrize("level", ["warning", "error"])
def test_worker_accepts_every_log_level(level, stack, namespace, tmp_path):
    """`finpulse --log-level X worker` must start (Faust's own -l spells levels differently)."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "FINPULSE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "FINPULSE_REDIS_URL": stack.redis_url,
           "FINPULSE_NAMESPACE": namespace}
    proc = subprocess.Popen([sys.executable, "-m", "finpulse.cli", "--log-level", level, "worker"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(4)
    alive = proc.poll() is None
    proc.terminate()
    out = proc.communicate(timeout=30)[0]
    assert alive, out[-2000:]
