"""Sending webhooks: one HTTP attempt (:func:`post_webhook`), the retrying :class:`Deliverer` loop, test webhooks.

Holds :class:`AttemptResult`, :class:`Deliverer` (claims due jobs of :class:`~finpulse.alerts.queue.DeliveryQueue`,
signs and posts them, schedules retries, hands final failures to a dead-letter callback),
:func:`post_webhook`, :data:`USER_AGENT`, and :func:`sample_alert` / :func:`send_test_webhook` for
``finpulse alerts test-webhook``. Guarantees (see ``docs/alerts.md``): delivered at least once or handed
to the dead-letter callback with every attempt's outcome; each endpoint is served by its own task, so
a slow endpoint cannot stall the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

import finpulse
from finpulse.core import constants as C
from finpulse.core.http import parse_retry_after
from finpulse.core.messages import Alert
from finpulse.core.metrics import metrics
from finpulse.core.rfc3339 import format as format_time

from .config import Endpoint, RetryPolicy, redact_url
from .exceptions import ConfigError
from .netguard import check_endpoint_host, guarded_session
from .queue import DeliveryQueue
from .render import render_body
from .rules import earlier_event_ids, make_event_id
from .signing import sign_headers

log = logging.getLogger(__name__)

USER_AGENT = f"finpulse-alerts/{finpulse.__version__}"

#: How long a record waits before it looks again whether the earlier record of its incident is out.
ORDER_WAIT_S = 0.5

DeadCallback = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class AttemptResult:
    """Outcome of one HTTP attempt.

    :param outcome: ``delivered`` (2xx), ``http_error`` (429/5xx, retried), ``timeout``,
        ``connection_error`` (retried), ``rejected`` (other status, not retried), ``gone`` (410).
    :param status: HTTP status, ``None`` without a response.
    :param error: short error text (never the URL path or a secret).
    :param duration_ms: request duration.
    :param retry_after_s: parsed ``Retry-After``, if any.
    :param response: the response's status line (``"503 Service Unavailable"``); never its body,
        which may hold anything and would travel on to logs, Redis and ``alerts.dlq``.
    """

    outcome: str
    status: int | None
    error: str | None
    duration_ms: int
    retry_after_s: float | None
    response: str | None


def internal_hosts(endpoints: Sequence[Endpoint]) -> list[str]:
    """Host names of the endpoints marked ``internal`` (the guarded resolver lets them resolve anywhere)."""
    return [urlsplit(e.url).hostname or "" for e in endpoints if e.internal]


class Deliverer:
    """Sends queued alerts to their endpoints with retries.

    :param queue: the :class:`DeliveryQueue`.
    :param endpoints: configured endpoints (jobs of endpoints not listed are left alone).
    :param session: an ``aiohttp.ClientSession`` (owned by the caller).
    :param on_dead: async callback receiving a dead-letter dict (``endpoint``, ``webhook_id``,
        ``alert_id``, ``reason``, ``attempts``, ``alert``, ``dead_at``); the agent produces it to
        ``alerts.dlq``. If it raises, the hand-off is retried later; the job is never dropped.
    :param policy: retry schedule.
    :param clock: wall clock (``time.time``) for the ``webhook-timestamp`` header and logs.
    :param rng: random source for jitter.
    :param concurrency: concurrent requests per endpoint.
    :param batch: most jobs one endpoint takes per pass.
    """

    def __init__(self, queue: DeliveryQueue, endpoints: Sequence[Endpoint], session: aiohttp.ClientSession,
                 on_dead: DeadCallback, *, policy: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 concurrency: int = 4, batch: int = 100):
        self.queue = queue
        self.endpoints = {e.name: e for e in endpoints}
        self.session = session
        self.on_dead = on_dead
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.rng = rng or random.Random()
        self.batch = batch
        self.disabled: set[str] = set()
        self._sems = {e.name: asyncio.Semaphore(max(1, concurrency)) for e in endpoints}

    def lease_s(self, ep: Endpoint) -> float:
        """How long a claimed job of ``ep`` stays invisible to other passes.

        :param ep: the endpoint.
        """
        return ep.timeout_s + self.policy.lease_margin_s

    async def run_due(self, now: float | None = None) -> int:
        """One pass: attempt every due job of every enabled endpoint, endpoints concurrently.

        :param now: scheduling time (default: the clock); jobs due at or before it are attempted.
        :returns: number of jobs handled (attempted, or dead-letter hand-offs retried).
        """
        now = self.clock() if now is None else now
        eps = [e for e in self.endpoints.values() if e.name not in self.disabled]
        counts = await asyncio.gather(*(self._run_endpoint(e, now) for e in eps))
        return sum(counts)

    async def run_forever(self, stop_event: asyncio.Event, poll_s: float = 1.0) -> None:
        """Deliver until ``stop_event`` is set: one independent loop per endpoint.

        :param stop_event: set it to stop (in-flight requests finish or time out first).
        :param poll_s: sleep between passes of an endpoint when nothing was due.
        """
        async def loop(ep: Endpoint) -> None:
            while not stop_event.is_set() and ep.name not in self.disabled:
                try:
                    n = await self._run_endpoint(ep, self.clock())
                except asyncio.CancelledError:
                    raise
                except Exception:  # Redis hiccup etc.: log and keep going
                    log.exception("delivery pass for endpoint %s failed", ep.name)
                    n = 0
                if n == 0:
                    try:
                        await asyncio.wait_for(stop_event.wait(), poll_s)
                    except TimeoutError:
                        pass

        await asyncio.gather(*(loop(e) for e in self.endpoints.values()))

    async def _run_endpoint(self, ep: Endpoint, now: float) -> int:
        """Attempt the due jobs of ``ep``, at most ``concurrency`` at once.

        A job is claimed (leased) only once a concurrency slot is free: the slot first, then the
        lease, so a job never waits out its lease in a queue of ours while another worker could
        take it and POST it a second time.
        """
        sem = self._sems[ep.name]
        running: list[asyncio.Task] = []

        async def one(wid: str) -> None:
            try:
                await self._handle(ep, wid, now)
            finally:
                sem.release()

        try:
            while len(running) < self.batch and ep.name not in self.disabled:
                await sem.acquire()
                if ep.name in self.disabled:  # disabled (410) while this pass waited for the slot
                    sem.release()
                    break
                try:
                    ids = await self.queue.claim(ep.name, now, max(now, self.clock()) + self.lease_s(ep), 1)
                except BaseException:
                    sem.release()
                    raise
                if not ids:
                    sem.release()
                    break
                running.append(asyncio.ensure_future(one(ids[0])))
        finally:
            if running:
                await asyncio.gather(*running)
        return len(running)

    async def _handle(self, ep: Endpoint, wid: str, now: float) -> None:
        job = await self.queue.job(ep.name, wid)
        if job is None:
            await self.queue.drop(ep.name, wid)
            return
        state = job.get("state")
        if state in ("delivered", "dead"):
            await self.queue.drop(ep.name, wid)
            return
        if state == "dead_letter":
            await self._dead_letter(ep, wid, job, job.get("dead_reason", "max_attempts"), now)
            return
        blocker = await self._earlier_pending(ep, wid)
        if blocker is not None:
            # an incident's records go out in order: wait (no attempt spent) until the earlier record
            # of this endpoint is delivered or dead-lettered, even when another worker holds it
            await self.queue.record(ep.name, wid, None, state="pending", due=now + ORDER_WAIT_S)
            log.debug("endpoint %s: %s waits for %s", ep.name, wid, blocker)
            return
        attempt = job["attempts"] + 1
        res = await self._post(ep, wid, job["body"])
        metrics().webhook_attempts.labels(endpoint=ep.name, outcome=res.outcome).inc()
        entry = {
            "attempt": attempt, "at": format_time(self.clock()), "outcome": res.outcome, "status": res.status,
            "error": res.error, "duration_ms": res.duration_ms, "retry_after_s": res.retry_after_s,
            "response": res.response,
        }
        if res.outcome == "delivered":
            await self.queue.record(ep.name, wid, entry, state="delivered", attempts=attempt)
            log.info("delivered %s to endpoint %s (attempt %d)", wid, ep.name, attempt)
            return
        if res.outcome == "gone":
            self.disabled.add(ep.name)
            log.error("endpoint %s (%s) answered 410 Gone: endpoint DISABLED until restart; "
                      "alert %s goes to the dead-letter topic; fix or remove the endpoint in the rules file",
                      ep.name, redact_url(ep.url), wid)
            await self._finish_dead(ep, wid, job, entry, attempt, "gone", now)
            return
        if res.outcome == "rejected":
            log.error("endpoint %s rejected %s with HTTP %s (not retried)", ep.name, wid, res.status)
            await self._finish_dead(ep, wid, job, entry, attempt, "rejected", now)
            return
        if attempt >= self.policy.max_attempts:
            log.error("endpoint %s: %s failed %d attempts (last: %s %s); dead-lettering",
                      ep.name, wid, attempt, res.outcome, res.status or res.error)
            await self._finish_dead(ep, wid, job, entry, attempt, "max_attempts", now)
            return
        if res.retry_after_s is not None:
            delay = min(res.retry_after_s, self.policy.max_retry_after_s)
        else:
            delay = self.policy.delay(attempt, self.rng)
        entry["retry_in_s"] = round(delay, 3)
        await self.queue.record(ep.name, wid, entry, state="pending", attempts=attempt, due=now + delay)
        log.warning("endpoint %s: attempt %d of %s failed (%s %s); retry in %.1fs",
                    ep.name, attempt, wid, res.outcome, res.status or res.error, delay)

    async def _earlier_pending(self, ep: Endpoint, wid: str) -> str | None:
        """The webhook-id of an earlier record of the same incident still to be delivered to ``ep``."""
        try:
            earlier = earlier_event_ids(wid)
        except ValueError:  # not an alert record's id
            return None
        for e in earlier:
            job = await self.queue.job(ep.name, e)
            if job is not None and job.get("state") not in ("delivered", "dead"):
                return e
        return None

    async def _finish_dead(self, ep: Endpoint, wid: str, job: dict[str, Any], entry: dict[str, Any], attempt: int,
                           reason: str, now: float) -> None:
        # first persist "attempts exhausted" (so a crash before the hand-off retries the hand-off,
        # never the HTTP request), then hand off
        await self.queue.record(ep.name, wid, entry, state="dead_letter", attempts=attempt,
                                due=now + self.lease_s(ep), extra={"dead_reason": reason})
        await self._dead_letter(ep, wid, job, reason, now)

    async def _dead_letter(self, ep: Endpoint, wid: str, job: dict[str, Any], reason: str, now: float) -> None:
        record = {
            "endpoint": ep.name, "webhook_id": wid, "alert_id": job.get("alert_id"), "reason": reason,
            "attempts": await self.queue.attempts(ep.name, wid), "alert": json.loads(job["alert"]),
            "dead_at": format_time(self.clock()),
        }
        try:
            await self.on_dead(record)
        except Exception:
            delay = max(self.policy.base_delay_s, 1.0)
            log.exception("dead-letter hand-off of %s (endpoint %s) failed; retrying in %.0fs", wid, ep.name, delay)
            await self.queue.record(ep.name, wid, None, state="dead_letter", due=now + delay)
            return
        await self.queue.record(ep.name, wid, None, state="dead")

    async def _post(self, ep: Endpoint, wid: str, body: str) -> AttemptResult:
        data = body.encode("utf-8")
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        if ep.secret:
            headers.update(sign_headers(wid, data, ep.secret.get_secret_value(), timestamp=int(self.clock())))
        else:
            headers.update({"webhook-id": wid, "webhook-timestamp": str(int(self.clock()))})
        return await post_webhook(self.session, ep.url, data, headers, ep.timeout_s)


async def post_webhook(session: aiohttp.ClientSession, url: str, data: bytes, headers: Mapping[str, str],
                       timeout_s: float) -> AttemptResult:
    """POST one webhook and classify the outcome (never raises for network problems).

    :param session: an ``aiohttp.ClientSession``.
    :param url: the endpoint URL (never included in errors).
    :param data: the body bytes.
    :param headers: request headers (signed).
    :param timeout_s: total timeout.
    :returns: an :class:`AttemptResult`: ``delivered`` (2xx), ``http_error`` (429, 5xx: retried),
        ``rejected`` (other status: not retried), ``gone`` (410), ``timeout``, ``connection_error``.
    """
    t0 = time.monotonic()
    status = None
    retry_after = None
    excerpt = None
    try:
        async with session.post(url, data=data, headers=dict(headers), allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            status = resp.status
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            # the status line only: a receiver's body may hold anything (we saw credentials), and it
            # would travel on to the logs, Redis and the alerts.dlq topic
            excerpt = f"{resp.status} {resp.reason or ''}".strip()
    except TimeoutError:
        return AttemptResult("timeout", None, f"no response within {timeout_s:g}s", _ms(t0), None, None)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        msg = f"{type(exc).__name__}: {exc}".replace(url, redact_url(url))[:300]
        return AttemptResult("connection_error", None, msg, _ms(t0), None, None)
    if 200 <= status < 300:
        return AttemptResult("delivered", status, None, _ms(t0), None, excerpt)
    if status == 410:
        return AttemptResult("gone", status, "410 Gone", _ms(t0), None, excerpt)
    if status == 429 or 500 <= status < 600:
        return AttemptResult("http_error", status, f"HTTP {status}", _ms(t0), retry_after, excerpt)
    return AttemptResult("rejected", status, f"HTTP {status}", _ms(t0), None, excerpt)


def _ms(t0: float) -> int:
    """Milliseconds elapsed since ``t0``.

    :param t0: a ``time.monotonic()`` reading.
    """
    return int((time.monotonic() - t0) * 1000)


def sample_alert(now: float | None = None) -> dict[str, Any]:
    """A synthetic, clearly-marked alert record for test webhooks.

    :param now: creation time (default now).
    """
    now = time.time() if now is None else now
    aid = f"{C.ALERT_ID_PREFIX}test{uuid.uuid4().hex[:28]}"
    end = int(now // 60 * 60)
    return Alert(
        alert_id=aid, event_id=make_event_id(aid, "fired", "info"), sequence=1, status="fired", test=True,
        rule="test-webhook", scope="all", scope_type="all", severity="info", namespace="test",
        window_start=format_time(end - 900), window_end=format_time(end),
        baseline_start=format_time(end - 900 - 86400), baseline_end=format_time(end - 900),
        count=0, negative_count=0, positive_count=0, neutral_count=0, negative_rate=0.0,
        mean_score=None, baseline_count=0, baseline_negative_count=0, baseline_rate=0.0,
        threshold=0.5, spike_test="wilson", statistic=0.0, statistic_threshold=0.0,
        z_score=0.0, wilson_lower=0.0, fired_window_end=format_time(end),
        top_headlines=[], model_version="", created_at=format_time(now),
    ).to_wire()


async def send_test_webhook(url: str, secret: str | SecretStr | None, timeout: float = 10.0, *, fmt: str = "json",
                            session: aiohttp.ClientSession | None = None, internal: bool = False) -> dict[str, Any]:
    """Send one signed synthetic alert (``"test": true``) to a URL; for ``finpulse alerts test-webhook``.

    :param url: receiver URL.
    :param secret: signing secret (``whsec_...`` or plain, ``str`` or ``SecretStr``); ``None`` sends it unsigned.
    :param timeout: total request timeout in seconds.
    :param fmt: ``json`` or ``slack``.
    :param session: optional ``aiohttp.ClientSession`` (a guarded one is created otherwise).
    :param internal: allow a private, loopback or link-local receiver (as ``internal = true`` does for
        an endpoint).
    :returns: ``{"ok", "outcome", "status", "error", "duration_ms", "webhook_id", "response"}``.
    :raises ConfigError: for a private address literal without ``internal``.
    """
    host = urlsplit(url).hostname or ""
    refused = check_endpoint_host(host, internal=internal)
    if refused:
        raise ConfigError("test-webhook", f"url refused: {refused}; pass --internal if it is meant to be reached")
    alert = sample_alert()
    wid = alert["event_id"]
    data = render_body(alert, fmt).encode("utf-8")
    headers = {"content-type": "application/json", "user-agent": USER_AGENT}
    if secret:
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        headers.update(sign_headers(wid, data, raw))
    else:
        headers.update({"webhook-id": wid, "webhook-timestamp": str(int(time.time()))})
    own = session is None
    sess = session or guarded_session([host] if internal else [])
    try:
        res = await post_webhook(sess, url, data, headers, timeout)
    finally:
        if own:
            await sess.close()
    return {"ok": res.outcome == "delivered", "outcome": res.outcome, "status": res.status, "error": res.error,
            "duration_ms": res.duration_ms, "webhook_id": wid, "response": res.response}
