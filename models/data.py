"""Reading the labelled corpora shipped under ``data/``.

Pure Python: no torch. Used by training, evaluation and the accuracy tests.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from .labels import labels_for

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"

SPLIT_FILES = {
    ("topic", "train"): DATA_DIR / "twitter-financial-news-topic" / "topic_train.csv",
    ("topic", "valid"): DATA_DIR / "twitter-financial-news-topic" / "topic_valid.csv",
    ("sentiment", "train"): DATA_DIR / "twitter-financial-news-sentiment" / "sent_train.csv",
    ("sentiment", "valid"): DATA_DIR / "twitter-financial-news-sentiment" / "sent_valid.csv",
}

NEWS_FILE = DATA_DIR / "news-dev" / "news_dev.csv"
"""finpulse's own news-style headlines (``data/news-dev``): a ``dev`` split for measuring and
selecting, a ``train`` split for training; each row is labelled for both tasks."""

NEWS_TEST_FILE = DATA_DIR / "news-test" / "news_test.csv"
"""A held-out news set (``data/news-test``, split ``test``) written and labelled by other hands in other
styles; only evaluation scripts read it (:func:`load_news` refuses it), so nothing is trained or chosen on it."""


@dataclass(frozen=True)
class Example:
    """One labelled headline. ``label`` is the upstream integer id."""

    text: str
    label: int
    task: str


def read_labelled_csv(path: str | Path, task: str) -> list[Example]:
    """Read a ``text,label`` CSV.

    :param path: the CSV file (UTF-8, header row, ``text`` and ``label`` columns).
    :param task: ``topic`` or ``sentiment``; labels outside that task's range are refused.
    :returns: the examples in file order.
    :raises ValueError: on a missing column or an out-of-range label, naming the line.
    """
    n_labels = len(labels_for(task))
    out: list[Example] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "text" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise ValueError(f"{path}: expected columns 'text' and 'label', got {reader.fieldnames}")
        for row in reader:
            label = int(row["label"])
            if not 0 <= label < n_labels:
                raise ValueError(f"{path}:{reader.line_num}: label {label} out of range for {task}")
            out.append(Example(row["text"], label, task))
    return out


def load_split(task: str, split: str) -> list[Example]:
    """Load the shipped ``train`` or ``valid`` split of ``task``."""
    return read_labelled_csv(SPLIT_FILES[(task, split)], task)


def stratified_holdout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into (train, dev) keeping each label's share.

    The dev slice is carved from the *training* split and drives early stopping; the upstream
    validation split is never used for that.
    """
    rng = random.Random(seed)
    by_label: dict[int, list[Example]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    train: list[Example] = []
    dev: list[Example] = []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        k = max(1, round(len(group) * fraction))
        dev.extend(group[:k])
        train.extend(group[k:])
    rng.shuffle(train)
    return train, dev


def load_news(split: str, path: str | Path = NEWS_FILE) -> list[Example]:
    """The news-style headlines of ``split`` (``dev`` or ``train``), two examples per headline.

    :param split: ``dev`` (measuring and model selection) or ``train`` (training only).
    :param path: the CSV (``id,headline,topic,sentiment,split,agreed``; labels are names).
    :returns: per headline a ``topic`` and a ``sentiment`` example, in file order.
    :raises ValueError: on an unknown split or label name.
    """
    if split not in ("dev", "train"):
        raise ValueError(f"news split must be dev or train, not {split!r}")
    ids = {task: {name: i for i, name in enumerate(labels_for(task))} for task in ("topic", "sentiment")}
    out: list[Example] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != split:
                continue
            for task in ("topic", "sentiment"):
                if row[task] not in ids[task]:
                    raise ValueError(f"{path}: {row['id']}: unknown {task} {row[task]!r}")
                out.append(Example(row["headline"], ids[task][row[task]], task))
    return out
