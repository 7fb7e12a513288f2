"""Surge rules: the count and rate tests on synthetic series at low and high volume (pure, no I/O)."""

from __future__ import annotations

import math

import pytest

from finpulse.alerts.rules import (
    Level,
    Rule,
    SurgeWindow,
    beta_binomial_tail,
    decide,
    dispersion,
    evaluate_surge,
    negative_binomial_tail,
    surge_pvalues,
)
from finpulse.alerts.windows import WindowStats

H, DAY = 3600, 86400
WINDOWS = (H, 6 * H, DAY, 3 * DAY)


def rule(**kw) -> Rule:
    base = dict(name="s", scope_type="topic", test="surge", windows_s=WINDOWS, baseline_window_s=14 * DAY,
                levels=(Level("warning", 0.01), Level("critical", 1e-4)), min_negative=3, resolve_p=0.05,
                resolve_hold_s=6 * H, cooldown_s=12 * H)
    base.update(kw)
    return Rule(**base)


def windows_for(per_hour_n: float, per_hour_neg: float, short: dict[int, tuple[int, int]],
                baseline_s: int = 14 * DAY) -> list[SurgeWindow]:
    """Every window of the rule with a steady baseline (Poisson-like slices) and the given short counts."""
    out = []
    for w in WINDOWS:
        n, k = short.get(w, (round(per_hour_n * w / H), round(per_hour_neg * w / H)))
        slices = tuple(round(per_hour_neg * w / H) for _ in range(baseline_s // w))
        out.append(SurgeWindow(window_s=w, n=n, negative=k, baseline_n=round(per_hour_n * baseline_s / H),
                               baseline_negative=round(per_hour_neg * baseline_s / H), baseline_s=baseline_s,
                               slices=slices))
    return out


def test_tails_agree_with_their_definitions():
    # Poisson(2): P(X >= 5) = 1 - sum_{i<5} e^-2 2^i / i!
    expected = 1 - sum(math.exp(-2) * 2 ** i / math.factorial(i) for i in range(5))
    assert negative_binomial_tail(5, 2.0, None) == pytest.approx(expected)
    assert negative_binomial_tail(0, 2.0, None) == 1.0 and negative_binomial_tail(3, 0.0, 1.0) == 0.0
    # over-dispersion widens the tail
    assert negative_binomial_tail(8, 2.0, 1.0) > 20 * negative_binomial_tail(8, 2.0, None)
    # beta-binomial with a very sure rate approaches the binomial
    b = math.comb(10, 10) * 0.5 ** 10
    assert beta_binomial_tail(10, 10, 5e5, 5e5) == pytest.approx(b, rel=1e-3)
    assert beta_binomial_tail(11, 10, 1, 1) == 0.0


def test_dispersion_is_measured_on_the_baselines_slices():
    assert dispersion((3, 3, 3, 3)) is None          # no over-dispersion: Poisson
    assert dispersion((1, 2)) is None                # too few slices
    r = dispersion((0, 0, 0, 24, 0, 0, 0, 24))       # a day's headlines all at midnight
    assert r is not None and r < 1


def test_low_volume_surge_fires_and_single_headlines_never_do():
    r = rule()
    # a desk feed: ~3 headlines a day on this topic, one negative every two days
    quiet = windows_for(3 / 24, 0.5 / 24, {})
    assert evaluate_surge(r, quiet).fire_level is None
    # five negatives in six hours
    burst = windows_for(3 / 24, 0.5 / 24, {H: (2, 2), 6 * H: (6, 5), DAY: (8, 5), 3 * DAY: (14, 6)})
    ev = evaluate_surge(r, burst)
    assert ev.fire_level == "critical" and ev.window_s == 6 * H and ev.surge_test == "count"
    assert ev.p_value < 1e-4 / r.tests_per_decision
    # two negatives are below min_negative whatever the baseline
    two = windows_for(3 / 24, 0.01 / 24, {H: (2, 2), 6 * H: (2, 2), DAY: (2, 2), 3 * DAY: (2, 2)})
    assert evaluate_surge(r, two).fire_level is None and evaluate_surge(r, two).p_value == 1.0


def test_high_volume_needs_a_relevant_change_not_only_a_significant_one():
    r = rule(scope_type="all")
    # a firehose: 2,000 headlines an hour, 30 % negative
    small = windows_for(2000, 600, {H: (2000, 640)})       # +2 points: significant at this volume, not relevant
    assert evaluate_surge(r, small).fire_level is None
    big = windows_for(2000, 600, {H: (2000, 1000)})        # 50 % negative in one hour
    ev = evaluate_surge(r, big)
    assert ev.fire_level == "critical" and ev.window_s == H


def test_count_surge_at_an_unchanged_rate_fires():
    """Three times the usual news volume, at the usual share of negatives: a surge of bad news."""
    r = rule()
    ev = evaluate_surge(r, windows_for(10, 2, {6 * H: (180, 36)}))
    assert ev.fire_level is not None and ev.surge_test == "count" and ev.rate == pytest.approx(0.2)


def test_date_only_history_does_not_fire_every_midnight():
    """A day's headlines all carry 00:00: the one-hour window at midnight holds a whole day."""
    r = rule()
    day_neg = 6
    wins = []
    for w in WINDOWS:
        per = max(1, w // DAY) * day_neg
        if w < DAY:  # slices of an hour or six: zero, except the one at midnight
            slices = tuple(day_neg if i % (DAY // w) == 0 else 0 for i in range(14 * DAY // w))
        else:
            slices = tuple(per for _ in range(14 * DAY // w))
        wins.append(SurgeWindow(window_s=w, n=per * 4, negative=per, baseline_n=14 * day_neg * 4,
                                baseline_negative=14 * day_neg, baseline_s=14 * DAY, slices=slices))
    assert evaluate_surge(r, wins).fire_level is None
    # three times the usual negatives on one day does fire (on the day's windows)
    hot = [SurgeWindow(**{**w.__dict__, "negative": w.negative + 2 * day_neg, "n": w.n + 2 * day_neg})
           if w.window_s <= DAY else w for w in wins]
    assert evaluate_surge(r, hot).fire_level is not None


def test_warm_up_and_bonferroni():
    r = rule()
    burst = windows_for(3 / 24, 0.5 / 24, {6 * H: (6, 5)})
    assert evaluate_surge(r, burst, warmed_up=False).fire_level is None
    p_count, p_rate, expected = surge_pvalues(r, burst[1])
    assert expected == pytest.approx((7 + 2) / (16 * DAY) * 6 * H)
    # the level is divided by windows x tests: just above 0.01 / 8 does not fire
    assert r.tests_per_decision == 8
    ev = evaluate_surge(r, burst)
    assert ev.statistic_threshold == pytest.approx(-math.log10(0.01 / 8))


def test_decide_fires_stays_and_resolves_after_the_hold():
    r = rule()
    burst = windows_for(3 / 24, 0.5 / 24, {6 * H: (6, 5)})
    quiet = windows_for(3 / 24, 0.5 / 24, {})
    E = 100 * DAY
    short = WindowStats(scope="topic:Macro", start=E - 6 * H, end=E, n=6, negative=5)
    base = WindowStats(scope="topic:Macro", start=E - 6 * H - 14 * DAY, end=E - 6 * H)
    d = decide(r, "topic:Macro", short, base, None, evaluation=evaluate_surge(r, burst))
    assert d.action == "fire" and d.emits == "fired"
    st = d.state
    for h in range(1, 8):   # calm from E + 1h; six hours of calm later it resolves
        e = E + h * H
        sh = WindowStats(scope="topic:Macro", start=e - H, end=e)
        d = decide(r, "topic:Macro", sh, base, st, evaluation=evaluate_surge(r, quiet))
        st = d.state
    assert d.action == "resolve" and st.cooldown_until == E + 7 * H + 12 * H


def test_surge_rules_are_validated():
    from finpulse.alerts.exceptions import ConfigError

    with pytest.raises(ConfigError):
        rule(windows_s=())
    with pytest.raises(ConfigError):
        rule(levels=(Level("warning", 0.01), Level("critical", 0.05)))   # probabilities must fall
    with pytest.raises(ConfigError):
        rule(resolve_p=0.001)                                            # below the warning level
    assert rule().short_window_s == 3 * DAY and rule().span_s == 17 * DAY


def test_an_open_alert_is_calm_when_the_window_it_fired_on_calms():
    """Three days after a six-hour burst the 3-day window still holds it; the alert resolves on its 6 h."""
    r = rule()
    after = windows_for(3 / 24, 0.5 / 24, {3 * DAY: (14, 7)})   # only the 3-day window still remembers
    assert evaluate_surge(r, after).calm is False                # judged on every window: not calm
    assert evaluate_surge(r, after, calm_window_s=6 * H).calm is True
