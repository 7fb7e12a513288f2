"""Webhook delivery of alert records: endpoints, a Redis-backed retry queue and the delivering loop.

Guarantees (see ``docs/alerts.md``): every (endpoint, ``webhook-id``) is enqueued at most once
(idempotent), delivered at least once or handed to the dead-letter callback with every attempt's
outcome; the queue lives in Redis, so a restarted worker carries on where the last one stopped.
Each endpoint is served by its own task, so a slow endpoint cannot stall the others.
"""

from __future__ import annotations

import asyncio
import email.utils
import fnmatch
import json
import logging
import random
import re
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import aiohttp

from . import constants as C
from .exceptions import ConfigError
from .rules import check_table, make_event_id, parse_duration, severity_rank
from .signing import secret_key, sign_headers
from .windows import format_time, normalize_scope

log = logging.getLogger("finpulse.alerts.delivery")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
FORMATS = ("json", "slack")
USER_AGENT = "finpulse-alerts/0.1"
RESPONSE_EXCERPT_BYTES = 512

DeadCallback = Callable[[dict], Awaitable[Any]]


# --- policy and endpoints ------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """Retry schedule of webhook delivery.

    The delay before attempt ``k + 1`` is ``min(max_delay_s, base_delay_s * factor ** (k - 1))``
    times a random factor in ``[1 - jitter, 1 + jitter]``; a ``Retry-After`` header replaces it
    (capped at ``max_retry_after_s``). Defaults: 8 attempts spread over about an hour
    (30 s, 1, 2, 4, 8, 16, 30 min).

    :param max_attempts: attempts before the alert goes to the dead-letter callback.
    :param base_delay_s: delay after the first failed attempt.
    :param factor: growth factor of the delay.
    :param max_delay_s: cap of one computed delay.
    :param jitter: relative jitter in [0, 1).
    :param max_retry_after_s: cap of an honoured ``Retry-After``.
    :param lease_margin_s: a claimed job is re-offered after the endpoint timeout plus this (a
        worker that died mid-request does not lose it).
    :param keep_s: how long a finished job is remembered (de-duplication horizon of ``enqueue``).
    """

    max_attempts: int = 8
    base_delay_s: float = 30.0
    factor: float = 2.0
    max_delay_s: float = 1800.0
    jitter: float = 0.2
    max_retry_after_s: float = 3600.0
    lease_margin_s: float = 30.0
    keep_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("delivery.max_attempts", "must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.factor < 1:
            raise ConfigError("delivery", "delays must be >= 0 and factor >= 1")
        if not 0 <= self.jitter < 1:
            raise ConfigError("delivery.jitter", "must be in [0, 1)")
        if self.keep_s <= 0 or self.lease_margin_s < 0 or self.max_retry_after_s < 0:
            raise ConfigError("delivery", "keep must be > 0, lease_margin and max_retry_after >= 0")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after failed attempt number ``attempt`` (1-based).

        :param attempt: the attempt that just failed.
        :param rng: random source for the jitter (default: module ``random``).
        """
        d = min(self.max_delay_s, self.base_delay_s * self.factor ** max(0, attempt - 1))
        r = (rng or random).uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else 1.0
        return d * r

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "delivery") -> "RetryPolicy":
        """Build from the ``[delivery]`` TOML table.

        :param d: keys ``max_attempts``, ``base_delay``, ``factor``, ``max_delay``, ``jitter``,
            ``max_retry_after``, ``lease_margin``, ``keep`` (durations as seconds or ``"30s"``).
        :param where: location used in error messages.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(where, "must be a table")
        durations = {"base_delay": "base_delay_s", "max_delay": "max_delay_s",
                     "max_retry_after": "max_retry_after_s", "lease_margin": "lease_margin_s", "keep": "keep_s"}
        numbers = {"max_attempts", "factor", "jitter"}
        unknown = set(d) - set(durations) - numbers
        if unknown:
            raise ConfigError(where, f"unknown key(s) {sorted(unknown)}")
        kw: dict[str, Any] = {}
        for k, attr in durations.items():
            if k in d:
                kw[attr] = parse_duration(d[k], f"{where}.{k}")
        for k in numbers:
            if k in d:
                v = d[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"{where}.{k}", "must be a number")
                kw[k] = int(v) if k == "max_attempts" else float(v)
        try:
            return cls(**kw)
        except ConfigError as exc:
            raise ConfigError(where, exc.detail) from None


def redact_url(url: str) -> str:
    """A URL safe to log: scheme, host and port only (Slack webhook paths are secrets).

    :param url: the endpoint URL.
    """
    try:
        p = urlsplit(url)
        host = p.hostname or "?"
        port = f":{p.port}" if p.port else ""
        return f"{p.scheme}://{host}{port}/…"
    except ValueError:
        return "<invalid url>"


@dataclass(frozen=True, repr=False)
class Endpoint:
    """A webhook receiver.

    :param name: unique name (``[A-Za-z0-9_.-]``), used in Redis keys and logs.
    :param url: ``http(s)://`` URL; never logged in full.
    :param secret: signing secret (``whsec_<base64>`` or a plain string); ``None`` only for ``slack``.
    :param format: ``json`` (the alert record) or ``slack`` (incoming-webhook blocks).
    :param scopes: scope patterns it wants (``fnmatch``: ``ticker:*``, ``all``); empty = every scope.
    :param min_severity: lowest severity it wants.
    :param timeout_s: total timeout of one request.
    """

    name: str
    url: str
    secret: str | None = None
    format: str = "json"
    scopes: tuple[str, ...] = ()
    min_severity: str = C.SEVERITIES[0]
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        where = f"endpoint {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(where, "name must be 1-64 chars of letters, digits, '_', '.', '-'")
        try:
            parts = urlsplit(self.url) if isinstance(self.url, str) else None
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(where, "url must be an http:// or https:// URL")
        if self.format not in FORMATS:
            raise ConfigError(where, f"format must be one of {FORMATS}")
        if self.secret is None and self.format == "json":
            raise ConfigError(where, "a json endpoint needs a secret (secret, secret_env or the secrets file)")
        if self.secret is not None:
            try:
                secret_key(self.secret)
            except ValueError as exc:
                raise ConfigError(where, f"invalid secret ({exc})") from None
        if self.min_severity not in C.SEVERITIES:
            raise ConfigError(where, f"min_severity must be one of {C.SEVERITIES}")
        if not self.timeout_s > 0:
            raise ConfigError(where, "timeout must be > 0")

    def __repr__(self) -> str:
        return (f"Endpoint(name={self.name!r}, url={redact_url(self.url)!r}, secret="
                f"{'***' if self.secret else None}, format={self.format!r}, scopes={self.scopes!r}, "
                f"min_severity={self.min_severity!r}, timeout_s={self.timeout_s!r})")

    __str__ = __repr__

    def accepts(self, alert: Mapping[str, Any]) -> bool:
        """Whether this endpoint wants ``alert`` (scope patterns and minimum severity).

        :param alert: an alert record.
        """
        try:
            if severity_rank(alert.get("severity", "")) < severity_rank(self.min_severity):
                return False
        except ValueError:
            return False
        if not self.scopes:
            return True
        scope = alert.get("scope", "")
        return any(fnmatch.fnmatchcase(scope, pat) for pat in self.scopes)


_ENDPOINT_KEYS = {"name", "url", "secret", "secret_env", "format", "scopes", "min_severity", "timeout"}


def parse_endpoints(items: Any, *, secrets: Mapping[str, str] | None = None,
                    environ: Mapping[str, str] | None = None, where: str = "<rules>") -> list[Endpoint]:
    """Build endpoints from the ``[[endpoints]]`` tables.

    The secret is ``secret``, else the env var named by ``secret_env``, else ``secrets[name]``.

    :param items: the list of tables.
    :param secrets: secrets by endpoint name (from the secrets file).
    :param environ: environment for ``secret_env``.
    :param where: file name used in error messages.
    :raises ConfigError: invalid tables (messages never contain a secret).
    """
    if not isinstance(items, list):
        raise ConfigError(f"{where}: endpoints", "must be an array of tables ([[endpoints]])")
    secrets = secrets or {}
    environ = environ or {}
    out: list[Endpoint] = []
    for i, d in enumerate(items):
        w = f"{where}: endpoints[{i}]"
        check_table(d, w, allowed=_ENDPOINT_KEYS, required=("name", "url"))
        name = d["name"]
        secret = d.get("secret")
        if secret is None and d.get("secret_env"):
            secret = environ.get(d["secret_env"])
            if not secret:
                raise ConfigError(w, f"environment variable {d['secret_env']} (secret_env) is not set")
        if secret is None and isinstance(name, str):
            secret = secrets.get(name)
        if secret is not None and not isinstance(secret, str):
            raise ConfigError(w, "secret must be a string")
        scopes = d.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ConfigError(w, "scopes must be a list of strings")
        pats = []
        for s in scopes:
            if any(ch in s for ch in "*?["):
                pats.append(s.strip())
            else:
                try:
                    pats.append(normalize_scope(s))
                except ValueError as exc:
                    raise ConfigError(f"{w}.scopes", str(exc)) from None
        kw: dict[str, Any] = {"name": name, "url": d["url"], "secret": secret, "scopes": tuple(pats)}
        if "format" in d:
            kw["format"] = d["format"]
        if "min_severity" in d:
            kw["min_severity"] = d["min_severity"]
        if "timeout" in d:
            kw["timeout_s"] = parse_duration(d["timeout"], f"{w}.timeout")
        try:
            ep = Endpoint(**kw)
        except ConfigError as exc:
            raise ConfigError(w, exc.detail) from None
        if ep.name in {e.name for e in out}:
            raise ConfigError(w, f"duplicate endpoint name {ep.name!r}")
        out.append(ep)
    return out


def load_secrets_file(path: str | Path) -> dict[str, str]:
    """Read endpoint secrets: TOML (``name = "secret"``) or ``name=secret`` lines (``#`` comments).

    :param path: the file (``Settings.webhook_secrets_file``).
    :returns: endpoint name -> secret.
    :raises ConfigError: when missing or malformed (without echoing the content).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read secrets file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
        if all(isinstance(v, str) for v in data.values()):
            return dict(data)
    except tomllib.TOMLDecodeError:
        pass
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{p}:{n}", "expected NAME=secret")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


# --- bodies --------------------------------------------------------------------------------------

def _slack_escape(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Mapping[str, Any]) -> dict:
    """Slack incoming-webhook message (``text`` fallback plus Block Kit ``blocks``) for an alert.

    :param alert: an alert record.
    """
    status = alert.get("status", "?")
    sev = alert.get("severity", "?")
    rate = float(alert.get("negative_rate") or 0.0)
    base = float(alert.get("baseline_rate") or 0.0)
    icon = ":white_check_mark:" if status == "resolved" else (":rotating_light:" if sev == "critical" else ":warning:")
    head = f"{'RESOLVED' if status == 'resolved' else sev.upper()}: negative news {alert.get('scope', '?')}"
    text = (f"{icon} {head} - {rate:.0%} negative ({alert.get('negative_count', 0)}/{alert.get('count', 0)}) "
            f"vs baseline {base:.0%}, rule {alert.get('rule', '?')}")
    lines = []
    for h in alert.get("top_headlines") or []:
        title = _slack_escape(h.get("title") or "(untitled)")[:200]
        url = h.get("url")
        link = f"<{url.replace('|', '%7C').replace('>', '%3E')}|{title}>" if isinstance(url, str) and url.startswith(("http://", "https://")) else title
        src = f" - {_slack_escape(h['source'])}" if h.get("source") else ""
        lines.append(f"• {link}{src} ({float(h.get('sentiment_score', 0)):+.2f})")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Negative rate*\n{rate:.0%} ({alert.get('negative_count', 0)}/{alert.get('count', 0)})"},
            {"type": "mrkdwn", "text": f"*Baseline*\n{base:.0%}"},
            {"type": "mrkdwn", "text": f"*Window*\n{alert.get('window_start', '?')} – {alert.get('window_end', '?')}"},
            {"type": "mrkdwn", "text": f"*Rule*\n{_slack_escape(alert.get('rule', '?'))}"},
        ]},
    ]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"alert {alert.get('alert_id', '?')} · {status}"}]})
    return {"text": _slack_escape(text), "blocks": blocks}


def render_body(alert: Mapping[str, Any], fmt: str) -> str:
    """The request body of an alert for an endpoint format.

    :param alert: an alert record.
    :param fmt: ``json`` (compact JSON of the record, UTF-8) or ``slack``.
    """
    payload = slack_payload(alert) if fmt == "slack" else alert
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=(fmt == "json"))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    :param value: the header value, or ``None``.
    :param now: current unix time for HTTP dates (default ``time.time()``).
    :returns: seconds (>= 0), or ``None`` when absent or unparsable.
    """
    if value is None:
        return None
    v = value.strip()
    if v.isdigit():
        return float(int(v))
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    if dt.tzinfo is None:
        return None
    return max(0.0, dt.timestamp() - (time.time() if now is None else now))


def webhook_id_of(alert: Mapping[str, Any]) -> str:
    """The ``webhook-id`` of an alert record: its ``event_id`` (unique per alert, status, severity).

    :param alert: an alert record.
    """
    eid = alert.get("event_id")
    if isinstance(eid, str) and eid:
        return eid
    return make_event_id(alert["alert_id"], alert["status"], alert.get("severity", ""))


# --- the queue -----------------------------------------------------------------------------------

_ENQUEUE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

_CLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
end
return ids
"""


def _s(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, (bytes, bytearray)) else str(x)


class DeliveryQueue:
    """Durable per-endpoint delivery state in Redis (keys in hash tag ``{dlv}``, see constants).

    :param redis: a ``redis.asyncio.Redis``.
    :param namespace: run namespace.
    :param keep_s: how long finished jobs (delivered / dead) are remembered, so enqueueing the same
        alert again (a redelivered Kafka record) does not send it twice.
    """

    def __init__(self, redis: Any, namespace: str, *, keep_s: float = RetryPolicy.keep_s):
        self.redis = redis
        self.namespace = namespace
        C.prefix(namespace)
        self.keep_s = int(keep_s)
        self._enqueue = redis.register_script(_ENQUEUE_LUA)
        self._claim = redis.register_script(_CLAIM_LUA)

    async def enqueue(self, alert: Mapping[str, Any], endpoints: Iterable[Endpoint], *,
                      now: float | None = None) -> list[str]:
        """Queue an alert for every endpoint whose filters accept it (idempotent).

        :param alert: an alert record (``event_id`` is the ``webhook-id``).
        :param endpoints: configured endpoints.
        :param now: due time of the first attempt (default: now).
        :returns: names of the endpoints it was newly queued for (already-known jobs are skipped).
        """
        now = time.time() if now is None else now
        wid = webhook_id_of(alert)
        alert_json = json.dumps(alert, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        out = []
        for ep in endpoints:
            if not ep.accepts(alert):
                continue
            fields = {"alert": alert_json, "body": render_body(alert, ep.format), "format": ep.format,
                      "state": "pending", "attempts": 0, "created": now,
                      "alert_id": str(alert.get("alert_id", ""))}
            argv: list[Any] = [wid, now]
            for k, v in fields.items():
                argv += [k, v]
            added = await self._enqueue(keys=[C.job_key(self.namespace, ep.name, wid),
                                              C.due_key(self.namespace, ep.name)], args=argv)
            if int(added):
                out.append(ep.name)
        return out

    async def claim(self, endpoint: str, now: float, lease_until: float, limit: int = 100) -> list[str]:
        """Atomically take due jobs of an endpoint, pushing their due time to ``lease_until``.

        :param endpoint: endpoint name.
        :param now: jobs due at or before this are taken.
        :param lease_until: new due time of the taken jobs (re-offered then if not finished).
        :param limit: most jobs to take.
        :returns: their webhook-ids, oldest due first.
        """
        ids = await self._claim(keys=[C.due_key(self.namespace, endpoint)], args=[now, lease_until, limit])
        return [_s(i) for i in ids]

    async def job(self, endpoint: str, webhook_id: str) -> dict | None:
        """A job's fields (``alert``, ``body``, ``format``, ``state``, ``attempts``, ...), or ``None``.

        :param endpoint: endpoint name.
        :param webhook_id: the webhook-id.
        """
        raw = await self.redis.hgetall(C.job_key(self.namespace, endpoint, webhook_id))
        if not raw:
            return None
        d = {_s(k): _s(v) for k, v in raw.items()}
        d["attempts"] = int(d.get("attempts", 0))
        return d

    async def attempts(self, endpoint: str, webhook_id: str) -> list[dict]:
        """The attempt log of a job, oldest first.

        :param endpoint: endpoint name.
        :param webhook_id: the webhook-id.
        """
        rows = await self.redis.lrange(C.log_key(self.namespace, endpoint, webhook_id), 0, -1)
        return [json.loads(_s(r)) for r in rows]

    async def due_count(self, endpoint: str) -> int:
        """Jobs of an endpoint not finished yet (due or leased).

        :param endpoint: endpoint name.
        """
        return int(await self.redis.zcard(C.due_key(self.namespace, endpoint)))

    async def next_due(self, endpoint: str) -> float | None:
        """Due time of the endpoint's next job, ``None`` when nothing is queued.

        :param endpoint: endpoint name.
        """
        rows = await self.redis.zrange(C.due_key(self.namespace, endpoint), 0, 0, withscores=True)
        return float(rows[0][1]) if rows else None

    async def record(self, endpoint: str, webhook_id: str, entry: dict | None, *, state: str,
                     attempts: int | None = None, due: float | None = None,
                     extra: Mapping[str, Any] | None = None) -> None:
        """Atomically log an attempt and move the job to its next state.

        :param endpoint: endpoint name.
        :param webhook_id: the webhook-id.
        :param entry: attempt outcome to append to the log (``None``: none).
        :param state: ``pending`` (retry at ``due``), ``dead_letter`` (hand-off pending, retried at
            ``due``), ``delivered`` or ``dead`` (both final: removed from the due set, kept ``keep_s``).
        :param attempts: new attempt count.
        :param due: next due time for ``pending`` / ``dead_letter``.
        :param extra: further job fields to set (e.g. ``dead_reason``).
        """
        jk = C.job_key(self.namespace, endpoint, webhook_id)
        lk = C.log_key(self.namespace, endpoint, webhook_id)
        dk = C.due_key(self.namespace, endpoint)
        pipe = self.redis.pipeline(transaction=True)
        mapping: dict[str, Any] = {"state": state, "updated": time.time()}
        if attempts is not None:
            mapping["attempts"] = attempts
        mapping.update(extra or {})
        pipe.hset(jk, mapping=mapping)
        if entry is not None:
            pipe.rpush(lk, json.dumps(entry, separators=(",", ":"), ensure_ascii=False))
        if state in ("delivered", "dead"):
            pipe.zrem(dk, webhook_id)
            pipe.expire(jk, self.keep_s)
            pipe.expire(lk, self.keep_s)
        else:
            pipe.zadd(dk, {webhook_id: due if due is not None else time.time()})
        await pipe.execute()

    async def drop(self, endpoint: str, webhook_id: str) -> None:
        """Remove a job id from the due set (its job hash vanished).

        :param endpoint: endpoint name.
        :param webhook_id: the webhook-id.
        """
        await self.redis.zrem(C.due_key(self.namespace, endpoint), webhook_id)


# --- the deliverer -------------------------------------------------------------------------------

@dataclass
class AttemptResult:
    """Outcome of one HTTP attempt.

    :param outcome: ``delivered`` (2xx), ``http_error`` (429/5xx, retried), ``timeout``,
        ``connection_error`` (retried), ``rejected`` (other status, not retried), ``gone`` (410).
    :param status: HTTP status, ``None`` without a response.
    :param error: short error text (never the URL path or a secret).
    :param duration_ms: request duration.
    :param retry_after_s: parsed ``Retry-After``, if any.
    :param response: first bytes of the response body (decoded).
    """

    outcome: str
    status: int | None
    error: str | None
    duration_ms: int
    retry_after_s: float | None
    response: str | None


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
                    except asyncio.TimeoutError:
                        pass

        await asyncio.gather(*(loop(e) for e in self.endpoints.values()))

    async def _run_endpoint(self, ep: Endpoint, now: float) -> int:
        if ep.name in self.disabled:
            return 0
        ids = await self.queue.claim(ep.name, now, now + self.lease_s(ep), self.batch)
        if not ids:
            return 0
        sem = self._sems[ep.name]

        async def one(wid: str) -> None:
            async with sem:
                if ep.name in self.disabled:
                    # leave it leased; it is offered again after a restart (lease expiry)
                    return
                await self._handle(ep, wid, now)

        await asyncio.gather(*(one(w) for w in ids))
        return len(ids)

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
        attempt = job["attempts"] + 1
        res = await self._post(ep, wid, job["body"])
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

    async def _finish_dead(self, ep: Endpoint, wid: str, job: dict, entry: dict, attempt: int,
                           reason: str, now: float) -> None:
        # first persist "attempts exhausted" (so a crash before the hand-off retries the hand-off,
        # never the HTTP request), then hand off
        await self.queue.record(ep.name, wid, entry, state="dead_letter", attempts=attempt,
                                due=now + self.lease_s(ep), extra={"dead_reason": reason})
        await self._dead_letter(ep, wid, job, reason, now)

    async def _dead_letter(self, ep: Endpoint, wid: str, job: dict, reason: str, now: float) -> None:
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
            headers.update(sign_headers(wid, data, ep.secret, timestamp=int(self.clock())))
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
            raw = await resp.content.read(RESPONSE_EXCERPT_BYTES)
            excerpt = raw.decode("utf-8", "replace") or None
    except asyncio.TimeoutError:
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
    return int((time.monotonic() - t0) * 1000)


def sample_alert(now: float | None = None) -> dict:
    """A synthetic, clearly-marked alert record for test webhooks.

    :param now: creation time (default now).
    """
    now = time.time() if now is None else now
    aid = f"{C.ALERT_ID_PREFIX}test{uuid.uuid4().hex[:28]}"
    end = int(now // 60 * 60)
    return {
        "alert_id": aid, "event_id": make_event_id(aid, "fired", "info"), "status": "fired", "test": True,
        "rule": "test-webhook", "scope": "all", "scope_type": "all", "severity": "info", "namespace": "test",
        "window_start": format_time(end - 900), "window_end": format_time(end),
        "baseline_start": format_time(end - 900 - 86400), "baseline_end": format_time(end - 900),
        "count": 0, "negative_count": 0, "positive_count": 0, "neutral_count": 0, "negative_rate": 0.0,
        "mean_score": None, "baseline_count": 0, "baseline_negative_count": 0, "baseline_rate": 0.0,
        "threshold": 0.5, "spike_test": "wilson", "statistic": 0.0, "statistic_threshold": 0.0,
        "z_score": 0.0, "wilson_lower": 0.0, "fired_window_end": format_time(end),
        "top_headlines": [], "model_version": "", "created_at": format_time(now),
    }


async def send_test_webhook(url: str, secret: str | None, timeout: float = 10.0, *, fmt: str = "json",
                            session: aiohttp.ClientSession | None = None) -> dict:
    """Send one signed synthetic alert (``"test": true``) to a URL; for ``finpulse alerts test-webhook``.

    :param url: receiver URL.
    :param secret: signing secret (``whsec_...`` or plain); ``None`` sends it unsigned.
    :param timeout: total request timeout in seconds.
    :param fmt: ``json`` or ``slack``.
    :param session: optional ``aiohttp.ClientSession`` (one is created otherwise).
    :returns: ``{"ok", "outcome", "status", "error", "duration_ms", "webhook_id", "response"}``.
    """
    alert = sample_alert()
    wid = alert["event_id"]
    data = render_body(alert, fmt).encode("utf-8")
    headers = {"content-type": "application/json", "user-agent": USER_AGENT}
    if secret:
        headers.update(sign_headers(wid, data, secret))
    else:
        headers.update({"webhook-id": wid, "webhook-timestamp": str(int(time.time()))})
    own = session is None
    sess = session or aiohttp.ClientSession()
    try:
        res = await post_webhook(sess, url, data, headers, timeout)
    finally:
        if own:
            await sess.close()
    return {"ok": res.outcome == "delivered", "outcome": res.outcome, "status": res.status, "error": res.error,
            "duration_ms": res.duration_ms, "webhook_id": wid, "response": res.response}
