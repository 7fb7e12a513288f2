"""News-style data, headline-style rewriting of tweets, calibration and the sentiment decision rule."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from finpulse.models.calibration import fit_neutral_bias, fit_temperature, nll, sentiment_labels
from finpulse.models.data import NEWS_FILE, load_news
from finpulse.models.headline_style import to_headline_style
from finpulse.models.labels import NEGATIVE, NEUTRAL, POSITIVE


@pytest.mark.parametrize(("tweet", "headline"), [
    ("$LK - Muddy Waters goes short Luckin Coffee https://t.co/8yrbwAjLKG", "Muddy Waters goes short Luckin Coffee"),
    ("$NCBS: Hovde Group cuts to Market Perform", "Hovde Group cuts to Market Perform"),
    ("RT @desk: BREAKING: $AAPL CRASHES 10%!!! 🚀🚀", "Breaking: Apple Crashes 10%"),
    ("FDA approves drug for $MRK", "FDA approves drug for Merck"),
    ("$XYZW shares jump after #earnings beat via @newsbot", "XYZW shares jump after earnings beat"),
    ("Gold futures rose 2% to $1,671.20 an ounce…", "Gold futures rose 2% to $1,671.20 an ounce"),
    ("Stock Market Update: Gold Grabs Fourth-Straight Advance", "Stock Market Update: Gold Grabs Fourth-Straight Advance"),
    ("$TSLA", "Tesla"),
    ("@someone 🚀", "@someone 🚀"),  # nothing would be left: unchanged
])
def test_tweets_rewritten_in_headline_style(tweet, headline):
    assert to_headline_style(tweet) == headline


def test_news_splits_are_disjoint_and_carry_both_tasks():
    dev, train = load_news("dev"), load_news("train")
    assert len(dev) % 2 == 0 and [e.task for e in dev[:2]] == ["topic", "sentiment"]
    assert {e.text for e in dev}.isdisjoint({e.text for e in train})
    with open(NEWS_FILE, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(dev) + len(train) == 2 * len(rows) and len(rows) >= 1500
    with pytest.raises(ValueError, match="dev or train"):
        load_news("valid")


def test_temperature_scaling_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 2, size=(4000, 3))
    p = np.exp(true) / np.exp(true).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    t = fit_temperature(true * 3.0, labels)  # logits three times too sharp
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(true * 3.0, labels, t) < nll(true * 3.0, labels, 1.0)
    assert (sentiment_labels(true * 3.0, t) == (true * 3.0).argmax(1)).all()  # never changes a label


def test_neutral_bias_stops_defaulting_to_neutral_within_the_tweet_guard():
    rng = np.random.default_rng(1)

    def sample(n, neutral_shift):
        y = rng.choice([NEGATIVE, POSITIVE, NEUTRAL], size=n, p=[0.35, 0.35, 0.3])
        z = rng.normal(0, 1, size=(n, 3))
        z[np.arange(n), y] += 2.0
        z[:, NEUTRAL] += neutral_shift
        return z, y

    news, news_y = sample(1500, 1.5)    # news: the model leans to neutral
    tweets, tweet_y = sample(1500, 0.0)  # tweets: calibrated
    fit = fit_neutral_bias(news, news_y, tweets, tweet_y, max_tweet_drop=0.02)
    b = fit["sentiment_bias"]
    assert b[NEGATIVE] == b[POSITIVE] == 0.0 and b[NEUTRAL] < -0.2
    assert fit["news_macro_f1"][1] > fit["news_macro_f1"][0] + 0.05
    assert fit["tweet_macro_f1"][1] >= fit["tweet_macro_f1"][0] - 0.02
    strict = fit_neutral_bias(news, news_y, tweets, tweet_y, max_tweet_drop=0.0)
    assert strict["tweet_macro_f1"][1] >= strict["tweet_macro_f1"][0]  # the guard holds at zero too
    assert abs(strict["sentiment_bias"][NEUTRAL]) <= abs(b[NEUTRAL])
