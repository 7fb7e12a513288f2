"""Calibration and the sentiment decision rule, fitted on dev data only (pure numpy, no I/O).

The manifest's ``decision`` section (applied by :class:`~finpulse.models.classifier.Classifier`):

* ``temperature`` per head (temperature scaling, Guo et al. 2017): logits are divided by ``T`` before
  the softmax, so the reported probabilities match how often the model is right. ``T`` minimises the
  negative log-likelihood on dev data; it never changes which label wins.
* ``sentiment_bias``: added to the (scaled) sentiment logits before the label is chosen. Trained on
  tweets, where two thirds of the labels are neutral, the model calls many clearly polar news headlines
  neutral; a negative bias on ``neutral`` makes it say neutral only when it is confident. The bias
  maximises sentiment macro-F1 on the news-style dev split under a guard: the tweet dev slice's
  sentiment macro-F1 and accuracy may each fall by at most ``max_tweet_drop``. With a reference release
  (``finpulse export --reference``) the allowance is counted from the **release in force**, not from the
  same model without the bias, so the new weights and the bias share one allowance instead of adding
  two. Both are dev data (never the upstream ``*_valid.csv``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .labels import NEUTRAL, SENTIMENT_LABELS
from .metrics import classification_report


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax."""
    z = x - x.max(axis=-1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    lp = log_softmax(logits.astype(np.float64) / temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.2, hi: float = 10.0) -> float:
    """The temperature minimising :func:`nll` (grid on a log scale, then golden-section refinement).

    :param logits: ``(n, classes)`` raw logits on dev data.
    :param labels: ``(n,)`` true class ids.
    :returns: ``T`` in ``[lo, hi]``, rounded to 4 decimals.
    """
    labels = np.asarray(labels)
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), 60))
    best = int(np.argmin([nll(logits, labels, t) for t in grid]))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - g * (b - a), a + g * (b - a)
        if nll(logits, labels, c) < nll(logits, labels, d):
            b = d
        else:
            a = c
    return round(float((a + b) / 2), 4)


def sentiment_labels(logits: np.ndarray, temperature: float = 1.0, bias: Any = None) -> np.ndarray:
    """The sentiment label ids the decision rule picks: ``argmax(logits / T + bias)``."""
    z = logits.astype(np.float64) / temperature
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    out: np.ndarray = z.argmax(axis=-1)
    return out


def _macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    return float(classification_report(labels.tolist(), preds.tolist(), SENTIMENT_LABELS)["macro_f1"])


def _accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    return float((labels == preds).mean())


def fit_neutral_bias(news_logits: np.ndarray, news_labels: np.ndarray, tweet_logits: np.ndarray,
                     tweet_labels: np.ndarray, temperature: float = 1.0, max_tweet_drop: float = 0.005,
                     grid: np.ndarray | None = None, tweet_floor: dict[str, float] | None = None) -> dict[str, Any]:
    """The bias on the neutral logit that maximises news dev sentiment macro-F1 under the tweet guard.

    :param news_logits: sentiment logits on the news-style dev split.
    :param news_labels: its sentiment label ids.
    :param tweet_logits: sentiment logits on the tweet dev slice.
    :param tweet_labels: its label ids.
    :param temperature: the sentiment temperature the bias is added after.
    :param max_tweet_drop: largest allowed fall of the tweet dev slice's macro-F1 and of its accuracy
        (each, vs no bias or vs ``tweet_floor``).
    :param grid: neutral biases tried (default ``-3.0 .. 1.0`` in steps of 0.05).
    :param tweet_floor: ``{"accuracy": a, "macro_f1": f}``: the tweet dev figures of the reference release;
        a bias is allowed only while the tweet dev slice stays at or above ``a - max_tweet_drop`` and
        ``f - max_tweet_drop`` (instead of the same model's figures without a bias).
    :returns: ``{"sentiment_bias": [b_neg, b_pos, b_neu], "news_macro_f1": (before, after),
        "tweet_macro_f1": (before, after)}``; the bias is all zeros when nothing beats it.
    """
    grid = np.round(np.arange(-3.0, 1.0001, 0.05), 2) if grid is None else grid
    news_labels, tweet_labels = np.asarray(news_labels), np.asarray(tweet_labels)
    n_classes = news_logits.shape[1]

    def bias_of(b: float) -> np.ndarray:
        v = np.zeros(n_classes)
        v[NEUTRAL] = b
        return v

    news0 = _macro_f1(news_labels, sentiment_labels(news_logits, temperature))
    tweet0 = _macro_f1(tweet_labels, sentiment_labels(tweet_logits, temperature))
    tweet_acc0 = _accuracy(tweet_labels, sentiment_labels(tweet_logits, temperature))
    floor_f1, floor_acc = ((tweet0, tweet_acc0) if tweet_floor is None
                           else (tweet_floor["macro_f1"], tweet_floor["accuracy"]))
    best_b, best_news, best_tweet = 0.0, news0, tweet0
    for b in sorted(grid, key=abs):  # ties go to the smallest change
        if b == 0.0:
            continue
        tweet_preds = sentiment_labels(tweet_logits, temperature, bias_of(b))
        tw = _macro_f1(tweet_labels, tweet_preds)
        if tw < floor_f1 - max_tweet_drop or _accuracy(tweet_labels, tweet_preds) < floor_acc - max_tweet_drop:
            continue
        nw = _macro_f1(news_labels, sentiment_labels(news_logits, temperature, bias_of(b)))
        if nw > best_news + 1e-9:
            best_b, best_news, best_tweet = float(b), nw, tw
    return {"sentiment_bias": [round(float(x), 4) for x in bias_of(best_b)],
            "news_macro_f1": (round(news0, 4), round(best_news, 4)),
            "tweet_macro_f1": (round(tweet0, 4), round(best_tweet, 4))}
