"""Model monitoring: the distribution of predictions, and a drift rule against a reference.

Pure functions (no I/O): the worker counts, per model version and hour, the predicted topics and
sentiments and binned confidences of what it scores (:func:`prediction_fields`); the reference of a
version is taken from the live stream itself once that version has scored enough headlines (news
is not tweets: the training mix is the wrong reference); :func:`drift_report` compares the recent
hours with it using the population stability index (PSI).

**The drift rule.** For each of the four distributions (topic, sentiment, topic confidence,
sentiment confidence), with at least :data:`MIN_HEADLINES` headlines in both the reference and the
recent window: PSI < 0.1 is stable, 0.1-0.25 a shift worth a look, >= :data:`PSI_ALERT` (0.25) is
drift: the worker logs an error once an hour per distribution and exports
``finpulse_model_drift_psi{kind}``, on which the shipped Prometheus rule alerts the operator.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

KINDS = ("topic", "sentiment", "topic_confidence", "sentiment_confidence")
CONFIDENCE_EDGES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""Upper edges of the confidence bins (the last bin is ``>= 0.95``)."""
PSI_WATCH = 0.1
PSI_ALERT = 0.25
MIN_HEADLINES = 500
EPSILON = 1e-4
"""Share given to a category seen on one side only (the PSI of an empty bin is otherwise infinite)."""


def confidence_bin(p: float) -> str:
    """The bin label of a probability: ``"<0.40"``, ``"0.40-0.50"``, ..., ``">=0.95"``."""
    lo = 0.0
    for edge in CONFIDENCE_EDGES:
        if p < edge:
            return f"<{edge:.2f}" if lo == 0.0 else f"{lo:.2f}-{edge:.2f}"
        lo = edge
    return f">={CONFIDENCE_EDGES[-1]:.2f}"


def prediction_fields(scored: Iterable[Mapping[str, Any]]) -> dict[str, Counter]:
    """Count ``news.scored`` messages per model version: ``n`` and ``<kind>|<category>`` fields.

    :param scored: scored messages (``topic``, ``topic_score``, ``sentiment``, ``sentiment_probs``,
        ``model_version``).
    :returns: model version -> counter of fields.
    """
    out: dict[str, Counter] = {}
    for m in scored:
        c = out.setdefault(str(m.get("model_version") or ""), Counter())
        c["n"] += 1
        c[f"topic|{m.get('topic')}"] += 1
        c[f"sentiment|{m.get('sentiment')}"] += 1
        c[f"topic_confidence|{confidence_bin(float(m.get('topic_score') or 0.0))}"] += 1
        probs = m.get("sentiment_probs") or {}
        top = max((float(v) for v in probs.values()), default=0.0)
        c[f"sentiment_confidence|{confidence_bin(top)}"] += 1
    return out


def distribution(counts: Mapping[str, int], kind: str) -> dict[str, float]:
    """Shares of the categories of ``kind`` in a counter of :func:`prediction_fields` fields."""
    part = {k.split("|", 1)[1]: int(v) for k, v in counts.items() if k.startswith(f"{kind}|") and int(v) > 0}
    total = sum(part.values())
    return {k: v / total for k, v in sorted(part.items())} if total else {}


def psi(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Population stability index of two distributions (shares by category).

    ``sum((c - r) * ln(c / r))`` over the union of categories, with :data:`EPSILON` for a category
    one side lacks.
    """
    total = 0.0
    for k in set(reference) | set(current):
        r, c = max(reference.get(k, 0.0), EPSILON), max(current.get(k, 0.0), EPSILON)
        total += (c - r) * math.log(c / r)
    return total


def drift_report(reference: Mapping[str, int], current: Mapping[str, int], *,
                 min_headlines: int = MIN_HEADLINES, alert_at: float = PSI_ALERT) -> dict[str, Any]:
    """Compare the recent predictions with the reference, distribution by distribution.

    :param reference: field counts of the reference (:func:`prediction_fields` format).
    :param current: field counts of the recent window.
    :param min_headlines: below this many headlines on either side nothing is judged.
    :param alert_at: the PSI from which a distribution counts as drifted.
    :returns: ``{"n_reference", "n_current", "judged", "drifted": [kinds], "kinds": {kind: {"psi",
        "status", "reference", "current"}}}``; status is ``stable``, ``watch``, ``drift`` or ``too_few``.
    """
    n_ref, n_cur = int(reference.get("n", 0)), int(current.get("n", 0))
    judged = n_ref >= min_headlines and n_cur >= min_headlines
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        ref, cur = distribution(reference, kind), distribution(current, kind)
        value = psi(ref, cur) if ref and cur else 0.0
        status = ("too_few" if not judged else "drift" if value >= alert_at else
                  "watch" if value >= PSI_WATCH else "stable")
        kinds[kind] = {"psi": round(value, 4), "status": status, "reference": ref, "current": cur}
    return {"n_reference": n_ref, "n_current": n_cur, "judged": judged,
            "drifted": [k for k, v in kinds.items() if v["status"] == "drift"], "kinds": kinds}
