"""Pure bucket / window arithmetic and scope normalisation (alerts.windows)."""

import pytest

from finpulse.alerts.exceptions import InvalidArticle
from finpulse.alerts.windows import (
    baseline_bounds,
    boundaries,
    bucket_ceil,
    bucket_start,
    check_window,
    normalize_scope,
    normalize_ticker,
    parse_article,
    parse_time,
    scopes_for,
    window_bounds,
    window_buckets,
)
from finpulse.core.rfc3339 import format as format_time

T0 = int(parse_time("2026-01-05T10:00:00Z"))  # a bucket boundary for 60 s and 900 s buckets


def test_parse_and_format_time():
    assert parse_time("2026-01-05T11:00:00+01:00") == T0
    assert parse_time("2026-01-05T10:00:00z") == T0
    assert format_time(T0 + 0.5) == "2026-01-05T10:00:00.500Z"
    for bad in ("2026-01-05T10:00:00", "yesterday", "", None, 5):
        with pytest.raises(InvalidArticle) as ei:
            parse_time(bad)
        assert ei.value.code == "bad_time"


def test_bucket_start_at_boundaries():
    assert bucket_start(T0, 60) == T0
    assert bucket_start(T0 + 59.999, 60) == T0
    assert bucket_start(T0 + 60, 60) == T0 + 60
    assert bucket_start(T0 - 0.001, 60) == T0 - 60
    assert bucket_start(T0 + 899, 900) == T0
    assert isinstance(bucket_start(T0 + 1.5, 60), int)
    assert bucket_ceil(T0, 60) == T0
    assert bucket_ceil(T0 + 0.001, 60) == T0 + 60
    with pytest.raises(ValueError):
        bucket_start(T0, 0)


def test_window_is_half_open_on_event_time():
    start, end = window_bounds(T0, 900, 60)
    assert (start, end) == (T0 - 900, T0)
    buckets = window_buckets(T0, 900, 60)
    assert len(buckets) == 15 and buckets[0] == T0 - 900 and buckets[-1] == T0 - 60

    def in_window(ts):
        return bucket_start(ts, 60) in buckets

    assert in_window(T0 - 900)          # start is included
    assert in_window(T0 - 0.001)        # last millisecond before the end is included
    assert not in_window(T0)            # the end is excluded
    assert not in_window(T0 - 900.001)  # just before the start is excluded


def test_unaligned_end_rounds_up_to_the_next_boundary():
    assert window_bounds(T0 + 1, 900, 60) == (T0 + 60 - 900, T0 + 60)
    assert window_bounds(T0 + 60, 900, 60) == (T0 + 60 - 900, T0 + 60)
    assert len(window_buckets(T0 + 30, 3600, 60)) == 60


def test_window_width_must_be_multiple_of_bucket():
    assert check_window(86400, 60) == 86400
    for bad in (90, 0, -60, 60.5, True):
        with pytest.raises(ValueError):
            check_window(bad, 60)


def test_baseline_excludes_short_window():
    assert baseline_bounds(T0, 900, 86400, 60) == (T0 - 900 - 86400, T0 - 900)
    bs = set(range(*baseline_bounds(T0, 900, 3600, 60), 60))
    assert not bs & set(window_buckets(T0, 900, 60))


def test_boundaries():
    assert list(boundaries(T0, T0 + 180, 60)) == [T0 + 60, T0 + 120, T0 + 180]
    assert list(boundaries(T0, T0, 60)) == []


def test_scopes_for_normalises_tickers_and_topic():
    art = {"topic": "  Fed |  Central Banks ", "tickers": ["$aapl", "MSFT", "aapl", "not a ticker", "", None]}
    assert scopes_for(art) == ["all", "topic:Fed | Central Banks", "ticker:AAPL", "ticker:MSFT"]
    assert scopes_for({}) == ["all"]
    assert scopes_for({"topic": "", "tickers": None}) == ["all"]
    assert scopes_for({"topic": "A {b}"}) == ["all", "topic:A (b)"]  # braces would break hash tags


def test_normalize_scope():
    assert normalize_scope("ALL") == "all"
    assert normalize_scope("Ticker:$brk.b") == "ticker:BRK.B"
    assert normalize_scope("topic:Earnings ") == "topic:Earnings"
    assert normalize_ticker("$aapl") == "AAPL" and normalize_ticker("1AB") is None
    for bad in ("sector:x", "ticker:", "ticker:???", "topic:  ", "nonsense"):
        with pytest.raises(ValueError):
            normalize_scope(bad)


def test_parse_article_validation():
    ok = {"id": "x", "published_at": "2026-01-05T10:00:00Z", "sentiment": "negative", "sentiment_score": -0.42,
          "title": "t", "tickers": ["aapl"], "topic": "Macro", "model_version": "m1"}
    a = parse_article(ok)
    assert a.ts == T0 and a.score_micro == -420000 and a.scopes == ("all", "topic:Macro", "ticker:AAPL")
    assert a.headline["published_at"] == "2026-01-05T10:00:00.000Z"
    for field, value, code in (("id", "", "missing_id"), ("sentiment", "meh", "bad_sentiment"),
                               ("sentiment_score", 2, "bad_score"), ("sentiment_score", "x", "bad_score"),
                               ("published_at", "2026-01-05", "bad_time")):
        with pytest.raises(InvalidArticle) as ei:
            parse_article({**ok, field: value})
        assert ei.value.code == code


def test_bucket_series_rolling_sums_join_and_columns():
    import numpy as np

    from finpulse.alerts.store import BucketSeries

    rows = [{"n": n, "negative": n // 2, "positive": 0, "neutral": n - n // 2, "sum_sentiment_score_micro": -n,
             "mv": {}} for n in (3, 0, 5, 1, 4, 2)]
    t0 = 1_767_600_000
    whole = BucketSeries("all", t0, 60, rows)
    counts = np.array([[r[f] for f in BucketSeries.FIELDS] for r in rows])
    from_counts = BucketSeries("all", t0, 60, counts=counts)
    assert from_counts.rows == whole.rows  # built on demand, same dicts
    ends = range(t0 + 120, t0 + 361, 60)
    # [e - 120, e): sums of two consecutive buckets, and the same through window()
    assert whole.rolling(ends, 120).tolist() == [3, 5, 6, 5, 6]
    assert whole.rolling(ends, 120, "negative").tolist() == [w.negative for w in (whole.window(e - 120, e) for e in ends)]
    assert list(whole.column("n")) == [3, 0, 5, 1, 4, 2]
    joined = BucketSeries.join(BucketSeries("all", t0, 60, counts=counts[:2]),
                               BucketSeries("all", t0 + 120, 60, counts=counts[2:]))
    assert joined.window(t0, t0 + 360) == whole.window(t0, t0 + 360)
    assert joined.rolling(ends, 120).tolist() == [3, 5, 6, 5, 6]
    with pytest.raises(ValueError, match="cannot join"):
        BucketSeries.join(BucketSeries("all", t0, 60, counts=counts[:2]), BucketSeries("all", t0 + 180, 60, counts=counts[3:]))
    with pytest.raises(ValueError, match="bucket boundary"):
        whole.rolling(range(t0 + 60, t0 + 121, 60), 120)  # the first window starts before the series
    with pytest.raises(ValueError, match="one of rows and counts"):
        BucketSeries("all", t0, 60)
