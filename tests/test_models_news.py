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


def test_news_test_set_is_held_out_of_training_and_selection():
    from finpulse.models.data import NEWS_TEST_FILE
    from finpulse.models.labels import SENTIMENT_LABELS, TOPIC_LABELS

    with pytest.raises(ValueError, match="dev or train"):
        load_news("test")  # training and selection code cannot read it
    with pytest.raises(ValueError, match="dev or train"):
        load_news("test", NEWS_TEST_FILE)
    with open(NEWS_TEST_FILE, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 500 and {r["split"] for r in rows} == {"test"}
    assert {r["topic"] for r in rows} == set(TOPIC_LABELS) and {r["sentiment"] for r in rows} == set(SENTIMENT_LABELS)
    seen = {e.text.lower() for e in load_news("dev") + load_news("train")}
    assert not any(r["headline"].lower() in seen for r in rows)


def test_temperature_scaling_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 2, size=(4000, 3))
    p = np.exp(true) / np.exp(true).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    t = fit_temperature(true * 3.0, labels)  # logits three times too sharp
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(true * 3.0, labels, t) < nll(true * 3.0, labels, 1.0)
    assert (sentiment_labels(true * 3.0, t) == (true * 3.0).argmax(1)).all()  # never changes a label


def _sentiment_logits(rng, n, neutral_shift):
    """Synthetic sentiment logits: the true class +2, the neutral logit shifted by ``neutral_shift``."""
    y = rng.choice([NEGATIVE, POSITIVE, NEUTRAL], size=n, p=[0.35, 0.35, 0.3])
    z = rng.normal(0, 1, size=(n, 3))
    z[np.arange(n), y] += 2.0
    z[:, NEUTRAL] += neutral_shift
    return z, y


def test_neutral_bias_stops_defaulting_to_neutral_within_the_tweet_guard():
    rng = np.random.default_rng(1)

    news, news_y = _sentiment_logits(rng, 1500, 1.5)    # news: the model leans to neutral
    tweets, tweet_y = _sentiment_logits(rng, 1500, 0.0)  # tweets: calibrated
    fit = fit_neutral_bias(news, news_y, tweets, tweet_y, max_tweet_drop=0.02)
    b = fit["sentiment_bias"]
    assert b[NEGATIVE] == b[POSITIVE] == 0.0 and b[NEUTRAL] < -0.2
    assert fit["news_macro_f1"][1] > fit["news_macro_f1"][0] + 0.05
    assert fit["tweet_macro_f1"][1] >= fit["tweet_macro_f1"][0] - 0.02
    strict = fit_neutral_bias(news, news_y, tweets, tweet_y, max_tweet_drop=0.0)
    assert strict["tweet_macro_f1"][1] >= strict["tweet_macro_f1"][0]  # the guard holds at zero too
    assert abs(strict["sentiment_bias"][NEUTRAL]) <= abs(b[NEUTRAL])


def test_neutral_bias_counts_the_allowance_from_the_release_in_force():
    """With a reference release the bias may spend only what the new weights left of one allowance."""
    rng = np.random.default_rng(2)

    news, news_y = _sentiment_logits(rng, 1500, 1.5)
    tweets, tweet_y = _sentiment_logits(rng, 1500, 0.0)
    own_preds = sentiment_labels(tweets)
    own = {"accuracy": float((own_preds == tweet_y).mean()),
           "macro_f1": float(fit_neutral_bias(news, news_y, tweets, tweet_y)["tweet_macro_f1"][0])}
    alone = fit_neutral_bias(news, news_y, tweets, tweet_y, max_tweet_drop=0.02)
    same = fit_neutral_bias(news, news_y, tweets, tweet_y, max_tweet_drop=0.02, tweet_floor=own)
    assert same["sentiment_bias"] == alone["sentiment_bias"]  # the reference equals the model: same rule
    # the new weights spent more than the allowance: the release was 0.05 better on tweets
    spent = {k: v + 0.05 for k, v in own.items()}
    none = fit_neutral_bias(news, news_y, tweets, tweet_y, max_tweet_drop=0.02, tweet_floor=spent)
    assert none["sentiment_bias"] == [0.0, 0.0, 0.0]
    # half spent: a smaller bias than alone, and the tweet figures stay above the reference's floor
    half = {k: v + 0.01 for k, v in own.items()}
    part = fit_neutral_bias(news, news_y, tweets, tweet_y, max_tweet_drop=0.02, tweet_floor=half)
    assert alone["sentiment_bias"][NEUTRAL] < part["sentiment_bias"][NEUTRAL] < 0.0
    preds = sentiment_labels(tweets, 1.0, part["sentiment_bias"])
    assert (preds == tweet_y).mean() >= half["accuracy"] - 0.02
    assert part["tweet_macro_f1"][1] >= half["macro_f1"] - 0.02


def test_a_release_is_within_the_guard_only_if_every_guarded_metric_is():
    from finpulse.models.release import RELEASE_GUARD, within_guard

    ref = {"topic": {"accuracy": 0.92, "macro_f1": 0.93}, "sentiment": {"accuracy": 0.873, "macro_f1": 0.826}}
    ok = {"topic": {"accuracy": 0.916, "macro_f1": 0.80}, "sentiment": {"accuracy": 0.869, "macro_f1": 0.8215}}
    assert within_guard(ok, ref, RELEASE_GUARD, 0.005)  # topic macro-F1 is not a release floor metric
    assert not within_guard(ok, ref, ("topic.accuracy", "topic.macro_f1"), 0.005)
    low = {**ok, "sentiment": {"accuracy": 0.8663, "macro_f1": 0.8254}}  # the .2 candidate's figures
    assert not within_guard(low, ref, RELEASE_GUARD, 0.005)
    assert within_guard(low, ref, RELEASE_GUARD, 0.01)
