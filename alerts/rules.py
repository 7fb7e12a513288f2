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
TESTS = ("wilson", "zscore", "surge")
DEFAULT_Z = {"wilson": 2.326, "zscore": 3.0, "surge": 0.0}
SURGE_TESTS = ("count", "rate")
MIN_BASELINE_WINDOWS = 2
"""A surge window is tested once its baseline holds this many windows' worth of history."""
"""The two tests a ``surge`` rule runs on every short window (see :func:`surge_pvalues`)."""


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
    :param cooldown_s: after resolving, the rule does not fire again for this scope for this long, nor on
        a window that starts before the resolution (the same news must not alert twice).
    :param baseline_prior_rate: prior negative rate blended into the baseline (handles empty baselines).
    :param baseline_prior_weight: weight of the prior, in articles.
    :param windows_s: ``surge`` rules only: the short windows evaluated together (e.g. 1 h, 6 h,
        24 h, 3 d; multiples of the hourly roll-up). ``short_window_s`` becomes the longest.
    :param min_negative: ``surge`` rules only: negative articles a short window needs before it may fire.
    :param resolve_p: ``surge`` rules only: an open alert is *calm* while the smallest p-value of its
        windows is above this.
    :param min_history_s: ``surge`` rules only: event time of history (since the namespace's first
        article) a baseline needs before the rule may fire (the warm-up).
    :param prior_negatives_per_day: ``surge`` rules only: prior rate of negative articles, blended into
        a scope's baseline rate with the weight of ``prior_days`` days (a scope new to the stream
        starts from it).
    :param prior_days: weight of that prior, in days.
    :param rate_baseline_cap: ``surge`` rules only: the rate test treats a baseline as at most this
        many articles (a weeks-long baseline is not known to a fraction of a percent: news drifts).
    :param min_ratio: ``surge`` rules only: the count test needs at least this many times the expected
        negatives, the rate test a rate at least ``min_lift`` over the baseline (significance alone is
        not relevance at a firehose's volumes).
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
    windows_s: tuple[int, ...] = ()
    min_negative: int = 3
    resolve_p: float = 0.05
    min_history_s: int = 86400
    prior_negatives_per_day: float = 1.0
    prior_days: float = 2.0
    rate_baseline_cap: int = 200
    min_ratio: float = 1.5

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if self.test == "surge":
            self._check_surge(where)
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
        if self.test == "surge":
            return
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

    def _check_surge(self, where: str) -> None:
        windows = tuple(sorted({int(w) for w in self.windows_s}))
        if not windows or windows[0] <= 0:
            raise ConfigError(where, "a surge rule needs windows (e.g. windows = [\"1h\", \"6h\", \"24h\", \"3d\"])")
        object.__setattr__(self, "windows_s", windows)
        object.__setattr__(self, "short_window_s", windows[-1])
        object.__setattr__(self, "levels", tuple(self.levels))
        prev: Level | None = None
        for lv in self.levels:
            if lv.severity not in C.SEVERITIES:
                raise ConfigError(where, f"unknown severity {lv.severity!r}; use {C.SEVERITIES}")
            if not 0 < lv.rate < 1:
                raise ConfigError(where, f"level {lv.severity}: a surge level is a false-alarm probability in (0, 1)")
            if prev and (severity_rank(lv.severity) <= severity_rank(prev.severity) or lv.rate >= prev.rate):
                raise ConfigError(where, "surge levels must rise in severity and fall in probability")
            prev = lv
        if not isinstance(self.min_negative, int) or self.min_negative < 1:
            raise ConfigError(where, "min_negative must be an integer >= 1")
        if self.levels and not self.levels[0].rate < self.resolve_p < 1:
            raise ConfigError(where, "resolve_p must be above the lowest level's probability and below 1")
        if self.min_history_s < 0 or self.prior_negatives_per_day <= 0 or self.prior_days <= 0:
            raise ConfigError(where, "min_history must be >= 0, prior_negatives_per_day and prior_days > 0")
        if self.rate_baseline_cap < 1 or self.min_ratio < 1:
            raise ConfigError(where, "rate_baseline_cap must be >= 1 and min_ratio >= 1")

    @property
    def tests_per_decision(self) -> int:
        """How many tests one decision of a ``surge`` rule combines (windows x count/rate): the
        Bonferroni factor its levels are divided by."""
        return len(self.windows_s) * len(SURGE_TESTS)

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
    :param window_s: ``surge`` rules: the short window that decided.
    :param p_value: ``surge`` rules: the smallest p-value of the decision.
    :param surge_test: ``surge`` rules: ``count`` or ``rate``, the test with that p-value.
    :param expected_negative: ``surge`` rules: negatives the baseline predicts for that window.
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
    window_s: int | None = None
    p_value: float | None = None
    surge_test: str | None = None
    expected_negative: float | None = None


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


# --- surge: count and rate tests over several windows ----------------------------------------------

@dataclass(frozen=True)
class SurgeWindow:
    """One short window of a ``surge`` rule at one boundary, with its baseline.

    :param window_s: the short window's width.
    :param n: articles in the short window.
    :param negative: negative articles in it.
    :param baseline_n: articles in the baseline (the period just before the short window).
    :param baseline_negative: negative articles in the baseline.
    :param baseline_s: how long that baseline is: the rule's baseline window, or less where the
        namespace's history is shorter.
    :param slices: negative articles in consecutive ``window_s``-long slices of the baseline, newest
        first (their spread is the scope's burstiness).
    """

    window_s: int
    n: int
    negative: int
    baseline_n: int
    baseline_negative: int
    baseline_s: int
    slices: tuple[int, ...] = ()


def negative_binomial_tail(k: int, mean: float, size: float | None) -> float:
    """``P(X >= k)`` for a count with this mean and negative-binomial ``size`` (``None``: Poisson).

    :param k: the observed count.
    :param mean: the expected count (> 0).
    :param size: the dispersion ``r`` (variance ``mean + mean**2 / r``); ``None`` or very large is Poisson.
    """
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if size is None or size > 1e6:
        return float(_stats().poisson.sf(k - 1, mean))
    return float(_stats().nbinom.sf(k - 1, size, size / (size + mean)))


def beta_binomial_tail(k: int, n: int, a: float, b: float) -> float:
    """``P(X >= k)`` for ``X ~ BetaBinomial(n, a, b)``: ``k`` of ``n`` with a rate known as Beta(a, b).

    :param k: negative articles.
    :param n: articles.
    :param a: Beta ``alpha`` (negative pseudo-counts).
    :param b: Beta ``beta`` (other pseudo-counts).
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(_stats().betabinom.sf(k - 1, n, a, b))


def _stats() -> Any:
    from scipy import stats  # scipy's import takes ~0.3 s: only when a surge rule first evaluates

    return stats


def dispersion(slices: tuple[int, ...]) -> float | None:
    """Negative-binomial size ``r`` from the counts of equal slices (method of moments).

    :param slices: counts per slice; fewer than 3, or no over-dispersion, give ``None`` (Poisson).
    """
    if len(slices) < 3:
        return None
    m = sum(slices) / len(slices)
    v = sum((x - m) ** 2 for x in slices) / (len(slices) - 1)
    if m <= 0 or v <= m:
        return None
    return m * m / (v - m)


def surge_pvalues(rule: Rule, w: SurgeWindow) -> tuple[float, float, float]:
    """The two tests of a ``surge`` rule on one short window.

    * **count**: is the number of negative articles above what the scope's baseline predicts? The
      expected count is the baseline's rate of negatives per second (with the rule's prior:
      ``prior_negatives_per_day`` over ``prior_days``) times the window; its spread is a negative
      binomial whose dispersion is estimated from the baseline's own slices of this width (news comes
      in bursts, and a day's headlines that carry a date only all arrive at midnight: both show up
      as over-dispersion and widen the tail). Needs ``min_ratio`` times the expected count.
    * **rate**: is the share of negative articles above the baseline's? Beta-binomial: the baseline
      rate is known as Beta(negatives, others) (capped at ``rate_baseline_cap`` articles, plus the
      prior ``baseline_prior_rate`` x ``baseline_prior_weight``). Needs a rate ``min_lift`` above it.

    :param rule: a ``surge`` rule.
    :param w: the window and its baseline.
    :returns: ``(count p-value, rate p-value, expected negatives)``; 1.0 where a test does not apply.
    """
    day = 86400.0
    prior_k = rule.prior_negatives_per_day * rule.prior_days
    per_s = (w.baseline_negative + prior_k) / (w.baseline_s + rule.prior_days * day)
    expected = per_s * w.window_s
    p_count = 1.0
    if w.negative >= rule.min_ratio * expected:
        p_count = negative_binomial_tail(w.negative, expected, dispersion(w.slices))
    weight = min(1.0, rule.rate_baseline_cap / w.baseline_n) if w.baseline_n else 1.0
    a = w.baseline_negative * weight + rule.baseline_prior_rate * rule.baseline_prior_weight
    b = (w.baseline_n - w.baseline_negative) * weight + (1 - rule.baseline_prior_rate) * rule.baseline_prior_weight
    p_rate = 1.0
    if w.n and w.negative / w.n >= a / (a + b) + rule.min_lift:
        p_rate = beta_binomial_tail(w.negative, w.n, a, b)
    return p_count, p_rate, expected


def evaluate_surge(rule: Rule, windows: list[SurgeWindow], *, warmed_up: bool = True,
                   calm_window_s: int | None = None) -> Evaluation:
    """One decision of a ``surge`` rule: both tests on every window, the smallest p-value decides.

    A window takes part when it holds at least ``min_negative`` negative articles and its baseline is at
    least :data:`MIN_BASELINE_WINDOWS` windows long (early in a stream's history the long windows wait:
    a 3-day window is not judged against a day of history, nor against the prior alone). The family of
    ``len(windows) x 2`` tests is controlled with Bonferroni: a level (a false-alarm probability per
    scope and decision) is reached when the smallest p-value is below the level / that number.

    :param rule: a ``surge`` rule.
    :param windows: the rule's windows at this boundary (shortest first).
    :param warmed_up: the baseline has ``min_history_s`` of history (otherwise nothing fires).
    :param calm_window_s: for an open alert, the width of the window it fired on: the alert is calm
        while that window's p-value is above ``resolve_p`` (an alert that fired on six hours of news
        resolves when those six hours calm down, not three days later when the longest window does).
    :returns: the :class:`Evaluation` of the deciding window (the statistic is ``-log10(p)``).
    """
    m = rule.tests_per_decision
    best: tuple[float, SurgeWindow, str, float] | None = None
    calm_p = 1.0
    for w in windows:
        if w.negative < rule.min_negative or w.baseline_s < MIN_BASELINE_WINDOWS * w.window_s:
            continue
        p_count, p_rate, expected = surge_pvalues(rule, w)
        if w.window_s == calm_window_s:
            calm_p = min(p_count, p_rate)
        for p, which in ((p_count, "count"), (p_rate, "rate")):
            if best is None or p < best[0]:
                best = (p, w, which, expected)
    if best is None:
        shortest = windows[0]
        best = (1.0, shortest, "count", 0.0)
    p, w, which, expected = best
    rate = w.negative / w.n if w.n else 0.0
    base_rate = smoothed_rate(w.baseline_negative, w.baseline_n, rule.baseline_prior_rate, rule.baseline_prior_weight)
    level = None
    for lv in rule.levels:
        if p < lv.rate / m:
            level = lv.severity
    spike = warmed_up and level is not None
    fire_level = level if spike else None
    return Evaluation(n=w.n, negative=w.negative, rate=rate, baseline_n=w.baseline_n,
                      baseline_negative=w.baseline_negative, baseline_rate=base_rate,
                      z_score=_z_of(p), wilson_lower=wilson_lower(w.negative, w.n, 2.326),
                      statistic=-math.log10(max(p, 1e-300)),
                      statistic_threshold=-math.log10(rule.levels[0].rate / m), spike=spike, level=level,
                      fire_level=fire_level, calm=(calm_p if calm_window_s else p) > rule.resolve_p,
                      window_s=w.window_s, p_value=p,
                      surge_test=which, expected_negative=expected)


def _z_of(p: float) -> float:
    """The one-sided standard-normal quantile of a p-value (for records that quote a z-score)."""
    return float(_stats().norm.isf(min(max(p, 1e-300), 1.0 - 1e-12)))


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


def record_sequence(status: str, severity: str) -> int:
    """Order of a record within its incident (the alert record's ``sequence``).

    ``fired`` records come in rising severity (an escalation is a new ``fired`` record), and the
    ``resolved`` record is last: fired at info 1, warning 2, critical 3; resolved 4.

    :param status: ``fired`` or ``resolved``.
    :param severity: the record's severity.
    """
    if status == "resolved":
        return len(C.SEVERITIES) + 1
    return severity_rank(severity) + 1


def earlier_event_ids(event_id: str) -> list[str]:
    """The event ids of the records of the same incident that come before ``event_id``.

    :param event_id: ``<alert_id>.<status>.<severity>``.
    :returns: their event ids, in order (they need not all exist: an incident may skip severities).
    :raises ValueError: when ``event_id`` is not of that form.
    """
    alert_id, status, severity = event_id.rsplit(".", 2)
    mine = record_sequence(status, severity)
    return [make_event_id(alert_id, "fired", sev) for sev in C.SEVERITIES
            if record_sequence("fired", sev) < mine]


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
           state: RuleState | None, evaluation: Evaluation | None = None) -> Decision:
    """Decide fire / stay / escalate / resolve for one rule, scope and short window (pure).

    All times are event times, so the same counts give the same decision live and in a replay.

    :param rule: the rule.
    :param scope: normalised scope.
    :param short: counts of the short window ``[end - short_window_s, end)``; ``short.end`` is the
        evaluation time.
    :param baseline: counts of the baseline window (the ``baseline_window_s`` before the short one).
    :param state: prior state of this (rule, scope), ``None`` if none.
    :param evaluation: the statistics when already computed (``surge`` rules: :func:`evaluate_surge`,
        whose deciding window is ``short``).
    """
    window_start, window_end = short.start, short.end
    ev = evaluation or evaluate(rule, short.n, short.negative, baseline.n, baseline.negative)
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
    if (ev.fire_level and state is not None and state.cooldown_until is not None
            and window_start < state.cooldown_until - rule.cooldown_s):
        # the window still holds the resolved incident's news (a long surge window after a short
        # cooldown): a new alert needs news from after that incident resolved
        return Decision("cooldown", state, ev)
    if ev.fire_level:
        aid = make_alert_id(rule.name, scope, window_start, E)
        nxt = RuleState(status="open", alert_id=aid, severity=ev.fire_level, fired_start=int(window_start),
                        fired_end=E)
        return Decision("fire", nxt, ev, aid, ev.fire_level)
    return Decision("none", None, ev)
