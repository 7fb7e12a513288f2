"""Detection rules: the statistics and the pure fire / stay / escalate / resolve decision.

Holds :class:`Rule` and :class:`Level` (a validated rule), the statistics (:func:`wilson_lower`,
:func:`binomial_z`, :func:`smoothed_rate`, :func:`evaluate`), the deterministic ids
(:func:`make_alert_id`, :func:`make_event_id`), :func:`severity_rank`, and :func:`decide`, which takes
the window counts and the prior :class:`RuleState` of one (rule, scope) and returns a
:class:`Decision`, so every case is testable on synthetic numbers. No I/O: reading the rules TOML is
:mod:`finpulse.alerts.config`. See ``docs/alerts.md`` for the semantics.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from finpulse.core import constants as C

from .exceptions import ConfigError
from .windows import WindowStats, normalize_scope

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
TESTS = ("wilson", "zscore")
DEFAULT_Z = {"wilson": 2.326, "zscore": 3.0}


def severity_rank(name: str) -> int:
    """Rank of a severity name (``info`` < ``warning`` < ``critical``).

    :param name: a name from :data:`finpulse.core.constants.SEVERITIES`.
    :raises ValueError: for an unknown name.
    """
    try:
        rank: int = C.SEVERITIES.index(name)
    except ValueError:
        raise ValueError(f"unknown severity {name!r}; use one of {C.SEVERITIES}") from None
    return rank


@dataclass(frozen=True)
class Level:
    """A severity level of a rule: fire at ``severity`` when the negative rate reaches ``rate``.

    :param severity: ``info``, ``warning`` or ``critical``.
    :param rate: negative-rate threshold in (0, 1].
    """

    severity: str
    rate: float


@dataclass(frozen=True)
class Rule:
    """One detection rule.

    :param name: unique rule name (``[A-Za-z0-9_.-]``).
    :param scope_type: ``all``, ``topic`` or ``ticker``.
    :param scopes: normalised scopes the rule watches; empty = every scope of ``scope_type`` seen.
    :param short_window_s: short window width (default 15 min).
    :param baseline_window_s: baseline width (default 24 h); the baseline is the period just before
        the short window, so it never contains it.
    :param min_count: articles the short window needs before the rule may fire.
    :param levels: severity levels, ascending rates; the lowest rate is the absolute threshold.
    :param test: spike test, ``wilson`` (Wilson lower bound of the short-window rate at ``z`` must be
        at least baseline rate + ``min_lift``) or ``zscore`` (binomial z-score against the baseline
        rate must be at least ``z``, and the rate at least baseline + ``min_lift``).
    :param z: z of the test (default 2.326 for ``wilson``, i.e. 99 % one-sided; 3.0 for ``zscore``).
    :param min_lift: minimum excess of the short-window rate over the baseline rate.
    :param resolve_below: hysteresis: an open alert becomes *calm* when the rate is below this (or the
        short window has fewer than ``min_count`` articles).
    :param resolve_hold_s: it resolves after being calm for this long (event time).
    :param cooldown_s: after resolving, the rule does not fire again for this scope for this long.
    :param baseline_prior_rate: prior negative rate blended into the baseline (handles empty baselines).
    :param baseline_prior_weight: weight of the prior, in articles.
    """

    name: str
    scope_type: str
    scopes: tuple[str, ...] = ()
    short_window_s: int = 900
    baseline_window_s: int = 86400
    min_count: int = 5
    levels: tuple[Level, ...] = (Level("warning", 0.5),)
    test: str = "wilson"
    z: float | None = None
    min_lift: float = 0.10
    resolve_below: float = 0.35
    resolve_hold_s: int = 1800
    cooldown_s: int = 3600
    baseline_prior_rate: float = 0.3
    baseline_prior_weight: float = 20.0

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(where, "name must be 1-64 chars of letters, digits, '_', '.', '-'")
        if self.scope_type not in C.SCOPE_TYPES:
            raise ConfigError(where, f"scope_type must be one of {C.SCOPE_TYPES}")
        try:
            scopes = tuple(dict.fromkeys(normalize_scope(sc) for sc in self.scopes))
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None
        object.__setattr__(self, "scopes", scopes)
        object.__setattr__(self, "levels", tuple(self.levels))
        if self.scope_type == C.ALL_SCOPE and self.scopes not in ((), (C.ALL_SCOPE,)):
            raise ConfigError(where, "scope_type 'all' takes no scopes")
        for sc in self.scopes:
            if sc != C.ALL_SCOPE and not sc.startswith(self.scope_type + ":"):
                raise ConfigError(where, f"scope {sc!r} is not a {self.scope_type} scope")
        if self.short_window_s <= 0 or self.baseline_window_s <= 0:
            raise ConfigError(where, "windows must be positive")
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise ConfigError(where, "min_count must be an integer >= 1")
        if not self.levels:
            raise ConfigError(where, "at least one level is required")
        prev = None
        for lv in self.levels:
            if lv.severity not in C.SEVERITIES:
                raise ConfigError(where, f"unknown severity {lv.severity!r}; use {C.SEVERITIES}")
            if not 0 < lv.rate <= 1:
                raise ConfigError(where, f"level {lv.severity} rate must be in (0, 1]")
            if prev and (severity_rank(lv.severity) <= severity_rank(prev.severity) or lv.rate <= prev.rate):
                raise ConfigError(where, "levels must rise in both severity and rate")
            prev = lv
        if self.test not in TESTS:
            raise ConfigError(where, f"test must be one of {TESTS}")
        if self.z is not None and not self.z > 0:
            raise ConfigError(where, "z must be > 0")
        if not 0 <= self.min_lift < 1:
            raise ConfigError(where, "min_lift must be in [0, 1)")
        if not 0 <= self.resolve_below < self.levels[0].rate:
            raise ConfigError(where, "resolve_below must be >= 0 and below the lowest level's rate")
        if self.resolve_hold_s < 0 or self.cooldown_s < 0:
            raise ConfigError(where, "resolve_hold and cooldown must be >= 0")
        if not 0 < self.baseline_prior_rate < 1 or self.baseline_prior_weight < 0:
            raise ConfigError(where, "baseline_prior_rate must be in (0, 1), baseline_prior_weight >= 0")

    @property
    def threshold(self) -> float:
        """The absolute negative-rate threshold (the lowest level's rate)."""
        return self.levels[0].rate

    @property
    def z_value(self) -> float:
        """The effective ``z`` of the spike test."""
        return self.z if self.z is not None else DEFAULT_Z[self.test]

    @property
    def span_s(self) -> int:
        """Event time a decision looks back: short + baseline window."""
        return self.short_window_s + self.baseline_window_s

    def level_rate(self, severity: str) -> float:
        """The rate threshold of one of this rule's severities.

        :param severity: a severity of :attr:`levels`.
        """
        for lv in self.levels:
            if lv.severity == severity:
                return lv.rate
        raise KeyError(severity)


# --- statistics ----------------------------------------------------------------------------------

def wilson_lower(k: int, n: int, z: float) -> float:
    """Lower bound of the Wilson score interval of a binomial proportion.

    :param k: successes (negative articles).
    :param n: trials (articles); 0 gives 0.0.
    :param z: standard-normal quantile (2.326 = 99 % one-sided).
    """
    if n <= 0:
        return 0.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / denom)


def binomial_z(k: int, n: int, p0: float) -> float:
    """Binomial z-score of ``k`` successes in ``n`` trials against rate ``p0``.

    :param k: successes.
    :param n: trials; 0 gives 0.0.
    :param p0: null rate, clamped to [0.001, 0.999].
    """
    if n <= 0:
        return 0.0
    p0 = min(max(p0, 1e-3), 1 - 1e-3)
    return (k - n * p0) / math.sqrt(n * p0 * (1 - p0))


def smoothed_rate(k: int, n: int, prior_rate: float, prior_weight: float) -> float:
    """Negative rate with a prior: ``(k + prior_rate * w) / (n + w)``.

    :param k: negative articles in the baseline.
    :param n: articles in the baseline.
    :param prior_rate: prior rate.
    :param prior_weight: prior weight ``w`` in articles.
    """
    if n + prior_weight <= 0:
        return prior_rate
    return (k + prior_rate * prior_weight) / (n + prior_weight)


@dataclass(frozen=True)
class Evaluation:
    """The statistics of one rule on one window.

    :param n: articles in the short window.
    :param negative: negative articles in the short window.
    :param rate: ``negative / n`` (0.0 when empty).
    :param baseline_n: articles in the baseline.
    :param baseline_negative: negative articles in the baseline.
    :param baseline_rate: smoothed baseline rate.
    :param z_score: binomial z-score of the short window against ``baseline_rate``.
    :param wilson_lower: Wilson lower bound of the short-window rate.
    :param statistic: value of the rule's test (``wilson_lower`` or ``z_score``).
    :param statistic_threshold: what the statistic must reach (baseline + lift, or ``z``).
    :param spike: the spike test passed (including ``min_lift``).
    :param level: highest severity whose rate is reached, ``None`` if none.
    :param fire_level: the severity the rule would fire at (min_count, level and spike), or ``None``.
    :param calm: the resolve condition holds (``n < min_count`` or ``rate < resolve_below``).
    """

    n: int
    negative: int
    rate: float
    baseline_n: int
    baseline_negative: int
    baseline_rate: float
    z_score: float
    wilson_lower: float
    statistic: float
    statistic_threshold: float
    spike: bool
    level: str | None
    fire_level: str | None
    calm: bool


def evaluate(rule: Rule, n: int, negative: int, baseline_n: int, baseline_negative: int) -> Evaluation:
    """Compute a rule's statistics for one short window and its baseline.

    :param rule: the rule.
    :param n: articles in the short window.
    :param negative: negative articles in the short window.
    :param baseline_n: articles in the baseline window.
    :param baseline_negative: negative articles in the baseline window.
    """
    rate = negative / n if n else 0.0
    p0 = smoothed_rate(baseline_negative, baseline_n, rule.baseline_prior_rate, rule.baseline_prior_weight)
    z = binomial_z(negative, n, p0)
    wl = wilson_lower(negative, n, rule.z_value)
    if rule.test == "wilson":
        statistic, needed = wl, p0 + rule.min_lift
        spike = n > 0 and wl >= needed
    else:
        statistic, needed = z, rule.z_value
        spike = n > 0 and z >= needed and rate >= p0 + rule.min_lift
    level = None
    for lv in rule.levels:
        if n and rate >= lv.rate:
            level = lv.severity
    fire_level = level if (level and spike and n >= rule.min_count) else None
    calm = n < rule.min_count or rate < rule.resolve_below
    return Evaluation(n=n, negative=negative, rate=rate, baseline_n=baseline_n,
                      baseline_negative=baseline_negative, baseline_rate=p0, z_score=z, wilson_lower=wl,
                      statistic=statistic, statistic_threshold=needed, spike=spike, level=level,
                      fire_level=fire_level, calm=calm)


# --- state and decision --------------------------------------------------------------------------

def make_alert_id(rule: str, scope: str, window_start: int, window_end: int) -> str:
    """Deterministic alert id of an incident, from the rule, scope and the window it fired on.

    :param rule: rule name.
    :param scope: normalised scope.
    :param window_start: start of the firing short window, epoch seconds.
    :param window_end: end of the firing short window, epoch seconds.
    :returns: ``al_`` + 32 hex digits of sha256; the same for every re-evaluation and replay.
    """
    text = f"finpulse-alert/v1\n{rule}\n{scope}\n{int(window_start)}\n{int(window_end)}"
    prefix: str = C.ALERT_ID_PREFIX
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def make_event_id(alert_id: str, status: str, severity: str) -> str:
    """Id of one emitted record (the ``webhook-id``): unique per alert, status and severity.

    :param alert_id: the incident's alert id.
    :param status: ``fired`` or ``resolved``.
    :param severity: the record's severity (an escalation is a second ``fired`` record).
    """
    return f"{alert_id}.{status}.{severity}"


@dataclass(frozen=True)
class RuleState:
    """State of one (rule, scope) between evaluations.

    :param status: ``open`` (an alert is firing) or ``idle`` (resolved, possibly in cooldown).
    :param alert_id: id of the open (or last) alert.
    :param severity: current severity of the open (or last) alert.
    :param fired_start: start of the window the alert fired on.
    :param fired_end: end of the window the alert fired on.
    :param calm_since: first window end of the current calm streak (hysteresis), else ``None``.
    :param cooldown_until: no new alert before this window end (idle only).
    """

    status: str
    alert_id: str | None = None
    severity: str | None = None
    fired_start: int | None = None
    fired_end: int | None = None
    calm_since: int | None = None
    cooldown_until: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuleState:
        """Inverse of :meth:`to_dict`.

        :param d: a dict from :meth:`to_dict`.
        """
        kw: dict[str, Any] = {k: d.get(k) for k in cls.__dataclass_fields__}
        return cls(**kw)


@dataclass(frozen=True)
class Decision:
    """Result of :func:`decide`.

    :param action: ``none``, ``cooldown`` (would fire but is suppressed), ``fire``, ``stay``,
        ``escalate`` (still open, severity raised: emit a ``fired`` record) or ``resolve``.
    :param state: next state (``None``: nothing to keep).
    :param evaluation: the statistics.
    :param alert_id: alert id for ``fire``/``escalate``/``resolve``.
    :param severity: severity of the emitted record.
    """

    action: str
    state: RuleState | None
    evaluation: Evaluation
    alert_id: str | None = None
    severity: str | None = None

    @property
    def emits(self) -> str | None:
        """The status of the record to emit (``fired``/``resolved``), or ``None``."""
        return {"fire": "fired", "escalate": "fired", "resolve": "resolved"}.get(self.action)


def decide(rule: Rule, scope: str, short: WindowStats, baseline: WindowStats,
           state: RuleState | None) -> Decision:
    """Decide fire / stay / escalate / resolve for one rule, scope and short window (pure).

    All times are event times, so the same counts give the same decision live and in a replay.

    :param rule: the rule.
    :param scope: normalised scope.
    :param short: counts of the short window ``[end - short_window_s, end)``; ``short.end`` is the
        evaluation time.
    :param baseline: counts of the baseline window (the ``baseline_window_s`` before the short one).
    :param state: prior state of this (rule, scope), ``None`` if none.
    """
    window_start, window_end = short.start, short.end
    ev = evaluate(rule, short.n, short.negative, baseline.n, baseline.negative)
    E = int(window_end)
    if state is not None and state.status == "open":
        if ev.calm:
            since = state.calm_since if state.calm_since is not None else E
            if E - since >= rule.resolve_hold_s:
                nxt = RuleState(status="idle", alert_id=state.alert_id, severity=state.severity,
                                fired_start=state.fired_start, fired_end=state.fired_end,
                                cooldown_until=E + rule.cooldown_s) if rule.cooldown_s > 0 else None
                return Decision("resolve", nxt, ev, state.alert_id, state.severity)
            return Decision("stay", replace(state, calm_since=since), ev, state.alert_id, state.severity)
        kept = replace(state, calm_since=None)
        if ev.fire_level and severity_rank(ev.fire_level) > severity_rank(state.severity or C.SEVERITIES[0]):
            return Decision("escalate", replace(kept, severity=ev.fire_level), ev, state.alert_id, ev.fire_level)
        return Decision("stay", kept, ev, state.alert_id, state.severity)
    if state is not None and state.cooldown_until is not None and E < state.cooldown_until:
        return Decision("cooldown" if ev.fire_level else "none", state, ev)
    if ev.fire_level:
        aid = make_alert_id(rule.name, scope, window_start, E)
        nxt = RuleState(status="open", alert_id=aid, severity=ev.fire_level, fired_start=int(window_start),
                        fired_end=E)
        return Decision("fire", nxt, ev, aid, ev.fire_level)
    return Decision("none", None, ev)
