"""The shipped (or a given) model on finpulse's news-style sets (data/news-dev/news_dev.csv, and the
held-out data/news-test/news_test.csv with ``--split test``).

Reports, on the ``dev`` split (or ``--split train|all|test``): topic accuracy and macro-F1, sentiment
accuracy and macro-F1, and how often a clearly polar headline (labelled negative or positive) is
called neutral, the failure the news issue describes. Select models on ``dev`` only; ``test`` is never
used to choose anything.

Usage: python scripts/evaluate_news_dev.py [--model-dir DIR] [--split dev|train|all|test] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finpulse.models import Classifier  # noqa: E402
from finpulse.models.data import NEWS_FILE, NEWS_TEST_FILE  # noqa: E402
from finpulse.models.labels import SENTIMENT_LABELS, TOPIC_LABELS  # noqa: E402
from finpulse.models.metrics import classification_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--split", default="dev", choices=["dev", "train", "all", "test"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with open(NEWS_TEST_FILE if args.split == "test" else NEWS_FILE, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if args.split == "all" or r["split"] == args.split]
    clf = Classifier(args.model_dir, device="cpu", batch_size=32)
    preds = clf.classify([r["headline"] for r in rows])
    out = {"model_version": clf.model_version, "split": args.split, "headlines": len(rows)}
    for task, labels in (("topic", TOPIC_LABELS), ("sentiment", SENTIMENT_LABELS)):
        idx = {name: i for i, name in enumerate(labels)}
        rep = classification_report([idx[r[task]] for r in rows], [idx[p[task]] for p in preds], labels)
        out[task] = {"accuracy": round(rep["accuracy"], 4), "macro_f1": round(rep["macro_f1"], 4)}
    polar = [(r, p) for r, p in zip(rows, preds, strict=True) if r["sentiment"] != "neutral"]
    out["polar_headlines"] = len(polar)
    out["polar_called_neutral"] = round(sum(p["sentiment"] == "neutral" for _, p in polar) / len(polar), 4)
    out["polar_sign_accuracy"] = round(sum(p["sentiment"] == r["sentiment"] for r, p in polar) / len(polar), 4)
    print(json.dumps(out, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
