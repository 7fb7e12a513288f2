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
        # a receiver on this machine is refused unless --internal says it is meant
        res = runner.invoke(main, ["alerts", "test-webhook", state["url"], "--secret", "s3cret-for-tests"])
        assert res.exit_code == 2 and "--internal" in res.output and not got
        res = runner.invoke(main, ["alerts", "test-webhook", state["url"], "--secret", "s3cret-for-tests",
                                   "--internal"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["ok"] is True and len(got) == 1
        # the secret may come from the environment; a wrong one is reported as a failure
        res = runner.invoke(main, ["alerts", "test-webhook", state["url"], "--internal"],
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


# --- installable anywhere: package data, no files in the current folder, no broker for files ------

def test_version_is_the_installed_distributions(runner):
    from importlib.metadata import version

    import finpulse

    res = runner.invoke(main, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"finpulse {finpulse.__version__}"
    assert finpulse.__version__ == version("finpulse"), "finpulse/__init__.py and pyproject.toml disagree"


def test_shipped_files_are_the_checkouts_config_files(monkeypatch, tmp_path):
    """One copy: config/* and data/demo/sample.jsonl are links to the package's resources."""
    import tomllib

    from finpulse.core.settings import REPO_ROOT, Settings, shipped_file
    from finpulse.ingest.feeds import load_feeds

    pairs = {"rules.toml": "config/rules.toml", "feeds.toml": "config/feeds.toml",
             "webhook-secrets.env.example": "config/webhook-secrets.env.example",
             "demo/sample.jsonl": "data/demo/sample.jsonl"}
    for name, checkout in pairs.items():
        shipped = shipped_file(name)
        assert shipped.is_file() and shipped.parent.name in ("resources", "demo")
        assert (REPO_ROOT / checkout).read_bytes() == shipped.read_bytes(), f"{checkout} drifted from {name}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FINPULSE_RULES_FILE", raising=False)
    monkeypatch.delenv("FINPULSE_CONFIG", raising=False)
    settings = Settings()
    assert settings.rules_file == str(shipped_file("rules.toml"))  # empty = the shipped rules
    assert Settings(rules_file="my.toml").rules_file == "my.toml"
    assert tomllib.loads(shipped_file("rules.toml").read_text())["rules"]
    assert load_feeds(shipped_file("feeds.toml"))
    with pytest.raises(FileNotFoundError):
        shipped_file("nope.toml")


def test_demo_rules_and_sample_come_from_the_package(monkeypatch, tmp_path):
    import tomllib

    from finpulse.alerts.config import load_config
    from finpulse.demo import _rules_with_endpoint, demo_sample

    monkeypatch.chdir(tmp_path)
    assert sum(1 for line in demo_sample().read_text().splitlines() if line.strip()) == 398
    rules = tmp_path / "rules.toml"
    rules.write_text(_rules_with_endpoint("http://127.0.0.1:9/hook"))
    assert tomllib.loads(rules.read_text())["endpoints"][-1]["name"] == "demo-receiver"
    assert load_config(rules, environ={"FINPULSE_DEMO_WEBHOOK_SECRET": "whsec_" + "QUJD" * 8}).endpoints


def test_faust_data_folder_is_in_the_cache(monkeypatch, tmp_path):
    from finpulse.core.settings import Settings
    from finpulse.stream.app import faust_options

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FINPULSE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    opts = faust_options(Settings(namespace="t-x"), "127.0.0.1:9092")
    assert opts["datadir"] == str(tmp_path / "xdg" / "finpulse" / "faust" / "finpulse.t-x")
    assert (tmp_path / "xdg" / "finpulse" / "faust").is_dir()  # Faust creates only the last folder
    opts = faust_options(Settings(cache_dir=str(tmp_path / "c{x}")), "127.0.0.1:9092")
    assert opts["datadir"] == str(tmp_path / "c{{x}}" / "faust" / "finpulse")  # Faust str.format()s it


def test_worker_writes_nothing_in_the_current_folder(stack, namespace, tmp_path):
    import os
    import subprocess
    import sys
    import time

    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir()
    env = {**os.environ, "FINPULSE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "FINPULSE_REDIS_URL": stack.redis_url,
           "FINPULSE_NAMESPACE": namespace, "FINPULSE_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "finpulse.cli", "worker"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (cache / "faust" / f"finpulse.{namespace}").is_dir() and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = proc.poll() is None
    proc.terminate()
    out = proc.communicate(timeout=30)[0]
    assert alive, out[-2000:]
    assert (cache / "faust" / f"finpulse.{namespace}").is_dir(), out[-2000:]
    assert list(cwd.iterdir()) == []


@pytest.fixture
def feed_url(tmp_path):
    """tests/feeds/rss20.xml served by http.server on 127.0.0.1 (a thread)."""
    import functools
    import http.server
    import shutil
    from pathlib import Path

    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(Path(__file__).parent / "feeds" / "rss20.xml", root / "rss20.xml")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/rss20.xml"
    httpd.shutdown()
    httpd.server_close()


def test_crawl_once_to_a_file_needs_no_broker(runner, feed_url, tmp_path, monkeypatch):
    from finpulse.core.messages import validate

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FINPULSE_STACK_STATE", str(tmp_path / "no-stack.json"))  # no `finpulse stack up` either
    for var in ("FINPULSE_KAFKA_BOOTSTRAP", "FINPULSE_REDIS_URL", "FINPULSE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(f'[[feeds]]\nname = "local"\nurl = "{feed_url}"\n')
    out = tmp_path / "out" / "raw.jsonl"
    res = runner.invoke(main, ["crawl", "--config", str(feeds), "--once", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "local" in res.stdout and "0 failed" in res.stdout
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert msgs and all(m["source"] == "local" for m in msgs)
    for m in msgs:
        validate("news.raw", m)
    # Kafka output still needs a broker, and says so
    res = runner.invoke(main, ["crawl", "--config", str(feeds), "--once"])
    assert res.exit_code != 0 and "FINPULSE_KAFKA_BOOTSTRAP" in str(res.exception)


def test_state_namespaces_and_delete(runner, redis_url, namespace):
    import redis as redis_sync

    r = redis_sync.Redis.from_url(redis_url)
    r.set(f"finpulse:{namespace}:probe", "1")
    r.hset(f"finpulse:{namespace}:{{all}}:b:1", "n", 1)
    env = {"FINPULSE_REDIS_URL": redis_url}
    res = runner.invoke(main, ["state", "namespaces"], env=env)
    assert res.exit_code == 0 and f"{namespace}\t2" in res.output
    res = runner.invoke(main, ["state", "delete", "live"], env=env)
    assert res.exit_code == 2 and "live" in res.output  # never by accident
    res = runner.invoke(main, ["state", "delete", namespace], env=env)
    assert res.exit_code == 0 and "deleted 2 keys" in res.output
    assert not list(r.scan_iter(match=f"finpulse:{namespace}:*"))


def test_a_worker_started_without_a_broker_waits_then_stops_loudly(tmp_path):
    """Started while the broker is down (e.g. during its restart), the worker waits for it like it
    waits out an outage, then, past ``infra_retry_s``, stops with the fault exit status."""
    import os
    import subprocess
    import sys
    import time

    from finpulse.stack import free_port

    env = {**os.environ, "FINPULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
           "FINPULSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "FINPULSE_INFRA_RETRY_S": "3",
           "FINPULSE_CACHE_DIR": str(tmp_path)}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "finpulse.cli", "worker"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 70, done.stderr[-2000:]
    assert "waiting up to 3 s for the Kafka broker" in done.stderr and "not starting" in done.stderr
    assert 3 <= time.monotonic() - t0 < 60


def test_a_worker_interrupted_while_starting_stops_as_told(tmp_path, monkeypatch):
    """A Ctrl-C reaches the whole foreground process group; one that lands while the worker is still
    starting (here: waiting for a broker) is a stop before start (exit 130, nothing consumed), which
    the demo tells apart from a crash; a worker that gives up on its dependencies is not."""
    import signal
    import time

    from finpulse.core.settings import Settings
    from finpulse.runner import WorkerProcess
    from finpulse.stack import free_port

    monkeypatch.chdir(tmp_path)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        namespace="t-interrupt")
    log = tmp_path / "worker.log"
    # as from a terminal: a suite started in the background (``cmd &``) ignores SIGINT, and an ignored
    # signal stays ignored in the child; a handler (reset to the default on exec) does not
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        worker = WorkerProcess(settings, log, extra_env={"FINPULSE_CACHE_DIR": str(tmp_path),
                                                         "FINPULSE_INFRA_RETRY_S": "60"})
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 90
    while "waiting up to 60 s" not in log.read_text() and time.monotonic() < deadline:
        assert worker.returncode is None, log.read_text()[-2000:]
        time.sleep(0.2)
    worker.proc.send_signal(signal.SIGINT)
    assert worker.proc.wait(30) == 130, log.read_text()[-2000:]
    assert worker.stopped_as_told and "interrupted before the worker started" in log.read_text()

    failed = WorkerProcess(settings, tmp_path / "failed.log", extra_env={"FINPULSE_CACHE_DIR": str(tmp_path),
                                                                         "FINPULSE_INFRA_RETRY_S": "1"})
    assert failed.proc.wait(90) == 70
    assert not failed.stopped_as_told
    with pytest.raises(RuntimeError, match="exited with code 70"):
        failed.check()
