"""Watching it live: the worker's /metrics, /livez, /readyz; ``finpulse serve``'s API and dashboard.

One module-wide run feeds a real worker (real broker, real Redis) with a demo-sized stream: raw
headlines (classified by the model) and a pre-scored negative oil burst that fires an alert. The
tests then read what a risk desk would: the worker's metrics (names, units, values that move), the
API (trends, movers, history, open alerts, health, model), its OpenAPI description, its security,
and the dashboard in a real headless Chromium (Debian's, driven by Playwright), with a screenshot.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finpulse.core.settings import Settings

from .support import Worker, create_topics, produce, wait_for, worker_env
from .test_alerts_e2e import OIL, calm_traffic, iso, new_secret, oil_burst, produce_scored, rules_toml
from .test_pipeline_e2e import raw_messages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
OIL_SCOPE = f"topic:{OIL}"


def http(url: str, method: str = "GET", body: dict | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> dict:
    status, body = http(url)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


def scrape(url: str) -> dict[str, float]:
    """``/metrics`` as {sample with labels: value}."""
    status, body = http(url)
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def ops_url(worker: Worker) -> str:
    m = wait_for(lambda: re.search(r"worker operations endpoints listening on (http://\S+)", worker.log()), 120,
                 what="the worker's operations endpoints")
    return m.group(1)


@pytest.fixture(scope="module")
def live(stack, tmp_path_factory):
    """A worker that classified raw headlines and counted a negative oil burst (one alert, open)."""
    import uuid

    tmp = tmp_path_factory.mktemp("serve")
    ns = f"t-{uuid.uuid4().hex[:10]}"
    secret, token = new_secret(), "tok-" + uuid.uuid4().hex
    s = Settings(namespace=ns, kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, partitions=1)
    create_topics(stack.kafka_bootstrap, s.all_topics(), 1)
    rules = tmp / "rules.toml"
    rules.write_text(rules_toml([{"name": "desk", "url": "http://127.0.0.1:9/hook", "secret_env": "FP_SERVE_SECRET"}]))
    env = worker_env(stack, ns, FINPULSE_PARTITIONS=1, FINPULSE_RULES_FILE=str(rules), FP_SERVE_SECRET=secret)
    worker = Worker(env, tmp / "worker.log")
    try:
        metrics_url = ops_url(worker) + "/metrics"
        before = scrape(metrics_url)
        raw = raw_messages(60)
        for i, m in enumerate(raw):  # the day before the burst, 10 min apart: no topic of theirs can fire
            m["published_at"] = iso(datetime(2024, 5, 5, 0, 0, tzinfo=UTC) + timedelta(minutes=10 * i))
        produce(s.kafka_bootstrap, s.topic(s.topic_raw), [json.dumps(m).encode() for m in raw])
        wait_for(lambda: scrape(metrics_url).get("finpulse_headlines_counted_total", 0) >= 60, 120,
                 what="the raw headlines classified and counted")
        produce_scored(s, calm_traffic(range(0, 20)) + oil_burst(range(10, 16)))
        wait_for(lambda: scrape(metrics_url).get('finpulse_alerts_total{severity="warning",status="fired"}'), 120,
                 what="the oil burst's alert")
        settings = s.with_overrides(rules_file=str(rules), serve_port=0, api_token=token)
        from finpulse.serve import ServeThread

        served = ServeThread(settings)
        yield {"settings": settings, "worker": worker, "metrics_url": metrics_url, "before": before,
               "url": served.url, "token": token, "secret": secret, "tmp": tmp}
        served.stop()
    finally:
        worker.stop()


def test_worker_metrics_have_finpulse_names_base_units_and_move(live):
    before, after = live["before"], scrape(live["metrics_url"])
    ours = {k.split("{")[0] for k in after if k.startswith("finpulse_")}
    for name in ("finpulse_headlines_classified_total", "finpulse_headlines_counted_total",
                 "finpulse_batch_duration_seconds_bucket", "finpulse_inference_duration_seconds_count",
                 "finpulse_end_to_end_lag_seconds_count", "finpulse_consumer_lag_seconds", "finpulse_alerts_total",
                 "finpulse_model_info"):
        assert name in ours, name
    assert before.get("finpulse_headlines_classified_total", 0) == 0
    assert after["finpulse_headlines_classified_total"] >= 60
    assert after["finpulse_headlines_counted_total"] >= 60 + len(calm_traffic(range(0, 20)))
    assert after['finpulse_alerts_total{severity="warning",status="fired"}'] == 1
    assert after["finpulse_end_to_end_lag_seconds_count"] >= 60  # the classified ones carry their raw time
    assert after['finpulse_batch_duration_seconds_count{stage="aggregate"}'] > 0
    assert after["finpulse_inference_duration_seconds_count"] > 0
    # durations in seconds: a batch takes well under 60 s
    assert after['finpulse_batch_duration_seconds_sum{stage="classify"}'] / \
        after['finpulse_batch_duration_seconds_count{stage="classify"}'] < 60


def test_worker_livez_and_readyz(live):
    base = live["metrics_url"].rsplit("/", 1)[0]
    assert get_json(base + "/livez") == {"live": True}
    ready = get_json(base + "/readyz")
    assert ready["ready"] and ready["checks"] == {"redis": "ok", "broker": "ok", "model": "ok"}


def test_api_shows_the_burst(live):
    url = live["url"]
    movers = get_json(url + "/api/scopes?limit=10")
    assert movers["scopes"][0]["scope"] == OIL_SCOPE  # the scope whose negative rate moved most
    series = get_json(url + f"/api/scopes/{urllib.request.quote(OIL_SCOPE)}/series?hours=6")
    assert series["short_window_s"] == 900 and series["baseline_window_s"] == 86400
    assert sum(p["n"] for p in series["points"]) == 12 and max(p["short_rate"] or 0 for p in series["points"]) == 1.0
    assert [a["status"] for a in series["alerts"]] == ["fired"]
    heads = get_json(url + f"/api/scopes/{urllib.request.quote(OIL_SCOPE)}/headlines?limit=5")["headlines"]
    assert len(heads) == 5 and all(h["sentiment"] == "negative" and h["url"].startswith("https://") for h in heads)
    history = get_json(url + "/api/alerts?severity=warning")["alerts"]
    assert [(a["scope"], a["status"]) for a in history] == [(OIL_SCOPE, "fired")]
    assert get_json(url + "/api/alerts?severity=critical")["alerts"] == []
    assert get_json(url + "/api/alerts?until=2024-05-06T09:00:00Z")["alerts"] == []
    opened = get_json(url + "/api/alerts/open")["alerts"]
    assert [a["scope"] for a in opened] == [OIL_SCOPE] and opened[0]["record"]["top_headlines"]
    health = get_json(url + "/api/health")
    assert health["counters"]["classified"] >= 60 and health["counters"]["counted"] >= 60
    assert health["model_versions"] and health["namespace"] == live["settings"].namespace
    model = get_json(url + "/api/model")
    assert model["version"] == health["model_versions"][0]["version"]
    assert model["lifecycle"]["in_force"] == model["version"] and model["lifecycle"]["shadow"] is None
    assert model["report"]["n_current"] >= 60 and not model["report"]["judged"]  # too few for a verdict


def test_openapi_describes_every_route(live):
    from finpulse.serve import ROUTES

    spec = get_json(live["url"] + "/api/openapi.json")
    assert spec["openapi"].startswith("3.1")
    for r in ROUTES:
        op = spec["paths"][r.path][r.method.lower()]
        assert op["summary"] and op["responses"]
        for resp in op["responses"].values():
            for content in resp.get("content", {}).values():
                ref = content["schema"]["$ref"].rsplit("/", 1)[1]
                assert ref in spec["components"]["schemas"]
        assert ("security" in op) == r.mutation


def test_mutations_need_the_token_and_nothing_exposes_secrets(live):
    url, token = live["url"], live["token"]
    body = {"scope": OIL_SCOPE, "minutes": 5, "by": "test"}
    assert http(url + "/api/silences", "POST", body)[0] == 401
    assert http(url + "/api/silences", "POST", body, token="wrong")[0] == 401
    assert http(url + "/api/alerts/x/ack", "POST", {"by": "me"})[0] == 401
    status, made = http(url + "/api/silences", "POST", body, token=token)
    assert status == 201 and json.loads(made)["target"] == f"scope:{OIL_SCOPE}"
    assert [s["target"] for s in get_json(url + "/api/silences")["silences"]] == [f"scope:{OIL_SCOPE}"]
    assert http(url + "/api/silences?target=" + urllib.request.quote(f"scope:{OIL_SCOPE}"), "DELETE")[0] == 401
    assert http(url + "/api/silences?target=" + urllib.request.quote(f"scope:{OIL_SCOPE}"), "DELETE",
                token=token)[0] == 200
    assert http(url + "/api/silences", "POST", {"minutes": 5, "by": "x"}, token=token)[0] == 400
    # no secret, token or endpoint address in any answer
    texts = [http(url + p)[1].decode() for p in ("/api/scopes", "/api/alerts", "/api/alerts/open", "/api/health",
                                                  "/api/model", "/api/silences", "/api/openapi.json", "/metrics", "/")]
    texts.append(http(url + f"/api/scopes/{urllib.request.quote(OIL_SCOPE)}/series")[1].decode())
    for t in texts:
        assert live["secret"] not in t and token not in t and "127.0.0.1:9/hook" not in t


def test_a_read_only_api_refuses_mutations(live):
    from aiohttp.test_utils import TestClient, TestServer

    from finpulse.core.connections import async_redis
    from finpulse.dashboard import make_view
    from finpulse.serve import build_app

    async def go() -> int:
        settings = live["settings"].with_overrides(api_token=None)
        r = async_redis(settings.redis_url)
        async with TestClient(TestServer(build_app(make_view(settings, r)))) as client:
            resp = await client.post("/api/silences", json={"scope": "all", "minutes": 1, "by": "x"},
                                     headers={"Authorization": "Bearer anything"})
            status = resp.status
        await r.aclose()
        return status

    assert asyncio.run(go()) == 403


def test_the_dashboard_in_a_real_browser(live):
    exe = os.environ.get("FINPULSE_CHROMIUM") or shutil.which("chromium")
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: scripts/test.sh installs Debian's chromium")
        pytest.skip("needs Debian's chromium (apt-get install chromium); scripts/test.sh installs it as root")
    from playwright.sync_api import sync_playwright

    shot = Path(os.environ.get("FINPULSE_SCREENSHOT", str(live["tmp"] / "dashboard.png")))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live["url"] + "/?scope=" + urllib.request.quote(OIL_SCOPE))
        page.wait_for_selector("body[data-loaded='1']", timeout=30000)
        points = int(page.get_attribute("#trend-chart", "data-points"))
        assert points > 0  # the burst's scope has a trend
        assert page.locator("#trend-chart canvas").count() == 1 and page.locator("#volume-chart canvas").count() == 1
        assert page.locator(f"#history tr.alert-row[data-scope='{OIL_SCOPE}']").count() == 1  # the alert is listed
        assert page.locator(f".open-alert[data-scope='{OIL_SCOPE}']").count() == 1
        assert page.locator("#headlines tbody tr").count() == 12
        assert page.locator("#movers tbody tr").first.inner_text().startswith(OIL_SCOPE)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert page.get_attribute("body", "data-error") is None and not errors, errors
        browser.close()
    assert shot.stat().st_size > 20000


def test_a_silenced_scope_is_recorded_not_delivered_and_unsilencing_delivers_the_next(stack, namespace, tmp_path):
    """Silence the oil scope: its burst fires and resolves (both on the alerts topic and in the history)
    but no webhook goes out, neither for the firing nor for the resolution. Unsilenced, the next oil
    incident is delivered."""
    from finpulse.alerts.history import AlertHistory
    from finpulse.alerts.silences import Silences
    from finpulse.core.connections import async_redis

    from .support import consume
    from .test_alerts_e2e import Receiver, oil_calm, start_worker

    s = Settings(namespace=namespace, kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, partitions=1)
    create_topics(stack.kafka_bootstrap, s.all_topics(), 1)

    async def redis_do(fn):
        r = async_redis(s.redis_url)
        try:
            return await fn(r)
        finally:
            await r.aclose()

    asyncio.run(redis_do(lambda r: Silences(r, namespace).add(f"scope:{OIL_SCOPE}", 3600, by="desk", reason="known")))
    rec = Receiver(new_secret()).start()
    worker, _ = start_worker(stack, s, tmp_path, [("risk", rec, {})])
    try:
        produce_scored(s, calm_traffic(range(0, 46)) + oil_burst(range(10, 16)) + oil_calm(range(16, 46)))
        wait_for(lambda: [a for a in consume(s.kafka_bootstrap, s.topic(s.topic_alerts), min_count=2, timeout=2)
                          if a["status"] == "resolved"], 90, what="the silenced incident to resolve")
        time.sleep(2.0)
        assert rec.got() == []  # neither the firing nor the resolution was delivered
        hist = asyncio.run(redis_do(lambda r: AlertHistory(r, namespace).query()))
        assert sorted(a["status"] for a in hist) == ["fired", "resolved"]
        assert "not delivered: silenced" in worker.log()
        assert asyncio.run(redis_do(lambda r: Silences(r, namespace).remove(f"scope:{OIL_SCOPE}")))
        # the next oil incident, after the rule's 1 h cooldown
        produce_scored(s, calm_traffic(range(46, 160)) + oil_burst(range(120, 126)) + oil_calm(range(126, 160)))
        got = wait_for(lambda: [r for r in rec.delivered() if r["alert"]["status"] == "resolved"], 90,
                       what="the next incident delivered")
        statuses = [r["alert"]["status"] for r in rec.delivered()]
        assert statuses == ["fired", "resolved"] and got[0]["alert"]["window_end"] > "2024-05-06T11:00"
    finally:
        worker.stop()
        rec.stop()


def test_redis_down_answers_503_not_a_traceback():
    from aiohttp.test_utils import TestClient, TestServer

    from finpulse.core.connections import async_redis
    from finpulse.dashboard import make_view
    from finpulse.serve import build_app
    from finpulse.stack import free_port

    async def go() -> tuple[int, dict, int]:
        settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", namespace="t-down")
        r = async_redis(settings.redis_url, socket_connect_timeout=1)
        async with TestClient(TestServer(build_app(make_view(settings, r)))) as client:
            resp = await client.get("/api/health")
            body = await resp.json()
            live = (await client.get("/livez")).status
        await r.aclose()
        return resp.status, body, live

    status, body, live = asyncio.run(go())
    assert status == 503 and body["error"].startswith("Redis unavailable") and live == 200
