"""Label maps for the two classifier heads.

Topic names are exactly the upstream names of the zeroshot *Twitter Financial News* topic corpus
(ids 0..19). Sentiment ids follow upstream (0 bearish, 1 bullish, 2 neutral); finpulse calls them
``negative``, ``positive`` and ``neutral``.
"""

from __future__ import annotations

TOPIC_LABELS: tuple[str, ...] = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)

SENTIMENT_LABELS: tuple[str, ...] = ("negative", "positive", "neutral")
"""Index = upstream id: 0 bearish -> negative, 1 bullish -> positive, 2 neutral."""

NEGATIVE = SENTIMENT_LABELS.index("negative")
POSITIVE = SENTIMENT_LABELS.index("positive")
NEUTRAL = SENTIMENT_LABELS.index("neutral")

TASKS = ("topic", "sentiment")


def labels_for(task: str) -> tuple[str, ...]:
    """Return the ordered label names of ``task`` (``topic`` or ``sentiment``)."""
    if task == "topic":
        return TOPIC_LABELS
    if task == "sentiment":
        return SENTIMENT_LABELS
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
