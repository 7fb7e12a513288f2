"""``finpulse demo``: the whole pipeline on one machine, with a spike that fires a real alert.

Starts the embedded stack (unless ``FINPULSE_KAFKA_BOOTSTRAP`` / ``FINPULSE_REDIS_URL`` are set),
a local webhook receiver that verifies every signature, and a ``finpulse worker`` process; then
replays the bundled sample (:func:`demo_sample`, shipped in the package as
``core/resources/demo/sample.jsonl``, linked from ``data/demo/sample.jsonl`` in a checkout: ~400 real
headlines with assigned event times and a burst of negative oil news) and prints scored headlines and
alerts as they flow. The rules are the shipped defaults (:func:`finpulse.core.settings.shipped_file`)
plus an endpoint for the local receiver, so the demo runs from any folder.
The demo namespace uses one partition, so event time is totally ordered and the run is repeatable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

from finpulse.alerts.signing import verify
from finpulse.core.settings import DEFAULT_RULES, shipped_file

log = logging.getLogger(__name__)

DEMO_SAMPLE = "demo/sample.jsonl"  # below the package's resources (finpulse.core.settings.shipped_file)
SECRET_ENV = "FINPULSE_DEMO_WEBHOOK_SECRET"


class WebhookReceiver:
    """A local HTTP server that receives alerts and verifies their Standard Webhooks signature.

    :param secret: the endpoint secret the worker signs with.
    :param on_alert: called with ``(alert, webhook_id, verified: bool)`` for every request.
    """

    def __init__(self, secret: str, on_alert):
        self.secret = secret
        self.on_alert = on_alert
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="demo-receiver", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> WebhookReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("webhook receiver did not start")
        return self

    def _serve(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                wid = verify(body, request.headers, self.secret)
                self.on_alert(json.loads(body), wid, True)
                return web.Response(status=204)
            except Exception:  # noqa: BLE001 - report and refuse
                self.on_alert(None, request.headers.get("webhook-id", "?"), False)
                return web.Response(status=401)

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/hook", handle)
            runner = self._runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}/hook"
            self._ready.set()
            while True:
                await asyncio.sleep(3600)

        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(main())
        except RuntimeError:
            pass  # loop stopped

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def demo_sample() -> Path:
    """The bundled demo sample (JSONL of ``news.raw`` messages) shipped in the package."""
    return shipped_file(DEMO_SAMPLE)


def _rules_with_endpoint(url: str) -> str:
    """The shipped default rules plus an endpoint ``demo-receiver`` at ``url`` (signed with the
    secret in ``$FINPULSE_DEMO_WEBHOOK_SECRET``).

    :param url: the local receiver's URL.
    """
    base = shipped_file(DEFAULT_RULES).read_text(encoding="utf-8")
    return base + f"""
[[endpoints]]
name = "demo-receiver"
url = "{url}"
secret_env = "{SECRET_ENV}"
internal = true                    # the demo's receiver is on this machine
format = "json"
min_severity = "info"
timeout = "5s"
"""


def _one_line(text: str) -> str:
    """Collapse newlines and runs of spaces (some headlines span lines) for one-line output."""
    return " ".join(text.split())


def _fmt_time(ts: str) -> str:
    return ts[11:16]


def _start_dashboard(settings):
    """``finpulse serve`` for the demo's namespace: on ``serve_port`` (8050), else on any free port."""
    from .serve import ServeThread

    try:
        return ServeThread(settings)
    except OSError:
        try:
            return ServeThread(settings.with_overrides(serve_port=0))
        except OSError as exc:
            log.warning("no dashboard: %s", exc)
            return None


def run_demo(once: bool = False, sample: str | None = None, quiet: bool = False, timeout_s: float = 170.0) -> dict:
    """Run the demo; returns the summary (``processed``, ``alerts``, ``webhooks_verified``, ``ok``).

    :param once: stop after the sample is processed and its alerts delivered (or ``timeout_s``).
    :param sample: JSONL of ``news.raw`` messages (default: the bundled sample).
    :param quiet: do not print each scored headline.
    :param timeout_s: longest wait in ``once`` mode.
    """
    from finpulse.ingest.producer import NewsProducer, ensure_topics

    from .runner import TopicReader, WorkerProcess, run_settings, stack_from_env

    sample_path = Path(sample) if sample else demo_sample()
    messages = [json.loads(line) for line in sample_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    say = lambda s: print(s, flush=True)  # noqa: E731
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    received: list[tuple[dict | None, str, bool]] = []
    lock = threading.Lock()

    def on_alert(alert, wid, ok):
        with lock:
            received.append((alert, wid, ok))
        if alert is not None:
            say(f"  >> webhook {wid} received, signature {'VERIFIED' if ok else 'INVALID'}: "
                f"{alert['status']} {alert['severity']} {alert['scope']}")
        else:
            say(f"  >> webhook {wid} REFUSED: bad signature")

    t0 = time.monotonic()
    with stack_from_env() as stack:
        ns = f"demo-{int(time.time())}"
        receiver = WebhookReceiver(secret, on_alert).start()
        workdir = Path(tempfile.mkdtemp(prefix="finpulse-demo-"))
        rules = workdir / "rules.toml"
        rules.write_text(_rules_with_endpoint(receiver.url), encoding="utf-8")
        settings = run_settings(stack, ns, rules_file=str(rules))
        ensure_topics(settings, settings.all_topics())
        log_path = workdir / "worker.log"
        say(f"finpulse demo: kafka={stack.kafka_bootstrap} redis={stack.redis_url} namespace={ns}")
        say(f"  webhook receiver {receiver.url}; worker log {log_path}")
        worker = WorkerProcess(settings, log_path, extra_env={SECRET_ENV: secret})
        dashboard = _start_dashboard(settings)
        if dashboard is not None:
            say(f"  dashboard {dashboard.url}/?scope=topic:Energy%20%7C%20Oil (trends, alerts, health; "
                "served while the demo runs)")
        consumer = TopicReader(stack.kafka_bootstrap, [settings.topic(settings.topic_scored),
                                                       settings.topic(settings.topic_dlq),
                                                       settings.topic(settings.topic_alerts)])
        try:
            with NewsProducer(settings, create_topics=False) as producer:
                produced = producer.send_many(messages)
            say(f"replayed {produced} headlines into {settings.topic(settings.topic_raw)} "
                f"(event time {messages[0]['published_at']} .. {messages[-1]['published_at']})")
            scored = dead = 0
            alerts: dict[str, dict] = {}
            deadline = time.monotonic() + timeout_s
            settled_since = None
            while True:
                for topic, msg in consumer.poll(timeout_ms=500):
                    if topic == settings.topic(settings.topic_scored):
                        scored += 1
                        if not quiet:
                            say(f"{_fmt_time(msg['published_at'])} {msg['sentiment'][:3]:3s} "
                                f"{msg['sentiment_score']:+.2f} {msg['topic'][:26]:26s} {_one_line(msg['title'])[:80]}")
                    elif topic == settings.topic(settings.topic_dlq):
                        dead += 1
                        say(f"DLQ {msg['reason']}")
                    else:
                        key = f"{msg['alert_id']}.{msg['status']}.{msg['severity']}"
                        if key not in alerts:
                            alerts[key] = msg
                            say(f"*** ALERT {msg['status'].upper()} [{msg['severity']}] {msg['rule']} "
                                f"scope={msg['scope']} window={_fmt_time(msg['window_start'])}-"
                                f"{_fmt_time(msg['window_end'])} negative {msg['negative_count']}/{msg['count']} "
                                f"({msg['negative_rate']:.0%}, baseline {msg['baseline_rate']:.0%})")
                            for h in msg.get("top_headlines", [])[:3]:
                                say(f"      {h['sentiment_score']:+.2f} {_one_line(h['title'])[:90]}")
                if worker.stopped_as_told:
                    # a Ctrl-C reaches the whole foreground process group, and the worker can be gone
                    # before the demo sees its own interrupt (even while it is still starting)
                    say("the worker has stopped; stopping the demo")
                    break
                worker.check()  # any other exit is an error
                with lock:
                    verified = sum(1 for _, _, ok in received if ok)
                done = scored + dead >= produced and verified >= len(alerts) > 0
                if once and done:
                    settled_since = settled_since or time.monotonic()
                    if time.monotonic() - settled_since > 3:  # let late alert records arrive
                        break
                if once and time.monotonic() > deadline:
                    say("timed out waiting for the pipeline; see the worker log")
                    break
        except KeyboardInterrupt:
            pass
        finally:
            if dashboard is not None:
                dashboard.stop()
            consumer.close()
            worker.stop(20)
            receiver.stop()
    with lock:
        verified = sum(1 for _, _, ok in received if ok)
        bad = sum(1 for _, _, ok in received if not ok)
    summary = {"processed": scored + dead, "scored": scored, "dead_lettered": dead, "alerts": len(alerts),
               "webhooks_verified": verified, "webhooks_refused": bad, "seconds": round(time.monotonic() - t0, 1)}
    summary["ok"] = (summary["processed"] == len(messages) and summary["alerts"] >= 1
                     and verified == len(alerts) and bad == 0)
    return summary
