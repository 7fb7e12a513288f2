"""``finpulse serve``: the dashboard, the JSON API and the operations endpoints of one namespace.

* ``/`` — the dashboard (``finpulse/static/``: one page, charts drawn with uPlot, MIT, committed with
  its licence; no CDN, no npm at install time);
* ``/api/...`` — the data behind it (:mod:`finpulse.dashboard`), described by ``/api/openapi.json``
  (OpenAPI 3.1, assembled with apispec from the route table below and the pydantic response models);
* ``/livez``, ``/readyz`` (Redis answers), ``/metrics`` (this process's Prometheus registry).

Mutations (acknowledge an alert, add or end a silence) need ``Authorization: Bearer <token>`` with the
token of ``FINPULSE_API_TOKEN``; without a configured token the API is read-only. Nothing in the API
reads endpoint URLs, secrets or settings. Binds to ``127.0.0.1`` by default (``FINPULSE_SERVE_HOST``).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from finpulse import __version__
from finpulse.alerts.exceptions import ConfigError
from finpulse.alerts.silences import target_of
from finpulse.alerts.windows import normalize_scope
from finpulse.core.metrics import metrics
from finpulse.core.opsserver import add_ops_routes
from finpulse.core.rfc3339 import parse as parse_time
from finpulse.core.settings import Settings

from . import dashboard as D

log = logging.getLogger(__name__)

VIEW = web.AppKey("view", D.View)


# --- response and request models (documentation and validation) --------------------------------

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Mover(_Open):
    scope: str
    n: int = Field(description="headlines in the short window")
    negative_rate: float | None
    baseline_rate: float | None
    score: float = Field(description="(short rate - baseline rate) * sqrt(n)")


class MoversResponse(_Open):
    at: str | None = Field(description="the namespace's newest event time")
    scopes: list[Mover]


class SeriesPoint(_Open):
    t: int = Field(description="step end, epoch seconds (event time)")
    n: int
    negative: int
    rate: float | None
    short_rate: float | None = Field(description="negative rate over the detection window ending at t")
    baseline_rate: float | None = Field(description="negative rate over the baseline window before it")


class SeriesResponse(_Open):
    scope: str
    short_window_s: int
    baseline_window_s: int
    points: list[SeriesPoint]
    alerts: list[dict[str, Any]]


class Headline(_Open):
    id: str
    title: str
    url: str | None
    source: str | None
    published_at: str
    sentiment: str
    sentiment_score: float
    topic: str | None


class HeadlinesResponse(_Open):
    scope: str
    headlines: list[Headline]


class AlertsResponse(_Open):
    alerts: list[dict[str, Any]]


class Health(_Open):
    namespace: str
    event_time: str | None
    counters: dict[str, int]
    dead_letters_by_reason: dict[str, int]
    backlog_messages: dict[str, int]


class ModelResponse(_Open):
    version: str | None
    report: dict[str, Any] | None
    lifecycle: dict[str, Any]


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(min_length=1, max_length=100)
    note: str = Field("", max_length=1000)


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: str | None = Field(None, description="silence every alert of this scope, e.g. topic:Energy | Oil")
    alert_id: str | None = Field(None, description="or one incident")
    minutes: float = Field(gt=0, le=30 * 24 * 60)
    by: str = Field(min_length=1, max_length=100)
    reason: str = Field("", max_length=1000)


class Silence(_Open):
    target: str
    until: float
    by: str
    reason: str


class SilencesResponse(_Open):
    silences: list[Silence]


class Problem(_Open):
    error: str


# --- handlers --------------------------------------------------------------------------------

def _view(request: web.Request) -> D.View:
    return request.app[VIEW]


def _query_time(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        try:
            return parse_time(raw).timestamp()
        except ValueError as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"{name}: {exc}"}),
                                     content_type="application/json") from exc


def _int(request: web.Request, name: str, default: int, hi: int) -> int:
    try:
        v = int(request.query.get(name, default))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be an integer"}),
                                 content_type="application/json") from exc
    return max(1, min(v, hi))


async def get_movers(request: web.Request) -> web.Response:
    return web.json_response(await D.movers(_view(request), limit=_int(request, "limit", 20, 200)))


async def get_series(request: web.Request) -> web.Response:
    try:
        hours = max(0.25, min(float(request.query.get("hours", 24)), 24 * 35))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": "hours must be a number"}),
                                 content_type="application/json") from exc
    return web.json_response(await D.series(_view(request), request.match_info["scope"], hours))


async def get_headlines(request: web.Request) -> web.Response:
    return web.json_response(await D.headlines(_view(request), request.match_info["scope"],
                                               _int(request, "limit", 20, 30)))


async def get_open_alerts(request: web.Request) -> web.Response:
    return web.json_response(await D.open_now(_view(request)))


async def get_alerts(request: web.Request) -> web.Response:
    q = request.query
    scope = normalize_scope(q["scope"]) if q.get("scope") else None
    rows = await _view(request).history.query(scope=scope, severity=q.get("severity") or None,
                                              status=q.get("status") or None, since=_query_time(request, "since"),
                                              until=_query_time(request, "until"),
                                              limit=_int(request, "limit", 200, 5000))
    return web.json_response({"alerts": rows})


async def get_health(request: web.Request) -> web.Response:
    return web.json_response(await D.health(_view(request)))


async def get_model(request: web.Request) -> web.Response:
    return web.json_response(await D.model(_view(request)))


async def get_silences(request: web.Request) -> web.Response:
    active = await _view(request).silences.active()
    return web.json_response({"silences": sorted(active.values(), key=lambda s: s["target"])})


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(await request.json())
    except (ValidationError, ValueError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)[:1000]}), content_type="application/json") from exc


async def post_ack(request: web.Request) -> web.Response:
    req = await _body(request, AckRequest)
    ack = await _view(request).history.acknowledge(request.match_info["alert_id"], req.by, req.note)
    return web.json_response({"alert_id": request.match_info["alert_id"], "acknowledged": ack})


async def post_silence(request: web.Request) -> web.Response:
    req = await _body(request, SilenceRequest)
    if (req.scope is None) == (req.alert_id is None):
        raise web.HTTPBadRequest(text=json.dumps({"error": "give exactly one of scope and alert_id"}),
                                 content_type="application/json")
    try:
        target = target_of("scope", normalize_scope(req.scope)) if req.scope else target_of("alert", req.alert_id or "")
        s = await _view(request).silences.add(target, req.minutes * 60, by=req.by, reason=req.reason)
    except (ConfigError, ValueError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)}), content_type="application/json") from exc
    return web.json_response(s, status=201)


async def delete_silence(request: web.Request) -> web.Response:
    target = request.query.get("target", "")
    if not await _view(request).silences.remove(target):
        raise web.HTTPNotFound(text=json.dumps({"error": f"no silence {target!r}"}), content_type="application/json")
    return web.json_response({"removed": target})


# --- routes and their OpenAPI description ------------------------------------------------------

@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.Response]]
    summary: str
    response: type[BaseModel]
    params: tuple[tuple[str, str, str, str], ...] = ()  # (name, in, type, description)
    body: type[BaseModel] | None = None
    mutation: bool = False


SCOPE_PARAM = ("scope", "path", "string", "a scope: all, topic:<name>, ticker:<SYMBOL>, entity:<name>")
ROUTES = (
    Route("GET", "/api/scopes", get_movers, "Scopes whose negative rate moved most (short window against baseline)",
          MoversResponse, (("limit", "query", "integer", "how many (default 20)"),)),
    Route("GET", "/api/scopes/{scope}/series", get_series, "A scope's trend: volume, negative rate, detection "
          "window and baseline rates, and its alerts", SeriesResponse,
          (SCOPE_PARAM, ("hours", "query", "number", "how far back from the newest event time (default 24)"))),
    Route("GET", "/api/scopes/{scope}/headlines", get_headlines, "A scope's most recent headlines with labels and "
          "links", HeadlinesResponse, (SCOPE_PARAM, ("limit", "query", "integer", "at most 30"))),
    Route("GET", "/api/alerts/open", get_open_alerts, "Open alerts with their newest record, acknowledgement and "
          "silence", AlertsResponse),
    Route("GET", "/api/alerts", get_alerts, "Alert history, newest window end first", AlertsResponse,
          (("scope", "query", "string", "only this scope"),
           ("severity", "query", "string", "this severity or higher: info, warning, critical"),
           ("status", "query", "string", "fired or resolved"),
           ("since", "query", "string", "window end at or after (RFC 3339 or epoch seconds)"),
           ("until", "query", "string", "window end at or before"), ("limit", "query", "integer", "at most 5000"))),
    Route("POST", "/api/alerts/{alert_id}/ack", post_ack, "Acknowledge an alert (shown with it; delivery is "
          "unchanged)", Problem, (("alert_id", "path", "string", "the incident"),), AckRequest, True),
    Route("GET", "/api/silences", get_silences, "Silences in force", SilencesResponse),
    Route("POST", "/api/silences", post_silence, "Silence a scope or an alert for a time: its records are kept but "
          "not delivered, nor is its resolution", Silence, (), SilenceRequest, True),
    Route("DELETE", "/api/silences", delete_silence, "End a silence now", Problem,
          (("target", "query", "string", "scope:<scope> or alert:<alert id>"),), None, True),
    Route("GET", "/api/health", get_health, "Pipeline health: counters, throughput, backlog, dead letters by reason, "
          "model versions", Health),
    Route("GET", "/api/model", get_model, "The model that scored last and its drift against its reference; the "
          "version in force, the shadow version and its agreement, the last promotions and rollbacks",
          ModelResponse),
)


def openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of :data:`ROUTES`."""
    from apispec import APISpec

    spec = APISpec(title="finpulse API", version=__version__, openapi_version="3.1.0",
                   info={"description": f"Sentiment trends and alerts of namespace {settings.namespace}. "
                                        "Mutations need `Authorization: Bearer <FINPULSE_API_TOKEN>`."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    models = {m for r in ROUTES for m in (r.response, r.body) if m is not None}
    for m in sorted(models, key=lambda m: m.__name__):
        schema = m.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            if name not in spec.components.schemas:
                spec.components.schema(name, sub)
        spec.components.schema(m.__name__, schema)
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "parameters": [{"name": n, "in": where, "required": where == "path", "schema": {"type": t},
                            "description": d} for n, where, t, d in r.params],
            "responses": {"200" if r.method != "POST" or r.body is AckRequest else "201": {
                "description": "OK", "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{r.response.__name__}"}}}},
                "400": {"description": "bad request"}},
        }
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}}}
        if r.mutation:
            op["security"] = [{"bearer": []}]
            op["responses"]["401"] = {"description": "no or wrong token"}
            op["responses"]["403"] = {"description": "the API is read-only (no token configured)"}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    for path, ops in paths.items():
        spec.path(path=path, operations=ops)
    return spec.to_dict()


def _authorize(settings: Settings) -> Callable[[web.Request], None]:
    def check(request: web.Request) -> None:
        if settings.api_token is None or not settings.api_token.get_secret_value():
            raise web.HTTPForbidden(text=json.dumps({"error": "the API is read-only: set FINPULSE_API_TOKEN to "
                                                              "allow acknowledgements and silences"}),
                                    content_type="application/json")
        given = request.headers.get("Authorization", "")
        want = f"Bearer {settings.api_token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), want.encode()):
            raise web.HTTPUnauthorized(text=json.dumps({"error": "missing or wrong bearer token"}),
                                       content_type="application/json", headers={"WWW-Authenticate": "Bearer"})
    return check


def _guarded(handler, check):
    async def wrapped(request: web.Request) -> web.Response:
        check(request)
        return await handler(request)
    return wrapped


def _static(name: str) -> bytes:
    return resources.files("finpulse").joinpath("static", name).read_bytes()


STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
STATIC_FILES = ("index.html", "dashboard.js", "dashboard.css", "uPlot.iife.min.js", "uPlot.min.css")


def build_app(view: D.View) -> web.Application:
    """The aiohttp application of ``finpulse serve`` over ``view``."""
    app = web.Application(middlewares=[_security_headers])
    app[VIEW] = view
    check = _authorize(view.settings)
    for r in ROUTES:
        app.router.add_route(r.method, r.path, _guarded(r.handler, check) if r.mutation else r.handler)
    spec = openapi(view.settings)

    async def get_openapi(_request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/api/openapi.json", get_openapi)
    files = {name: _static(name) for name in STATIC_FILES}

    def static_handler(name: str):
        ctype = STATIC_TYPES["." + name.rsplit(".", 1)[1]]

        async def handler(_request: web.Request) -> web.Response:
            return web.Response(body=files[name], content_type=ctype, charset="utf-8")
        return handler

    app.router.add_get("/", static_handler("index.html"))
    for name in STATIC_FILES[1:]:
        app.router.add_get(f"/static/{name}", static_handler(name))

    async def redis_ok() -> None:
        await view.redis.ping()

    add_ops_routes(app, {"redis": redis_ok}, metrics().registry)
    return app


@web.middleware
async def _security_headers(request: web.Request, handler) -> web.StreamResponse:
    t0 = time.perf_counter()
    try:
        resp = await handler(request)
    except (OSError, RedisError) as exc:  # Redis unavailable: say so, do not dump a traceback
        if isinstance(exc, RedisError) and not isinstance(exc, RedisConnectionError | RedisTimeoutError):
            raise
        log.warning("%s %s: Redis unavailable (%s)", request.method, request.path, exc)
        resp = web.json_response({"error": f"Redis unavailable: {type(exc).__name__}"}, status=503)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
    if request.path.startswith("/api/"):
        resp.headers.setdefault("Cache-Control", "no-store")
        log.debug("%s %s %.1f ms", request.method, request.path, 1000 * (time.perf_counter() - t0))
    return resp


async def serve_forever(settings: Settings, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard of ``settings.namespace`` until cancelled.

    :param settings: Redis, namespace, rules file, ``serve_host`` / ``serve_port``, ``api_token``.
    :param on_ready: called with the base URL once listening.
    """
    import asyncio

    from finpulse.core.connections import async_redis
    from finpulse.core.opsserver import start_server
    from finpulse.core.stackstate import resolve_redis_url

    redis = async_redis(resolve_redis_url(settings))
    server = await start_server(build_app(D.make_view(settings, redis)), settings.serve_host, settings.serve_port,
                                "dashboard")
    if on_ready is not None:
        on_ready(server.url)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
        await redis.aclose()


class ServeThread:
    """``finpulse serve`` in a background thread (the demo and the tests run it beside other work).

    :param settings: as for :func:`serve_forever`.
    :param timeout: seconds to wait for it to listen.
    :raises OSError: when it cannot listen (the port is taken).
    """

    def __init__(self, settings: Settings, timeout: float = 30.0):
        import asyncio
        import threading

        self.url = ""
        self._error: BaseException | None = None
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._task: Any = None

        def on_ready(url: str) -> None:
            self.url = url
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._task = self._loop.create_task(serve_forever(settings, on_ready))
            try:
                self._loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                self._error = exc
                ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="finpulse-serve", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("finpulse serve did not start")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)
