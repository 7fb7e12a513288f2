"""The operations endpoints every finpulse process serves: ``/livez``, ``/readyz`` and ``/metrics``.

* ``/livez``: 200 while the process's event loop answers (a container's liveness probe);
* ``/readyz``: 200 when every readiness check of the process passes (Redis answers, the broker
  accepts connections, the worker's model is loaded), else 503; the JSON body says which failed;
* ``/metrics``: the process's Prometheus registry (:mod:`finpulse.core.metrics`) in the text
  exposition format.

Nothing is started at import time; :func:`start_ops_server` binds the port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[Any]]
"""A readiness check: returns when the dependency is usable, raises otherwise."""

CHECK_TIMEOUT_S = 2.0


async def run_checks(checks: Mapping[str, ReadyCheck]) -> tuple[bool, dict[str, str]]:
    """Run every check concurrently (each bounded by :data:`CHECK_TIMEOUT_S`).

    :returns: (all passed, name -> ``"ok"`` or ``"<Error>: <message>"``).
    """
    async def one(check: ReadyCheck) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            return "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return f"{type(exc).__name__}: {exc}"[:300]

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    report = dict(zip(names, results, strict=True))
    return all(v == "ok" for v in results), report


def add_ops_routes(app: Any, checks: Mapping[str, ReadyCheck], registry: Any) -> None:
    """Add ``/livez``, ``/readyz`` and ``/metrics`` to an ``aiohttp.web.Application``.

    :param app: the application.
    :param checks: readiness checks by name.
    :param registry: the Prometheus ``CollectorRegistry`` to expose.
    """
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def livez(_request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def readyz(_request: web.Request) -> web.Response:
        ok, report = await run_checks(checks)
        return web.json_response({"ready": ok, "checks": report}, status=200 if ok else 503)

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


@dataclass
class OpsServer:
    """A running operations server (stop it with :meth:`close`)."""

    runner: Any
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_server(app: Any, host: str, port: int, what: str) -> OpsServer:
    """Serve ``app`` on ``host:port`` (0 = any free port) and log its URL.

    :raises OSError: when the port is taken (say which setting to change).
    """
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"{what}: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
    log.info("%s listening on %s", what, url)
    return OpsServer(runner=runner, url=url)


async def start_ops_server(host: str, port: int, checks: Mapping[str, ReadyCheck], registry: Any,
                           what: str = "operations endpoints") -> OpsServer | None:
    """Start ``/livez``, ``/readyz`` and ``/metrics`` on ``host:port`` (-1 = off, 0 = any free port).

    :param host: bind address.
    :param port: the port setting of the process (``worker_ops_port`` / ``crawler_ops_port``).
    :param checks: readiness checks by name.
    :param registry: the Prometheus registry.
    :param what: names the server in the log.
    :returns: the server, or ``None`` when ``port`` is -1.
    """
    if port < 0:
        return None
    from aiohttp import web

    app = web.Application()
    add_ops_routes(app, checks, registry)
    return await start_server(app, host, port, what)


async def tcp_check(bootstrap: str) -> None:
    """Readiness of a broker: one of the ``host:port`` addresses accepts a TCP connection."""
    errors = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port)), 1.0)
            writer.close()
            return
        except (TimeoutError, OSError, ValueError) as exc:
            errors.append(f"{item}: {exc}")
    raise ConnectionError("; ".join(errors) or "no broker address")
