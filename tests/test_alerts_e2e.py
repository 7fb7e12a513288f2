"""End-to-end alert tests: real Tansu broker, real redis-server, real worker processes, real HTTP receivers.

The messages are produced **pre-scored** straight to the namespace's ``news.scored`` topic (the topic
the ``aggregate`` agent consumes), so which alerts fire does not depend on the classifier's
predictions. Every namespace uses one partition: event time then arrives in order, so the detector
(``close_delay = 0``) sees every article of a bucket before evaluating it and the alerts are exact.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis as redis_sync

from finpulse.alerts.exceptions import WebhookVerificationError
from finpulse.alerts.signing import verify
from finpulse.core import constants as C
from finpulse.core.messages import validate
from finpulse.core.settings import Settings

from .support import Worker, consume, create_topics, produce, wait_for, worker_env

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
OIL, CALM_TOPICS = "Energy | Oil", ("Earnings", "Macro")
RULE = "topic-negative-spike"


# --- a webhook receiver on 127.0.0.1 ---------------------------------------------------------------

class Receiver:
    """A real aiohttp server in a thread. Request ``i`` gets ``actions[i]`` (the last one repeats):
    an HTTP status, or ``"hang"`` (no answer until :meth:`stop` or ``hang_s``, then 503).
    Every request is recorded with its arrival time, webhook-id, signature check and answer."""

    def __init__(self, secret: str, actions=(200,), hang_s: float = 30.0):
        self.secret = secret
        self.actions = list(actions)
        self.hang_s = hang_s
        self.requests: list[dict] = []
        self._offset = 0  # set_actions() restarts the action list at the next request
        self.url = ""
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def set_actions(self, actions) -> None:
        with self._lock:
            self.actions = list(actions)
            self._offset = len(self.requests)

    def start(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10), "receiver did not start"
        return self

    def _serve(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            entry = {"t": time.monotonic(), "wid": request.headers.get("webhook-id"), "status": None}
            try:
                verify(body, request.headers, self.secret)
                entry["verified"] = True
            except WebhookVerificationError:
                entry["verified"] = False
            entry["alert"] = json.loads(body)
            with self._lock:
                n = len(self.requests) - self._offset
                self.requests.append(entry)
                action = self.actions[min(n, len(self.actions) - 1)]
            if not entry["verified"]:
                action = 401
            if action == "hang":
                try:
                    await asyncio.wait_for(self._release.wait(), self.hang_s)
                except TimeoutError:
                    pass
                action = 503
            entry["status"] = action
            return web.Response(status=action)

        async def start() -> None:
            self._release = asyncio.Event()
            app = web.Application()
            app.router.add_post("/hook", handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        async def shutdown() -> None:
            self._release.set()
            await self._runner.cleanup()

        if self._loop is not None and self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)

    def got(self) -> list[dict]:
        with self._lock:
            return list(self.requests)

    def delivered(self) -> list[dict]:
        """Requests answered 2xx (the receiver accepted the webhook)."""
        return [r for r in self.got() if r["status"] is not None and 200 <= r["status"] < 300]


# --- helpers -----------------------------------------------------------------------------------

def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scored(aid: str, minute: int, second: int, topic: str, sentiment: str) -> dict:
    """A ``news.scored`` message, as the classify agent would have produced it."""
    probs = {"negative": 0.05, "positive": 0.05, "neutral": 0.05}
    probs[sentiment] = 0.9
    title = {"negative": f"{topic}: prices plunge as supply shock deepens ({aid})",
             "positive": f"{topic}: shares rally on strong results ({aid})",
             "neutral": f"{topic}: company schedules annual meeting ({aid})"}[sentiment]
    m = {"id": aid, "title": title, "source": "test-wire", "url": f"https://news.test/{aid}",
         "published_at": iso(START + timedelta(minutes=minute, seconds=second)),
         "topic": topic, "topic_score": 0.9, "topics_top3": [{"topic": topic, "score": 0.9}],
         "sentiment": sentiment, "sentiment_probs": probs,
         "sentiment_score": round(probs["positive"] - probs["negative"], 6),
         "tickers": [], "model_version": "prescored-test", "classified_at": iso(datetime.now(UTC))}
    validate("news.scored", m)
    return m


def calm_traffic(minutes: range) -> list[dict]:
    """One article per minute in each calm topic, 1 in 5 negative (rate 0.2: never fires)."""
    out = []
    for m in minutes:
        for j, topic in enumerate(CALM_TOPICS):
            s = "negative" if m % 5 == 0 else ("positive" if m % 2 else "neutral")
            out.append(scored(f"calm-{j}-{m}", m, 10 + 10 * j, topic, s))
    return out


def oil_burst(minutes: range) -> list[dict]:
    """Two negative oil headlines per minute."""
    return [scored(f"oil-neg-{m}-{k}", m, 30 + 15 * k, OIL, "negative") for m in minutes for k in range(2)]


def oil_calm(minutes: range) -> list[dict]:
    return [scored(f"oil-calm-{m}", m, 40, OIL, "neutral") for m in minutes]


def produce_scored(s: Settings, msgs: list[dict]) -> None:
    # straight to news.scored: the aggregate agent's input, bypassing the classifier
    msgs = sorted(msgs, key=lambda m: m["published_at"])
    produce(s.kafka_bootstrap, s.topic(s.topic_scored), [json.dumps(m).encode() for m in msgs],
            [m["id"].encode() for m in msgs])


def rules_toml(endpoints: list[dict], *, max_attempts: int = 3, lease_margin: float = 1.0) -> str:
    text = f"""
[detector]
close_delay = 0

[delivery]
max_attempts = {max_attempts}
base_delay = 0.2
factor = 2
jitter = 0
lease_margin = {lease_margin}

[[rules]]
name = "{RULE}"
scope_type = "topic"
short_window = "15m"
baseline_window = "24h"
min_count = 8
levels = {{ warning = 0.6 }}
resolve_below = 0.4
resolve_hold = "10m"
cooldown = "1h"
"""
    for ep in endpoints:
        text += f"""
[[endpoints]]
name = "{ep['name']}"
url = "{ep['url']}"
secret_env = "{ep['secret_env']}"
internal = true
min_severity = "info"
timeout = {ep.get('timeout', 5)}
"""
    return text


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@pytest.fixture
def ns_settings(stack, namespace):
    s = Settings(namespace=namespace, kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, partitions=1)
    create_topics(stack.kafka_bootstrap, s.all_topics(), 1)
    return s


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def make(secret: str, actions=(200,), **kw) -> Receiver:
        r = Receiver(secret, actions, **kw).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def start_worker(stack, s: Settings, tmp_path, endpoints: list[tuple[str, Receiver, dict]], log_name="worker.log",
                 **rules_kw) -> tuple[Worker, dict]:
    """Write the rules file (one endpoint per receiver) and start a worker; returns (worker, env)."""
    eps, env_secrets = [], {}
    for name, rec, extra in endpoints:
        var = f"FP_TEST_SECRET_{name.upper()}"
        env_secrets[var] = rec.secret
        eps.append({"name": name, "url": rec.url, "secret_env": var, **extra})
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_toml(eps, **rules_kw))
    env = worker_env(stack, s.namespace, FINPULSE_PARTITIONS=1, FINPULSE_RULES_FILE=str(rules), **env_secrets)
    return Worker(env, tmp_path / log_name), env


def job_log(s: Settings, endpoint: str, wid: str) -> tuple[dict, list[dict]]:
    r = redis_sync.Redis.from_url(s.redis_url)
    try:
        job = {k.decode(): v.decode() for k, v in r.hgetall(C.job_key(s.namespace, endpoint, wid)).items()}
        log = [json.loads(x) for x in r.lrange(C.log_key(s.namespace, endpoint, wid), 0, -1)]
    finally:
        r.close()
    return job, log


# --- tests -------------------------------------------------------------------------------------

def test_burst_fires_one_alert_delivered_signed_then_resolves(stack, ns_settings, receivers, tmp_path):
    s = ns_settings
    rec = receivers(new_secret())
    worker, _ = start_worker(stack, s, tmp_path, [("risk", rec, {})])  # no scope filter: every alert
    try:
        # phase 1 (09:00-09:20): calm traffic in two topics, a burst of negative oil news at 09:10-09:15
        produce_scored(s, calm_traffic(range(0, 20)) + oil_burst(range(10, 16)) + oil_calm(range(16, 20)))
        first = wait_for(rec.delivered, 90, what="fired alert delivered")
        fired = first[0]["alert"]
        assert first[0]["verified"] and first[0]["wid"] == fired["event_id"]
        assert (fired["status"], fired["rule"], fired["scope"]) == ("fired", RULE, f"topic:{OIL}")
        assert fired["severity"] == "warning" and fired["namespace"] == s.namespace
        assert fired["window_end"] == "2024-05-06T09:14:00.000Z"  # the first window with 8 negatives
        assert fired["negative_count"] == fired["count"] == 8
        assert all(h["id"].startswith("oil-neg-") for h in fired["top_headlines"])
        time.sleep(1.5)  # nothing more: calm topics do not fire, and the oil alert is not resolved yet
        assert [r["wid"] for r in rec.got()] == [fired["event_id"]]

        # phase 2 (09:20-09:45): calm news everywhere; the oil window calms at 09:28, resolves after 10 min
        produce_scored(s, calm_traffic(range(20, 46)) + oil_calm(range(20, 46)))
        wait_for(lambda: len(rec.delivered()) >= 2, 60, what="resolved alert delivered")
        time.sleep(1.5)  # a duplicate delivery would show up here
        got = rec.got()
        assert all(r["verified"] and r["status"] == 200 for r in got)
        assert [r["alert"]["status"] for r in got] == ["fired", "resolved"]
        resolved = got[1]["alert"]
        assert resolved["alert_id"] == fired["alert_id"] and resolved["scope"] == f"topic:{OIL}"
        assert resolved["window_end"] == "2024-05-06T09:38:00.000Z"  # calm since 09:28 + resolve_hold 10m
        assert got[1]["wid"] == resolved["event_id"] == f"{fired['alert_id']}.resolved.warning"
        assert len({r["wid"] for r in got}) == 2  # each record delivered exactly once

        # the alerts topic holds exactly these two records: no alert for the calm topics
        records = consume(s.kafka_bootstrap, s.topic(s.topic_alerts), min_count=3, timeout=3)
        assert sorted((a["scope"], a["status"]) for a in records) == [(f"topic:{OIL}", "fired"),
                                                                        (f"topic:{OIL}", "resolved")]
    finally:
        worker.stop()
    assert "Traceback" not in worker.log()


def test_retry_dead_letter_and_slow_endpoint_isolation(stack, ns_settings, receivers, tmp_path):
    s = ns_settings
    slow = receivers(new_secret(), ["hang"])       # never answers within its 1.5 s timeout
    fast = receivers(new_secret(), [200])
    flaky = receivers(new_secret(), [500, 200])
    broken = receivers(new_secret(), [500])
    # the slow endpoint is configured first, so a deliverer that served endpoints in turn would stall
    worker, _ = start_worker(stack, s, tmp_path, [("slow", slow, {"timeout": 1.5}), ("fast", fast, {}),
                                                   ("flaky", flaky, {}), ("broken", broken, {})])
    try:
        produce_scored(s, calm_traffic(range(0, 8)) + oil_burst(range(0, 6)) + oil_calm(range(6, 8)))
        wait_for(fast.delivered, 90, what="fast endpoint delivery")
        slow_first = wait_for(slow.got, 5, what="slow endpoint request")[0]
        # the fast receiver got the alert while the slow one still held its first request
        assert fast.got()[0]["t"] < slow_first["t"] + 1.5
        wid = fast.got()[0]["wid"]
        assert fast.got()[0]["verified"] and fast.got()[0]["alert"]["scope"] == f"topic:{OIL}"

        # 500 then 200: delivered on the retry, same webhook-id, both signed
        wait_for(flaky.delivered, 20, what="flaky endpoint retry")
        assert [(r["wid"], r["status"], r["verified"]) for r in flaky.got()] == [(wid, 500, True), (wid, 200, True)]
        job, log = job_log(s, "flaky", wid)
        assert job["state"] == "delivered" and [e["outcome"] for e in log] == ["http_error", "delivered"]

        # 500 forever and timeouts forever: 3 attempts each, then alerts.dlq with the attempt log
        dead = consume(s.kafka_bootstrap, s.topic(s.topic_alerts_dlq), min_count=2, timeout=40)
        by_ep = {d["endpoint"]: d for d in dead}
        assert sorted(by_ep) == ["broken", "slow"] and len(dead) == 2
        for name, outcome, status in (("broken", "http_error", 500), ("slow", "timeout", None)):
            d = by_ep[name]
            assert d["reason"] == "max_attempts" and d["webhook_id"] == wid
            assert d["alert"]["event_id"] == wid and d["alert_id"] == d["alert"]["alert_id"]
            assert [a["attempt"] for a in d["attempts"]] == [1, 2, 3]
            assert all(a["outcome"] == outcome and a["status"] == status for a in d["attempts"])
            assert [a.get("retry_in_s") for a in d["attempts"]] == [0.2, 0.4, None]
        assert len(broken.got()) == 3 and len(slow.got()) == 3
        assert len(fast.got()) == 1
    finally:
        worker.stop()
    assert "Traceback" not in worker.log()


def test_worker_killed_mid_delivery_does_not_lose_the_alert(stack, ns_settings, receivers, tmp_path):
    s = ns_settings
    # first attempt: 503 (retried); second attempt: hangs, and the worker is SIGKILLed meanwhile
    rec = receivers(new_secret(), [503, "hang"])
    endpoint = [("desk", rec, {"timeout": 5})]
    first, env = start_worker(stack, s, tmp_path, endpoint, log_name="w1.log", max_attempts=5, lease_margin=1)
    try:
        produce_scored(s, calm_traffic(range(0, 8)) + oil_burst(range(0, 6)) + oil_calm(range(6, 8)))
        got = wait_for(lambda: len(rec.got()) >= 2 and rec.got(), 90, what="second (hanging) attempt")
        assert got[1]["status"] is None  # still waiting for the answer
    finally:
        first.kill()
    wid = got[0]["wid"]
    assert got[0]["status"] == 503 and got[1]["wid"] == wid
    job, _ = job_log(s, "desk", wid)
    assert job["state"] == "pending"  # leased in Redis, not lost

    rec.set_actions([200])  # the receiver recovers
    second = Worker(env, tmp_path / "w2.log")
    try:
        ok = wait_for(rec.delivered, 60, what="delivery after restart")
        time.sleep(1.0)
    finally:
        second.stop()
    assert ok[0]["verified"] and ok[0]["alert"]["event_id"] == wid
    assert {r["wid"] for r in rec.got()} == {wid}  # every attempt carried the same webhook-id
    assert len(rec.delivered()) == 1
    job, log = job_log(s, "desk", wid)
    assert job["state"] == "delivered"
    assert [(e["outcome"], e["status"]) for e in log] == [("http_error", 503), ("delivered", 200)]
    assert "Traceback" not in second.log()


def test_event_time_advances_per_partition(stack, namespace, tmp_path):
    """8 partitions with skewed event times: partitions 1-7 carry calm news up to 10:00; partition 0
    carries a backlog of calm news from 09:00 and, behind it, a negative oil burst at 09:10-09:15. The
    fast partitions must not close the burst's buckets before partition 0 got there (with one global
    watermark, the newest event time of any partition, they did: the burst was counted late and the
    alert never fired)."""
    from kafka import KafkaProducer

    s = Settings(namespace=namespace, kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, partitions=8)
    create_topics(stack.kafka_bootstrap, s.all_topics(), 8)
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_toml([]))
    backlog = [scored(f"p0-calm-{i}", i // 300, i % 60, "Macro", "neutral") for i in range(3000)]  # 09:00-09:10
    burst = oil_burst(range(10, 16)) + oil_calm(range(16, 20))
    fast = calm_traffic(range(0, 60))  # 09:00-10:00
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5)
    topic = s.topic(s.topic_scored)
    for i, m in enumerate(sorted(fast, key=lambda m: m["published_at"])):
        producer.send(topic, json.dumps(m).encode(), key=m["id"].encode(), partition=1 + i % 7)
    for m in backlog + burst:
        producer.send(topic, json.dumps(m).encode(), key=m["id"].encode(), partition=0)
    producer.flush()
    producer.close()
    worker = Worker(worker_env(stack, namespace, FINPULSE_PARTITIONS=8, FINPULSE_RULES_FILE=str(rules)),
                    tmp_path / "worker.log")
    try:
        total = len(fast) + len(backlog) + len(burst)
        r = redis_sync.Redis.from_url(s.redis_url)
        wait_for(lambda: int(r.hget(C.metrics_key(namespace), "counted") or 0) >= total, 120, what="all counted")
        fired = wait_for(lambda: [a for a in consume(s.kafka_bootstrap, s.topic(s.topic_alerts), min_count=1,
                                                     timeout=2) if a["scope"] == f"topic:{OIL}"], 60,
                         what="the oil burst's alert")
    finally:
        worker.stop()
    assert fired[0]["status"] == "fired" and fired[0]["window_end"] == "2024-05-06T09:14:00.000Z"
    assert int(r.hget(C.metrics_key(namespace), "late") or 0) == 0
