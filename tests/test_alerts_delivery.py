"""Webhook delivery against real local aiohttp receivers on 127.0.0.1 and a real Redis."""

import asyncio
import json
import logging
import socket
import time
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from jsonschema import Draft202012Validator, FormatChecker

from finpulse.alerts.config import Endpoint, RetryPolicy, load_config, load_secrets_file, parse_endpoints
from finpulse.alerts.exceptions import ConfigError
from finpulse.alerts.queue import DeliveryQueue
from finpulse.alerts.render import render_body
from finpulse.alerts.rules import make_alert_id, make_event_id, record_sequence
from finpulse.alerts.sender import Deliverer, send_test_webhook
from finpulse.alerts.signing import verify
from finpulse.core.http import parse_retry_after

pytestmark = pytest.mark.asyncio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = 1_800_000_000.0  # scheduling clock of the tests (run_due(now=...)); independent of wall time
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, jitter=0.0, lease_margin_s=5)


def alert(n=1, severity="warning", scope="all", status="fired"):
    aid = make_alert_id("market", scope, 1767571200 + n * 60, 1767572100 + n * 60)
    return {"alert_id": aid, "event_id": make_event_id(aid, status, severity),
            "sequence": record_sequence(status, severity), "status": status, "rule": "market",
            "scope": scope, "scope_type": scope.partition(":")[0], "severity": severity, "namespace": "t",
            "window_start": "2026-01-05T00:00:00.000Z", "window_end": "2026-01-05T00:15:00.000Z", "count": 30,
            "negative_count": 20, "negative_rate": 0.666667, "baseline_rate": 0.25,
            "top_headlines": [{"title": "Bank <X> & Y fall", "url": "https://n.test/1", "source": "wire",
                               "published_at": "2026-01-05T00:01:00.000Z", "sentiment_score": -0.9}]}


class Receiver:
    """A real HTTP server; answers with ``responses[i]`` for request i (the last one repeats)."""

    def __init__(self, responses, delay=0.0, text="thanks"):
        self.responses = list(responses)
        self.delay = delay
        self.text = text
        self.requests: list[tuple[dict, bytes]] = []
        self.got = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""
        self._runner = None

    async def handle(self, request):
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        self.got.set()
        if self.delay:
            try:
                await asyncio.wait_for(self.release.wait(), self.delay)
            except TimeoutError:
                pass
        status, headers = self.responses[min(len(self.requests), len(self.responses)) - 1]
        return web.Response(status=status, headers=headers, text=self.text)

    async def start(self):
        app = web.Application()
        app.router.add_post("/hooks/secret-token", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hooks/secret-token"
        return self

    async def stop(self):
        self.release.set()
        await self._runner.cleanup()

    def verified_ids(self):
        return [verify(body, headers, SECRET) for headers, body in self.requests]


@pytest_asyncio.fixture
async def receivers():
    made = []

    async def make(*responses, delay=0.0, text="thanks"):
        r = await Receiver(responses or [(200, {})], delay=delay, text=text).start()
        made.append(r)
        return r

    yield make
    for r in made:
        await r.stop()


@pytest_asyncio.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


class DeadLetters:
    def __init__(self, fail_times=0):
        self.records = []
        self.fail_times = fail_times

    async def __call__(self, record):
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("kafka unavailable")
        self.records.append(record)


def endpoint(rcv, name="desk", **kw):
    kw.setdefault("internal", True)  # the receivers are on 127.0.0.1
    return Endpoint(name=name, url=rcv.url, secret=SECRET, timeout_s=kw.pop("timeout_s", 2.0), **kw)


async def test_500_then_200_is_delivered_after_a_retry(redis_client, receivers, session):
    rcv = await receivers((500, {}), (200, {}))
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    dead = DeadLetters()
    d = Deliverer(q, [ep], session, dead, policy=FAST)
    a = alert()
    assert await q.enqueue(a, [ep], now=T0) == ["desk"]
    assert await d.run_due(T0) == 1 and len(rcv.requests) == 1
    assert await d.run_due(T0) == 0  # the retry is not due yet
    assert await d.run_due(T0 + 1) == 1
    assert rcv.verified_ids() == [a["event_id"]] * 2  # signed, same webhook-id on the retry
    assert json.loads(rcv.requests[1][1]) == a
    log = await q.attempts("desk", a["event_id"])
    assert [(e["attempt"], e["outcome"], e["status"]) for e in log] == [(1, "http_error", 500), (2, "delivered", 200)]
    assert (await q.job("desk", a["event_id"]))["state"] == "delivered" and await q.due_count("desk") == 0
    assert dead.records == []
    assert await q.enqueue(a, [ep], now=T0 + 2) == []  # idempotent: the same alert is not sent again
    assert await d.run_due(T0 + 10) == 0 and len(rcv.requests) == 2


async def test_500_forever_goes_to_dead_letter_with_attempt_log(redis_client, receivers, session):
    rcv = await receivers((503, {}))
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    dead = DeadLetters()
    d = Deliverer(q, [ep], session, dead, policy=FAST)
    a = alert()
    await q.enqueue(a, [ep], now=T0)
    for k in range(6):
        await d.run_due(T0 + k)
    assert len(rcv.requests) == 3
    [rec] = dead.records
    assert rec["reason"] == "max_attempts" and rec["endpoint"] == "desk" and rec["webhook_id"] == a["event_id"]
    assert rec["alert"] == a and rec["alert_id"] == a["alert_id"]
    assert [(e["attempt"], e["outcome"], e["status"]) for e in rec["attempts"]] == [
        (1, "http_error", 503), (2, "http_error", 503), (3, "http_error", 503)]
    assert all(e["duration_ms"] >= 0 and e["at"].endswith("Z") for e in rec["attempts"])
    assert (await q.job("desk", a["event_id"]))["state"] == "dead" and await q.due_count("desk") == 0


async def test_dead_letter_handoff_is_retried_without_resending(redis_client, receivers, session):
    rcv = await receivers((404, {}))
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    dead = DeadLetters(fail_times=1)
    d = Deliverer(q, [ep], session, dead, policy=FAST)
    await q.enqueue(alert(), [ep], now=T0)
    await d.run_due(T0)
    assert dead.records == [] and (await q.job("desk", alert()["event_id"]))["state"] == "dead_letter"
    await d.run_due(T0 + 2)
    assert len(dead.records) == 1 and len(rcv.requests) == 1


async def test_429_retry_after_is_honoured(redis_client, receivers, session):
    rcv = await receivers((429, {"Retry-After": "120"}), (200, {}))
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    d = Deliverer(q, [ep], session, DeadLetters(), policy=FAST)
    await q.enqueue(alert(), [ep], now=T0)
    await d.run_due(T0)
    assert await q.next_due("desk") == pytest.approx(T0 + 120)
    assert await d.run_due(T0 + 119) == 0 and len(rcv.requests) == 1
    assert await d.run_due(T0 + 121) == 1 and len(rcv.requests) == 2
    log = await q.attempts("desk", alert()["event_id"])
    assert log[0]["retry_after_s"] == 120 and log[0]["retry_in_s"] == 120 and log[1]["outcome"] == "delivered"


def test_parse_retry_after():
    now = 1_767_571_200.0  # 2026-01-05T00:00:00Z
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Mon, 05 Jan 2026 00:02:00 GMT", now=now) == 120
    assert parse_retry_after("Sun, 04 Jan 2026 00:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("-5") is None


async def test_404_is_not_retried(redis_client, receivers, session):
    rcv = await receivers((404, {}))
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    dead = DeadLetters()
    d = Deliverer(q, [ep], session, dead, policy=FAST)
    await q.enqueue(alert(), [ep], now=T0)
    await d.run_due(T0)
    assert await d.run_due(T0 + 1000) == 0 and len(rcv.requests) == 1
    assert [(r["reason"], len(r["attempts"]), r["attempts"][0]["status"]) for r in dead.records] == [("rejected", 1, 404)]


async def test_410_disables_endpoint_until_restart(redis_client, receivers, session, caplog):
    rcv = await receivers((410, {}), (200, {}))
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    dead = DeadLetters()
    d = Deliverer(q, [ep], session, dead, policy=FAST, concurrency=1)
    a1, a2, a3 = alert(1), alert(2), alert(3)
    for a in (a1, a2):
        await q.enqueue(a, [ep], now=T0)
    with caplog.at_level(logging.ERROR, logger="finpulse.alerts.sender"):
        await d.run_due(T0)
    assert "desk" in d.disabled and len(rcv.requests) == 1
    assert [r["reason"] for r in dead.records] == ["gone"]
    loud = [r for r in caplog.records if r.levelno == logging.ERROR and "DISABLED" in r.getMessage()]
    assert loud
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret-token" not in text and SECRET not in text  # neither URL path nor secret is logged
    await q.enqueue(a3, [ep], now=T0 + 1)
    assert await d.run_due(T0 + 1000) == 0 and len(rcv.requests) == 1
    # after a restart the queued alerts are delivered
    restarted = Deliverer(q, [ep], session, dead, policy=FAST)
    await restarted.run_due(T0 + 1000)
    gone = dead.records[0]["webhook_id"]
    assert sorted(rcv.verified_ids()[1:]) == sorted({a1["event_id"], a2["event_id"], a3["event_id"]} - {gone})


async def test_slow_endpoint_does_not_stall_others(redis_client, receivers, session):
    slow = await receivers((200, {}), delay=5.0)
    fast = await receivers((200, {}))
    eps = [endpoint(slow, "slow", timeout_s=1.0), endpoint(fast, "fast")]
    q = DeliveryQueue(redis_client, "t")
    d = Deliverer(q, eps, session, DeadLetters(), policy=RetryPolicy(base_delay_s=60))
    await q.enqueue(alert(1), eps)
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(d.run_forever(stop, poll_s=0.02))
    try:
        await asyncio.wait_for(slow.got.wait(), 2)
        await asyncio.wait_for(fast.got.wait(), 0.8)
        fast.got.clear()
        await q.enqueue(alert(2), eps)  # the fast endpoint keeps going while the slow one hangs
        await asyncio.wait_for(fast.got.wait(), 0.8)
        assert time.monotonic() - started < 1.0 and len(fast.requests) == 2 and len(slow.requests) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    log = await q.attempts("slow", alert(1)["event_id"])
    assert [e["outcome"] for e in log] == ["timeout"]
    assert await q.next_due("slow") is not None  # scheduled for a retry


async def test_state_survives_a_restart(redis_client, receivers):
    rcv = await receivers((500, {}), (200, {}))
    ep = endpoint(rcv)
    a, b = alert(1), alert(2)
    lease = ep.timeout_s + FAST.lease_margin_s
    async with aiohttp.ClientSession() as s1:
        q1 = DeliveryQueue(redis_client, "t")
        await q1.enqueue(b, [ep], now=T0 - 1)
        await q1.enqueue(a, [ep], now=T0)
        # a worker claims b and dies before sending it
        assert await q1.claim("desk", T0 - 1, T0 - 1 + lease) == [b["event_id"]]
        await Deliverer(q1, [ep], s1, DeadLetters(), policy=FAST).run_due(T0)  # a: 500
    async with aiohttp.ClientSession() as s2:  # a new process: new queue object, session, deliverer
        d2 = Deliverer(DeliveryQueue(redis_client, "t"), [ep], s2, DeadLetters(), policy=FAST)
        assert await d2.run_due(T0 + 1) == 1  # a's retry; b is still leased
        assert await d2.run_due(T0 - 1 + lease + 1) == 1  # lease expired: b is offered again
    assert rcv.verified_ids() == [a["event_id"], a["event_id"], b["event_id"]]


async def test_connection_errors_are_retried(redis_client, session):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    ep = Endpoint(name="down", url=f"http://127.0.0.1:{port}/hook", secret=SECRET, timeout_s=1, internal=True)
    q = DeliveryQueue(redis_client, "t")
    d = Deliverer(q, [ep], session, DeadLetters(), policy=FAST)
    await q.enqueue(alert(), [ep], now=T0)
    await d.run_due(T0)
    [entry] = await q.attempts("down", alert()["event_id"])
    assert entry["outcome"] == "connection_error" and entry["retry_in_s"] == pytest.approx(0.01)


async def test_filters_formats_and_idempotent_enqueue(redis_client, receivers, session):
    rcv = await receivers((200, {}))
    crit = endpoint(rcv, "crit", min_severity="critical")
    tick = endpoint(rcv, "tickers", scopes=("ticker:*",))
    slack = Endpoint(name="slack", url=rcv.url, format="slack", internal=True)  # no secret needed for Slack
    q = DeliveryQueue(redis_client, "t")
    assert await q.enqueue(alert(1, "warning", "ticker:AAPL"), [crit, tick, slack], now=T0) == ["tickers", "slack"]
    assert await q.enqueue(alert(2, "critical", "all"), [crit, tick, slack], now=T0) == ["crit", "slack"]
    assert await q.enqueue(alert(2, "critical", "all"), [crit, tick, slack], now=T0) == []
    await Deliverer(q, [crit, tick, slack], session, DeadLetters()).run_due(T0)
    assert len(rcv.requests) == 4
    bodies = [json.loads(b) for _, b in rcv.requests]
    slack_bodies = [b for b in bodies if "blocks" in b]
    assert len(slack_bodies) == 2 and all(b["text"] for b in slack_bodies)
    assert "&lt;X&gt; &amp; Y" in json.dumps(slack_bodies)  # mrkdwn escaped
    assert json.loads(render_body(alert(1), "json")) == alert(1)


async def test_send_test_webhook(receivers):
    ok = await receivers((204, {}))
    out = await send_test_webhook(ok.url, SECRET, timeout=2, internal=True)
    assert out["ok"] and out["status"] == 204 and ok.verified_ids() == [out["webhook_id"]]
    assert json.loads(ok.requests[0][1])["test"] is True
    schema = json.loads((Path(__file__).resolve().parent.parent / "core" / "schemas" / "alert.json").read_text())
    Draft202012Validator(schema, format_checker=FormatChecker()).validate(json.loads(ok.requests[0][1]))
    bad = await receivers((500, {}))
    out = await send_test_webhook(bad.url, SECRET, timeout=2, internal=True)
    assert not out["ok"] and out["outcome"] == "http_error" and out["status"] == 500


def test_endpoint_config_and_secret_redaction(tmp_path):
    items = [{"name": "a", "url": "https://h.test/a/tok", "secret_env": "HOOK_A"},
             {"name": "b", "url": "https://h.test/b", "timeout": "3s", "scopes": ["ticker:$aapl", "topic:*"]},
             {"name": "c", "url": "https://hooks.slack.test/services/T/B/X", "format": "slack", "min_severity": "critical"}]
    secrets = tmp_path / "secrets.env"
    secrets.write_text("# endpoint secrets\nb='plain-b'\n")
    eps = parse_endpoints(items, secrets=load_secrets_file(secrets), environ={"HOOK_A": SECRET})
    assert [e.secret for e in eps] == [SECRET, "plain-b", None]
    assert eps[1].timeout_s == 3 and eps[1].scopes == ("ticker:AAPL", "topic:*")
    assert SECRET not in repr(eps[0]) and "tok" not in repr(eps[0]) and "***" in repr(eps[0])
    assert "services" not in str(eps[2])
    toml_secrets = tmp_path / "secrets.toml"
    toml_secrets.write_text('a = "from-toml"\n')
    assert load_secrets_file(toml_secrets) == {"a": "from-toml"}
    with pytest.raises(ConfigError) as ei:
        parse_endpoints([items[0]], environ={})
    assert "HOOK_A" in str(ei.value)
    with pytest.raises(ConfigError):
        parse_endpoints([{"name": "d", "url": "https://h.test/d"}])  # json endpoint without a secret
    with pytest.raises(ConfigError) as ei:
        parse_endpoints([{"name": "e", "url": "ftp://h/e", "secret": "s3cr3t"}])
    assert "s3cr3t" not in str(ei.value)
    cfg = load_config(data={"rules": [], "endpoints": [items[2]], "delivery": {"max_attempts": 4, "base_delay": "1s"}})
    assert cfg.endpoints[0].name == "c" and cfg.retry.max_attempts == 4 and cfg.retry.base_delay_s == 1


async def test_a_job_is_leased_only_once_a_slot_is_free(redis_client, receivers, session):
    """Slot first, then lease: jobs waiting for a concurrency slot stay due (another worker may take
    them), so no job's lease runs out while it waits and nothing is POSTed twice."""
    from finpulse.core import constants as C

    rcv = await receivers((200, {}), delay=0.6)
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    d = Deliverer(q, [ep], session, DeadLetters(), policy=FAST, concurrency=1)
    for n in range(4):
        await q.enqueue(alert(n), [ep], now=T0)
    run = asyncio.ensure_future(d.run_due(T0))
    await asyncio.sleep(0.3)
    due = await redis_client.zrange(C.due_key("t", ep.name), 0, -1, withscores=True)
    assert len(due) == 4 and sum(score > T0 for _, score in due) == 1  # only the job being POSTed is leased
    assert await run == 4
    assert len(rcv.requests) == 4 and len(set(rcv.verified_ids())) == 4


# --- where webhooks may go, and what of the answer is kept -----------------------------------------

@pytest.mark.parametrize("url", ["http://127.0.0.1:9/h", "http://10.1.2.3/h", "http://169.254.169.254/latest",
                                 "http://[::1]:8080/h", "http://localhost/h", "http://192.168.1.10/h",
                                 "http://100.64.0.1/h", "http://[::ffff:127.0.0.1]/h", "http://0.0.0.0/h"])
def test_private_targets_are_refused_unless_internal(url):
    with pytest.raises(ConfigError, match="internal = true"):
        Endpoint(name="x", url=url, secret=SECRET)
    assert Endpoint(name="x", url=url, secret=SECRET, internal=True).internal
    with pytest.raises(ConfigError, match="internal must be"):
        parse_endpoints([{"name": "x", "url": url, "secret": SECRET, "internal": "yes"}])
    assert parse_endpoints([{"name": "x", "url": url, "secret": SECRET, "internal": True}])[0].internal


def test_public_targets_need_no_mark():
    assert not Endpoint(name="x", url="https://93.184.216.34/h", secret=SECRET).internal
    assert not Endpoint(name="x", url="https://hooks.example.com/h", secret=SECRET).internal


class FixedResolver(aiohttp.abc.AbstractResolver):
    """A DNS stand-in: every name resolves to ``address`` (as a rebinding attacker's DNS would)."""

    def __init__(self, address):
        self.address = address

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": self.address, "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


async def test_names_resolving_to_private_addresses_are_refused_at_connect_time(receivers):
    from finpulse.alerts.netguard import GuardedResolver
    from finpulse.alerts.sender import post_webhook

    rcv = await receivers((200, {}))
    port = rcv.url.split(":")[2].split("/")[0]
    url = f"http://hooks.example.com:{port}/hooks/secret-token"  # a public-looking name, a loopback answer
    conn = aiohttp.TCPConnector(resolver=GuardedResolver([], resolver=FixedResolver("127.0.0.1")))
    async with aiohttp.ClientSession(connector=conn) as guarded:
        res = await post_webhook(guarded, url, b"{}", {}, 2.0)
    assert res.outcome == "connection_error" and "non-public" in res.error and not rcv.requests
    conn = aiohttp.TCPConnector(resolver=GuardedResolver(["hooks.example.com"], resolver=FixedResolver("127.0.0.1")))
    async with aiohttp.ClientSession(connector=conn) as allowed:  # the endpoint is marked internal
        res = await post_webhook(allowed, url, b"{}", {}, 2.0)
    assert res.outcome == "delivered" and len(rcv.requests) == 1


async def test_response_bodies_are_never_kept_or_republished(redis_client, receivers, session, caplog):
    rcv = await receivers((500, {}), text="db_password=hunter2 internal stack trace")
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    dead = DeadLetters()
    d = Deliverer(q, [ep], session, dead, policy=RetryPolicy(max_attempts=1, base_delay_s=0.01, jitter=0.0))
    await q.enqueue(alert(1), [ep], now=T0)
    with caplog.at_level(logging.DEBUG):
        await d.run_due(T0)
    assert [r["reason"] for r in dead.records] == ["max_attempts"]
    assert dead.records[0]["attempts"][0]["response"] == "500 Internal Server Error"
    stored = [v for k in [k async for k in redis_client.scan_iter(match="*")] if await redis_client.type(k) == b"list"
              for v in await redis_client.lrange(k, 0, -1)]
    assert stored and not any(b"hunter2" in v for v in stored)
    assert "hunter2" not in json.dumps(dead.records) and "hunter2" not in caplog.text


async def test_an_incidents_records_reach_each_endpoint_in_order(redis_client, receivers, session):
    """fired warning -> fired critical (escalation) -> resolved: in that order per endpoint, even when
    the first one needs retries (without the order, the escalation and the resolution overtook it)."""
    rcv = await receivers((503, {}), (503, {}), (200, {}))
    ep = endpoint(rcv)
    q = DeliveryQueue(redis_client, "t")
    d = Deliverer(q, [ep], session, DeadLetters(), policy=FAST)
    records = [alert(1, "warning"), alert(1, "critical"), alert(1, "critical", status="resolved")]
    assert [r["sequence"] for r in records] == [2, 3, 4]
    for r in records:
        await q.enqueue(r, [ep], now=T0)
    t = T0
    while len(rcv.requests) < 5 and t < T0 + 60:
        await d.run_due(t)
        t += 1.0
    wids = [verify(body, headers, SECRET) for headers, body in rcv.requests]
    first = records[0]["event_id"]
    assert wids[:3] == [first] * 3  # two 503s and the retry that succeeded, nothing else meanwhile
    assert wids[3:] == [records[1]["event_id"], records[2]["event_id"]]  # then each once, in order


async def test_jobs_of_a_removed_endpoint_expire_unless_it_comes_back(redis_client, receivers):
    from finpulse.core import constants as C

    rcv = await receivers((200, {}))
    old, kept = endpoint(rcv, "old"), endpoint(rcv, "kept")
    q = DeliveryQueue(redis_client, "t", keep_s=3600)
    await q.enqueue(alert(1), [old, kept], now=T0)
    job = C.job_key("t", "old", alert(1)["event_id"])
    assert await q.reconcile(["kept"]) == ["old"]  # "old" left the rules file
    assert 0 < await redis_client.ttl(job) <= 3600 and 0 < await redis_client.ttl(C.due_key("t", "old")) <= 3600
    assert await redis_client.ttl(C.job_key("t", "kept", alert(1)["event_id"])) == -1  # untouched
    assert await q.reconcile(["kept", "old"]) == []  # configured again before it expired: kept
    assert await redis_client.ttl(job) == -1
