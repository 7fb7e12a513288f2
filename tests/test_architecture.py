"""The layering holds at run time: importing any module has no side effects; the app is built by a factory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Runs in a fresh interpreter from an empty folder, so only the installed package is imported.
IMPORT_ALL = textwrap.dedent(r"""
    import importlib, json, os, pkgutil, sys, concurrent.futures, threading

    events = []
    ours = None

    stdlib = os.path.dirname(os.__file__)

    def by_us():   # the innermost frame outside the standard library is one of our modules
        f = sys._getframe(2)
        while f is not None:
            fn = f.f_code.co_filename
            if fn.startswith(ours):
                return True
            if not fn.startswith((stdlib, "<")):
                return False   # a third-party library's own business (e.g. ctypes looking up a library)
            f = f.f_back
        return False

    def audit(event, args):
        if event not in ("open", "socket.connect", "socket.bind", "subprocess.Popen", "os.system", "os.exec",
                         "os.fork"):
            return
        path = args[0] if event == "open" and isinstance(args[0], str) else ""
        if path.endswith((".py", ".pyc")):
            return
        if path.startswith(os.getcwd()) or by_us():
            events.append((event, repr(args)[:200]))

    import importlib.util
    import finpulse
    PACKAGES = ("finpulse", "finpulse.core", "finpulse.models", "finpulse.alerts", "finpulse.ingest",
                "finpulse.stream")
    # where each layer's files are (one folder when installed; the repo's folders in a dev checkout)
    ours = tuple(os.path.join(loc, "") for name in PACKAGES
                 for loc in importlib.util.find_spec(name).submodule_search_locations)
    import finpulse.core.settings as settings_mod

    built = []
    original_init = settings_mod.Settings.__init__
    def counting_init(self, *a, **kw):
        built.append("Settings")
        original_init(self, *a, **kw)
    settings_mod.Settings.__init__ = counting_init

    executors = []
    original_pool = concurrent.futures.ThreadPoolExecutor.__init__
    def counting_pool(self, *a, **kw):
        if by_us():
            executors.append("ThreadPoolExecutor")
        original_pool(self, *a, **kw)
    concurrent.futures.ThreadPoolExecutor.__init__ = counting_pool

    import aiokafka
    import faust.transport.drivers.aiokafka as driver
    threads_before = threading.active_count()
    sys.addaudithook(audit)

    names = []
    for package in PACKAGES:
        importlib.import_module(package)
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__, package + "."):
            if info.name not in PACKAGES:
                importlib.import_module(info.name)
                names.append(info.name)

    print(json.dumps({
        "modules": names, "events": events, "settings_built": len(built), "executors": len(executors),
        "faust_patched": driver.aiokafka is not aiokafka,
        "threads_started": threading.active_count() - threads_before,
    }))
""")


def test_importing_every_module_builds_nothing_and_does_no_io(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPULSE_")}
    env["FINPULSE_KAFKA_BOOTSTRAP"] = "127.0.0.1:9"   # would be used, were anything started
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # every layer was imported, including the agents and the CLI
    for name in ("finpulse.core.settings", "finpulse.core.messages", "finpulse.models.classifier",
                 "finpulse.alerts.detector", "finpulse.ingest.crawler", "finpulse.stream.app",
                 "finpulse.stream.agents", "finpulse.cli", "finpulse.demo", "finpulse.backtest"):
        assert name in report["modules"]
    assert report["events"] == []
    assert report["settings_built"] == 0
    assert report["executors"] == 0
    assert report["faust_patched"] is False
    assert report["threads_started"] == 0
    assert list(tmp_path.iterdir()) == []   # nothing written into the current folder


def test_the_app_factory_builds_the_app_and_discovers_the_agents():
    from finpulse.core.settings import Settings
    from finpulse.stream import app as app_mod

    settings = Settings(kafka_bootstrap="127.0.0.1:9", namespace="arch-test", partitions=3)
    app = app_mod.create_app(settings)
    assert app_mod.current().settings is settings
    assert app.conf.id == "finpulse.arch-test"
    app.discover()   # what `app.main()` does when the worker starts
    agents = {name.rsplit(".", 1)[-1]: agent for name, agent in app.agents.items()}
    assert set(agents) == {"classify", "aggregate", "deliver"}
    assert agents["classify"].channel.get_topic_name() == "news.raw.arch-test"
    assert agents["aggregate"].channel.get_topic_name() == "news.scored.arch-test"
    assert agents["deliver"].channel.get_topic_name() == "alerts.arch-test"
    assert app_mod.current().topics.raw.partitions == 3
    tasks = {getattr(t, "__name__", "") for t in app._app_tasks}
    assert {"restore_root_log_level", "run_deliveries"} <= tasks
    # a worker discovers twice (app.main() and its worker command): nothing is registered twice
    n_tasks, n_agents = len(app._app_tasks), len(app.agents)
    app.discover()
    assert (len(app._app_tasks), len(app.agents)) == (n_tasks, n_agents)
