"""Configuration of the alerts layer: everything that reads the rules TOML, the secrets file and the environment.

Holds :func:`parse_duration`, :func:`check_table` and :func:`parse_rule` (``[[rules]]`` tables into
:class:`~finpulse.alerts.rules.Rule`), :class:`RetryPolicy` (``[delivery]``), :class:`Endpoint` and
:func:`parse_endpoints` (``[[endpoints]]``), :func:`load_secrets_file`, :func:`redact_url`, and the one
typed :class:`AlertsConfig` returned by :func:`load_config`. Every problem is a
:class:`~finpulse.alerts.exceptions.ConfigError` naming the file and key; secrets are held as
:class:`pydantic.SecretStr` and never appear in messages, ``repr`` or ``str``.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import random
import re
import secrets as _secrets
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from finpulse.core import constants as C
from finpulse.core.settings import shipped_file

from .exceptions import ConfigError
from .netguard import check_endpoint_host
from .render import FORMATS
from .rules import Level, Rule, severity_rank
from .signing import secret_key
from .windows import normalize_scope

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOP_LEVEL_KEYS = {"rules", "endpoints", "detector", "delivery"}
_RULE_KEYS = {"name", "scope_type", "scopes", "short_window", "baseline_window", "min_count", "levels",
              "test", "z", "min_lift", "resolve_below", "resolve_hold", "cooldown", "baseline_prior_rate",
              "baseline_prior_weight", "description", "windows", "min_negative", "resolve_p", "min_history",
              "prior_negatives_per_day", "prior_days", "rate_baseline_cap", "min_ratio"}
_ENDPOINT_KEYS = {"name", "url", "secret", "secret_env", "format", "scopes", "min_severity", "timeout", "internal"}


# --- generic values ------------------------------------------------------------------------------

def parse_duration(value: Any, where: str = "duration") -> float:
    """Parse a duration: a number of seconds or a string such as ``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"``.

    :param value: the TOML value.
    :param where: name used in the error message.
    :returns: seconds (float, ``>= 0``).
    :raises ConfigError: when not a non-negative number or a well-formed string.
    """
    if isinstance(value, bool):
        raise ConfigError(where, f"expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ConfigError(where, f"duration must be >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        s = value.strip().lower().replace(" ", "")
        parts = _DURATION_RE.findall(s)
        if parts and "".join(n + u for n, u in parts) == s:
            return float(sum(float(n) * _UNITS[u] for n, u in parts))
    raise ConfigError(where, f"expected seconds or a duration like '15m', '1h30m', got {value!r}")


def check_table(d: Any, where: str, *, allowed: set[str], required: Sequence[str]) -> None:
    """Check one TOML table of the rules file: a table, no unknown keys, the required keys present.

    :param d: the parsed value.
    :param where: location used in error messages.
    :param allowed: the keys the table may have.
    :param required: the keys it must have.
    :raises ConfigError: naming the problem and the location.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(where, "must be a table")
    unknown = set(d) - allowed
    if unknown:
        raise ConfigError(where, f"unknown key(s) {sorted(unknown)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise ConfigError(where, f"{' and '.join(required)} are required (missing {', '.join(missing)})")


# --- rules ---------------------------------------------------------------------------------------

def parse_rule(d: Mapping[str, Any], where: str = "rule") -> Rule:
    """Build a :class:`~finpulse.alerts.rules.Rule` from one ``[[rules]]`` TOML table.

    :param d: the table (keys as in ``config/rules.toml``; durations as seconds or ``"15m"``).
    :param where: location used in error messages.
    :raises ConfigError: on unknown keys or invalid values.
    """
    check_table(d, where, allowed=_RULE_KEYS, required=("name", "scope_type"))
    kw: dict[str, Any] = {"name": d["name"], "scope_type": d["scope_type"]}
    st = d["scope_type"]
    raw_scopes = d.get("scopes", [])
    if not isinstance(raw_scopes, list):
        raise ConfigError(f"{where}.scopes", "must be a list")
    scopes: list[str] = []
    for sc in raw_scopes:
        try:
            s = normalize_scope(sc if (isinstance(sc, str) and ":" in sc) or sc == C.ALL_SCOPE else f"{st}:{sc}")
        except ValueError as exc:
            raise ConfigError(f"{where}.scopes", str(exc)) from None
        if s not in scopes:
            scopes.append(s)
    kw["scopes"] = tuple(scopes)
    if "windows" in d:
        if not isinstance(d["windows"], list) or not d["windows"]:
            raise ConfigError(f"{where}.windows", "must be a list of durations, e.g. [\"1h\", \"6h\", \"24h\", \"3d\"]")
        secs = [parse_duration(x, f"{where}.windows") for x in d["windows"]]
        if not all(x.is_integer() for x in secs):
            raise ConfigError(f"{where}.windows", "must be whole seconds")
        kw["windows_s"] = tuple(int(x) for x in secs)
    for key, attr in (("short_window", "short_window_s"), ("baseline_window", "baseline_window_s"),
                      ("resolve_hold", "resolve_hold_s"), ("cooldown", "cooldown_s"),
                      ("min_history", "min_history_s")):
        if key in d:
            sec = parse_duration(d[key], f"{where}.{key}")
            if not sec.is_integer():
                raise ConfigError(f"{where}.{key}", "must be whole seconds")
            kw[attr] = int(sec)
    for key in ("min_count", "min_negative", "rate_baseline_cap"):
        if key in d:
            if not isinstance(d[key], int) or isinstance(d[key], bool):
                raise ConfigError(f"{where}.{key}", "must be an integer")
            kw[key] = d[key]
    for key in ("z", "min_lift", "resolve_below", "baseline_prior_rate", "baseline_prior_weight", "resolve_p",
                "prior_negatives_per_day", "prior_days", "min_ratio"):
        if key in d:
            if isinstance(d[key], bool) or not isinstance(d[key], (int, float)):
                raise ConfigError(f"{where}.{key}", "must be a number")
            kw[key] = float(d[key])
    if "test" in d:
        kw["test"] = d["test"]
    if "levels" in d:
        lv = d["levels"]
        if not isinstance(lv, Mapping) or not lv:
            raise ConfigError(f"{where}.levels", "must be a table like { warning = 0.5, critical = 0.7 }")
        items = []
        for sev, rate in lv.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)):
                raise ConfigError(f"{where}.levels.{sev}", "must be a number")
            if sev not in C.SEVERITIES:
                raise ConfigError(f"{where}.levels", f"unknown severity {sev!r}; use {C.SEVERITIES}")
            items.append(Level(sev, float(rate)))
        kw["levels"] = tuple(sorted(items, key=lambda x: severity_rank(x.severity)))
    try:
        return Rule(**kw)
    except ConfigError as exc:
        raise ConfigError(where, exc.detail) from None


# --- delivery policy -----------------------------------------------------------------------------

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
    def from_dict(cls, d: Mapping[str, Any], where: str = "delivery") -> RetryPolicy:
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


# --- endpoints -----------------------------------------------------------------------------------

class WebhookSecret(SecretStr):
    """An endpoint signing secret: a :class:`pydantic.SecretStr` (``**********`` in ``repr``/``str``).

    It also compares equal (in constant time) to the same secret given as a plain ``str``, so code
    and tests can check which secret was resolved without unwrapping it.

    :param secret_value: the secret.
    """

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, SecretStr):
            other = other.get_secret_value()
        if not isinstance(other, str):
            return NotImplemented
        return _secrets.compare_digest(self.get_secret_value().encode("utf-8", errors="surrogatepass"),
                                       other.encode("utf-8", errors="surrogatepass"))

    def __hash__(self) -> int:
        return hash(self.get_secret_value())


EXAMPLE_SECRETS_FILE = "webhook-secrets.env.example"


@functools.cache
def _example_secret_values() -> frozenset[str]:
    """The secrets published in the shipped example secrets file (empty if the package lacks it)."""
    try:
        path = shipped_file(EXAMPLE_SECRETS_FILE)
    except FileNotFoundError:
        return frozenset()
    return frozenset(v.get_secret_value() for v in load_secrets_file(path, allow_example=True).values())


def is_example_secret(secret: str | SecretStr) -> bool:
    """Whether ``secret`` is one published in the shipped example file (never a production secret).

    :param secret: a secret, plain or wrapped.
    """
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return any(_secrets.compare_digest(value.encode("utf-8", "surrogatepass"), ex.encode("utf-8", "surrogatepass"))
               for ex in _example_secret_values())


def _as_secret(value: str | SecretStr | None) -> SecretStr | None:
    """Wrap a secret (``None`` stays ``None``; an existing :class:`WebhookSecret` is kept).

    :param value: a plain string, a ``SecretStr`` or ``None``.
    """
    if value is None or isinstance(value, WebhookSecret):
        return value
    if isinstance(value, SecretStr):
        return WebhookSecret(value.get_secret_value())
    return WebhookSecret(value)


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
    :param secret: signing secret (``whsec_<base64>`` or a plain string), held as a
        :class:`pydantic.SecretStr` (a plain ``str`` given here is wrapped); ``None`` only for ``slack``.
        The signer unwraps it with ``.get_secret_value()`` at the point of signing.
    :param format: ``json`` (the alert record) or ``slack`` (incoming-webhook blocks).
    :param scopes: scope patterns it wants (``fnmatch``: ``ticker:*``, ``all``); empty = every scope.
    :param min_severity: lowest severity it wants.
    :param timeout_s: total timeout of one request.
    :param internal: the endpoint may be on a private, loopback or link-local address (a receiver in
        your own network); otherwise such targets are refused (:mod:`finpulse.alerts.netguard`).
    """

    name: str
    url: str
    secret: SecretStr | None = None
    format: str = "json"
    scopes: tuple[str, ...] = ()
    min_severity: str = C.SEVERITIES[0]
    timeout_s: float = 10.0
    internal: bool = False

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
        if not isinstance(self.internal, bool):
            raise ConfigError(where, "internal must be true or false")
        refused = check_endpoint_host(parts.hostname, internal=self.internal)
        if refused:
            raise ConfigError(where, f"url refused: {refused}; set internal = true if the receiver is meant to be "
                                     "in your own network")
        if self.format not in FORMATS:
            raise ConfigError(where, f"format must be one of {FORMATS}")
        if self.secret is not None and not isinstance(self.secret, (str, SecretStr)):
            raise ConfigError(where, "secret must be a string")
        object.__setattr__(self, "secret", _as_secret(self.secret))
        if self.secret is None and self.format == "json":
            raise ConfigError(where, "a json endpoint needs a secret (secret, secret_env or the secrets file)")
        if self.secret is not None:
            try:
                secret_key(self.secret.get_secret_value())
            except ValueError as exc:
                raise ConfigError(where, f"invalid secret ({exc})") from None
            if is_example_secret(self.secret):
                raise ConfigError(where, f"the secret is the published example from {EXAMPLE_SECRETS_FILE}; "
                                         "generate your own (python -c \"import secrets; print('whsec_' + "
                                         "secrets.token_urlsafe(32))\") and keep it out of the repository")
        if self.min_severity not in C.SEVERITIES:
            raise ConfigError(where, f"min_severity must be one of {C.SEVERITIES}")
        if not self.timeout_s > 0:
            raise ConfigError(where, "timeout must be > 0")

    def __repr__(self) -> str:
        return (f"Endpoint(name={self.name!r}, url={redact_url(self.url)!r}, secret="
                f"{'***' if self.secret else None}, format={self.format!r}, scopes={self.scopes!r}, "
                f"min_severity={self.min_severity!r}, timeout_s={self.timeout_s!r}, internal={self.internal!r})")

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


def parse_endpoints(items: Any, *, secrets: Mapping[str, str | SecretStr] | None = None,
                    environ: Mapping[str, str] | None = None, where: str = "<rules>") -> list[Endpoint]:
    """Build endpoints from the ``[[endpoints]]`` tables.

    The secret is ``secret``, else the env var named by ``secret_env``, else ``secrets[name]``.

    :param items: the list of tables.
    :param secrets: secrets by endpoint name (from :func:`load_secrets_file`).
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
        if secret is not None and not isinstance(secret, (str, SecretStr)):
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
        if "internal" in d:
            kw["internal"] = d["internal"]
        try:
            ep = Endpoint(**kw)
        except ConfigError as exc:
            raise ConfigError(w, exc.detail) from None
        if ep.name in {e.name for e in out}:
            raise ConfigError(w, f"duplicate endpoint name {ep.name!r}")
        out.append(ep)
    return out


def load_secrets_file(path: str | os.PathLike[str], *, allow_example: bool = False) -> dict[str, SecretStr]:
    """Read endpoint secrets: TOML (``name = "secret"``) or ``name=secret`` lines (``#`` comments).

    :param path: the file (``Settings.webhook_secrets_file``).
    :param allow_example: accept the published example secrets (only to read the example itself).
    :returns: endpoint name -> secret (a :class:`WebhookSecret`, equal to the plain string).
    :raises ConfigError: when missing or malformed (without echoing the content), or when it holds a
        published example secret (a deployment that mounted the example file as its secrets).
    """
    out = _read_secrets_file(path)
    if not allow_example:
        for name, value in out.items():
            if is_example_secret(value):
                raise ConfigError(f"{path}: {name}", f"the published example secret from {EXAMPLE_SECRETS_FILE}; "
                                                    "create your own secrets file (README: deploy with compose)")
    return out


def _read_secrets_file(path: str | os.PathLike[str]) -> dict[str, SecretStr]:
    """Parse a secrets file (see :func:`load_secrets_file`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read secrets file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
        if all(isinstance(v, str) for v in data.values()):
            return {k: WebhookSecret(v) for k, v in data.items()}
    except tomllib.TOMLDecodeError:
        pass
    out: dict[str, SecretStr] = {}
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
        out[key.strip()] = WebhookSecret(value)
    return out


# --- the rules file ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertsConfig:
    """Everything in the rules file, validated and typed.

    :param rules: detection rules.
    :param endpoints: webhook endpoints (secrets resolved, held as ``SecretStr``).
    :param close_delay_s: ``[detector] close_delay``: a bucket is evaluated once the watermark is this
        far past its end.
    :param retry: ``[delivery]`` retry policy.
    """

    rules: tuple[Rule, ...]
    endpoints: tuple[Endpoint, ...] = ()
    close_delay_s: float = 0.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def load_config(path: str | os.PathLike[str] | None = None, *, data: Mapping[str, Any] | None = None,
                secrets_file: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> AlertsConfig:
    """Load rules, endpoints, detector and delivery settings from the rules TOML.

    :param path: the TOML file (``Settings.rules_file``, default ``config/rules.toml``).
    :param data: an already-parsed TOML document instead of ``path`` (tests).
    :param secrets_file: optional file of endpoint secrets (``Settings.webhook_secrets_file``):
        TOML ``name = "secret"`` or ``NAME=secret`` lines, keyed by endpoint name.
    :param environ: environment for ``secret_env`` (default ``os.environ``).
    :raises ConfigError: on any invalid content; the message names the file and key.
    """
    where = str(path) if path is not None else "<rules>"
    if data is None:
        if path is None:
            raise ValueError("give path or data")
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(where, "file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(where, f"invalid TOML: {exc}") from None
    unknown = set(data) - _TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(where, f"unknown top-level key(s) {sorted(unknown)}")
    rules_raw = data.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError(f"{where}: rules", "must be an array of tables ([[rules]])")
    rules = tuple(parse_rule(r, f"{where}: rules[{i}]") for i, r in enumerate(rules_raw))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: rules", "rule names must be unique")
    det = data.get("detector", {})
    if not isinstance(det, Mapping) or set(det) - {"close_delay"}:
        raise ConfigError(f"{where}: detector", "only close_delay is allowed")
    close_delay = parse_duration(det.get("close_delay", 0), f"{where}: detector.close_delay")
    retry = RetryPolicy.from_dict(data.get("delivery", {}), f"{where}: delivery")
    secrets = load_secrets_file(secrets_file) if secrets_file else {}
    endpoints = parse_endpoints(data.get("endpoints", []), secrets=secrets,
                                environ=os.environ if environ is None else environ, where=where)
    return AlertsConfig(rules=rules, endpoints=tuple(endpoints), close_delay_s=close_delay, retry=retry)
