"""Detection rules without I/O: statistics, thresholds, spike test, hysteresis, cooldown, config."""

import pytest

from finpulse.alerts.config import load_config, parse_duration, parse_rule
from finpulse.alerts.exceptions import ConfigError
from finpulse.alerts.rules import Level, Rule, RuleState, binomial_z, decide, make_alert_id, make_event_id, wilson_lower
from finpulse.alerts.store import BucketSeries
from finpulse.alerts.windows import WindowStats, parse_time

T0 = int(parse_time("2026-01-05T00:00:00Z"))
MIN = 60


def rule(**kw):
    base = dict(name="r", scope_type="all", short_window_s=900, baseline_window_s=3600, min_count=5,
                levels=(Level("warning", 0.5), Level("critical", 0.7)), resolve_below=0.35, resolve_hold_s=600,
                cooldown_s=1800)
    base.update(kw)
    return Rule(**base)


def ws(n, neg, end, width=900):
    return WindowStats(scope="all", start=end - width, end=end, n=n, negative=neg, neutral=n - neg)


def run_series(r, per_minute, state=None):
    """Walk every closed boundary of a synthetic per-minute (n, negative) series starting at T0."""
    rows = [{"n": n, "negative": k, "positive": 0, "neutral": n - k, "sum_sentiment_score_micro": 0, "mv": {}}
            for n, k in per_minute]
    ser = BucketSeries("all", T0, MIN, rows)
    out = []
    for e in range(T0 + r.span_s, ser.end + 1, MIN):
        d = decide(r, "all", ser.window(e - r.short_window_s, e), ser.window(e - r.span_s, e - r.short_window_s), state)
        state = d.state
        out.append((e, d))
    return out


def emitted(results):
    return [(e, d.action, d.severity) for e, d in results if d.emits]


NORMAL = [(4, 1)] * 75  # 75 minutes at 25 % negative: a full baseline + short window


def test_statistics():
    assert wilson_lower(0, 0, 2.326) == 0.0
    assert wilson_lower(3, 3, 2.326) == pytest.approx(0.3567, abs=1e-3)
    assert wilson_lower(50, 100, 1.96) == pytest.approx(0.4038, abs=1e-3)
    assert binomial_z(8, 8, 0.3) == pytest.approx((8 - 2.4) / (8 * 0.3 * 0.7) ** 0.5)
    assert binomial_z(0, 0, 0.3) == 0.0 and binomial_z(1, 1, 0.0) > 0  # p0 clamped, no division by zero


def test_threshold_fires_once_with_severity():
    below = run_series(rule(), NORMAL + [(10, 4)] * 30)  # 40 % < 50 %
    assert emitted(below) == []
    above = run_series(rule(), NORMAL + [(10, 6)] * 30)  # 60 %: warning, not critical
    assert [(a, s) for _, a, s in emitted(above)] == [("fire", "warning")]


def test_min_count_blocks_small_windows():
    quiet = [(0, 0)] * 75
    four_of_four = quiet[:-1] + [(4, 4)]
    assert emitted(run_series(rule(min_count=5), four_of_four)) == []
    assert [a for _, a, _ in emitted(run_series(rule(min_count=4), four_of_four))] == ["fire"]


def test_three_negatives_out_of_three_do_not_page_at_3am():
    """Even with min_count=1 and a 100 % rate, 3/3 is not significant against the baseline."""
    for test in ("wilson", "zscore"):
        r = rule(min_count=1, test=test)
        d = decide(r, "all", ws(3, 3, T0), ws(0, 0, T0 - 900, 3600), None)
        assert d.action == "none" and d.evaluation.level == "critical" and not d.evaluation.spike
        d8 = decide(r, "all", ws(8, 8, T0), ws(0, 0, T0 - 900, 3600), None)
        assert d8.action == "fire" and d8.severity == "critical"


def test_spike_is_relative_to_baseline():
    """62 % negative is above the 50 % threshold but not a spike when the baseline is 60 %."""
    high = [(5, 3)] * 60 + [(8, 5)] * 15
    res = run_series(rule(), high)
    assert emitted(res) == []
    last = res[-1][1].evaluation
    assert last.rate >= 0.5 and last.level == "warning" and not last.spike


def test_escalation_keeps_alert_id():
    res = run_series(rule(), NORMAL + [(10, 6)] * 20 + [(10, 9)] * 20)
    ev = emitted(res)
    assert [(a, s) for _, a, s in ev] == [("fire", "warning"), ("escalate", "critical")]
    ids = {d.alert_id for _, d in res if d.emits}
    assert len(ids) == 1
    assert make_event_id(ids.pop(), "fired", "warning") != make_event_id(res[-1][1].alert_id, "fired", "critical")


def test_hysteresis_and_hold_then_cooldown():
    r = rule()
    base = ws(240, 60, T0 - 900, 3600)
    d = decide(r, "all", ws(30, 20, T0), base, None)
    assert d.action == "fire"
    st, aid = d.state, d.alert_id
    steps = [  # (minutes after firing, n, negative, expected action)
        (1, 30, 14, "stay"),     # 47 %: below threshold but above resolve_below -> still open
        (2, 30, 9, "stay"),      # 30 %: calm, hold starts
        (3, 30, 15, "stay"),     # 50 %: calm streak broken
        (4, 30, 6, "stay"),      # calm again from minute 4
        (13, 30, 6, "stay"),     # 9 min calm < 10 min hold
        (14, 3, 3, "resolve"),   # fewer than min_count counts as calm; 10 min reached
    ]
    for m, n, k, action in steps:
        d = decide(r, "all", ws(n, k, T0 + m * MIN), base, st)
        assert d.action == action, (m, d)
        st = d.state
        if m == 2:
            assert st.calm_since == T0 + 2 * MIN
        if m == 3:
            assert st.calm_since is None
    assert d.alert_id == aid and st.status == "idle" and st.cooldown_until == T0 + 14 * MIN + 1800
    # inside the cooldown a firing window is suppressed
    d = decide(r, "all", ws(30, 25, T0 + 20 * MIN), base, st)
    assert d.action == "cooldown" and d.state == st
    # after it a new incident fires, with a new id
    d = decide(r, "all", ws(30, 25, T0 + 14 * MIN + 1800), base, st)
    assert d.action == "fire" and d.alert_id != aid


def test_zero_hold_and_zero_cooldown():
    r = rule(resolve_hold_s=0, cooldown_s=0)
    base = ws(240, 60, T0 - 900, 3600)
    st = decide(r, "all", ws(30, 20, T0), base, None).state
    d = decide(r, "all", ws(30, 3, T0 + MIN), base, st)
    assert d.action == "resolve" and d.state is None
    assert decide(r, "all", ws(30, 20, T0 + 2 * MIN), base, d.state).action == "fire"


def test_alert_id_is_deterministic():
    a = make_alert_id("r", "ticker:AAPL", T0 - 900, T0)
    assert a == make_alert_id("r", "ticker:AAPL", T0 - 900, T0)
    assert a.startswith("al_") and len(a) == 35
    assert len({a, make_alert_id("r2", "ticker:AAPL", T0 - 900, T0), make_alert_id("r", "ticker:MSFT", T0 - 900, T0),
                make_alert_id("r", "ticker:AAPL", T0 - 840, T0 + 60)}) == 4
    base = ws(240, 60, T0 - 900, 3600)
    assert decide(rule(), "all", ws(30, 20, T0), base, None) == decide(rule(), "all", ws(30, 20, T0), base, None)


def test_rule_normalises_its_scopes():
    r = Rule(name="x", scope_type="ticker", scopes=["ticker:AAPL", "Ticker:msft", "ticker:$aapl"])
    assert r.scopes == ("ticker:AAPL", "ticker:MSFT")
    assert Rule(name="y", scope_type="all", scopes=[]).scopes == ()


def test_rule_state_round_trip():
    st = RuleState(status="open", alert_id="al_x", severity="warning", fired_start=1, fired_end=2, calm_since=3)
    assert RuleState.from_dict(st.to_dict()) == st


def test_parse_duration():
    assert parse_duration("15m") == 900 and parse_duration("1h30m") == 5400 and parse_duration(90) == 90
    assert parse_duration("2d") == 172800 and parse_duration("0.5s") == 0.5
    for bad in ("15 minutes", "m", -1, True, "1h 2x"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_shipped_rules_file_loads():
    cfg = load_config("config/rules.toml", environ={})
    assert [r.name for r in cfg.rules] == ["market-negative-spike", "topic-negative-spike", "ticker-negative-spike",
                                           "market-negative-surge", "topic-negative-surge", "ticker-negative-surge",
                                           "entity-negative-surge"]
    surge = cfg.rules[3]
    assert surge.test == "surge" and surge.windows_s == (3600, 21600, 86400, 259200)
    assert surge.baseline_window_s == 14 * 86400 and surge.tests_per_decision == 8
    m = cfg.rules[0]
    assert (m.short_window_s, m.baseline_window_s, m.min_count, m.threshold) == (900, 86400, 20, 0.5)
    assert [lv.severity for lv in m.levels] == ["warning", "critical"]
    assert cfg.close_delay_s == 120 and cfg.retry.max_attempts == 8 and cfg.endpoints == ()
    # the default schedule spreads 8 attempts over about an hour
    total = sum(min(cfg.retry.max_delay_s, cfg.retry.base_delay_s * cfg.retry.factor ** k) for k in range(7))
    assert 3000 <= total <= 4500


def test_rule_config_errors():
    ok = {"name": "x", "scope_type": "ticker", "scopes": ["aapl", "ticker:$msft"], "levels": {"critical": 0.8, "warning": 0.6}}
    r = parse_rule(ok)
    assert r.scopes == ("ticker:AAPL", "ticker:MSFT") and r.levels[0] == Level("warning", 0.6)
    for patch in ({"min_cuont": 3}, {"scope_type": "sector"}, {"levels": {"warning": 0.6, "critical": 0.5}},
                  {"levels": {"fatal": 0.9}}, {"resolve_below": 0.7}, {"test": "chi2"}, {"scopes": ["topic:x"]},
                  {"short_window": "15 minutes"}, {"name": "bad name"}, {"min_count": 0}):
        with pytest.raises(ConfigError):
            parse_rule({**ok, **patch})
    with pytest.raises(ConfigError):
        load_config(data={"rules": [ok, ok]})
    with pytest.raises(ConfigError):
        load_config(data={"rulez": []})


def _reference(r, ser, ends, state):
    """decide() at every boundary: the emitted decisions and the final state."""
    out = []
    for e in ends:
        d = decide(r, "all", ser.window(e - r.short_window_s, e), ser.window(e - r.span_s, e - r.short_window_s), state)
        if d.emits:
            out.append((e, d.action, d.severity, d.alert_id))
        state = d.state
    return out, state


def _skipping(r, ser, ends, state):
    """The detector's walk (alerts.detector.decisions), which skips boundaries that cannot matter."""
    from finpulse.alerts.detector import decisions

    out = []
    for d, _prior, short, _base in decisions(r, "all", ser, ends, state):
        if d.emits:
            out.append((short.end, d.action, d.severity, d.alert_id))
        state = d.state
    return out, state


def test_skipping_undecisive_boundaries_gives_the_same_alerts_and_states():
    import random

    rng = random.Random(5)
    checked = emitted_total = 0
    for trial in range(300):
        r = rule(min_count=rng.choice([1, 3, 5, 8]), cooldown_s=rng.choice([0, 600, 1800]),
                 resolve_hold_s=rng.choice([0, 300, 600]))
        # quiet stretches, bursts of negative news, and gaps
        per_minute = []
        while len(per_minute) < 400:
            kind = rng.random()
            run = rng.randint(5, 60)
            if kind < 0.4:
                per_minute += [(0, 0)] * run
            elif kind < 0.7:
                per_minute += [(n, rng.randint(0, n)) for n in (rng.randint(0, 2) for _ in range(run))]
            else:
                per_minute += [(n, rng.randint(n // 2, n)) for n in (rng.randint(0, 6) for _ in range(run))]
        rows = [{"n": n, "negative": k, "positive": 0, "neutral": n - k, "sum_sentiment_score_micro": 0, "mv": {}}
                for n, k in per_minute]
        ser = BucketSeries("all", T0, MIN, rows)
        first = T0 + r.span_s
        state = rng.choice([None, None,
                            RuleState(status="idle", alert_id="al_x", severity="warning", fired_start=T0,
                                      fired_end=first, cooldown_until=first + rng.randint(1, 90) * MIN),
                            RuleState(status="open", alert_id="al_y", severity="warning", fired_start=T0,
                                      fired_end=first)])
        # evaluated in chunks, as the detector does, each chunk starting from the last one's state
        ref_state, fast_state = state, state
        cut = rng.randint(1, 200)
        for lo, hi in ((first - MIN, first + cut * MIN), (first + cut * MIN, ser.end)):
            ends = range(lo + MIN, hi + 1, MIN)
            ref, ref_state = _reference(r, ser, ends, ref_state)
            fast, fast_state = _skipping(r, ser, ends, fast_state)
            assert fast == ref, (trial, lo)
            assert fast_state == ref_state, (trial, lo)
            emitted_total += len(ref)
        checked += 1
    assert checked == 300 and emitted_total > 100  # the trials do fire and resolve alerts
