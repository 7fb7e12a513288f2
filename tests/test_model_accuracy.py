"""The shipped int8 model over the full upstream validation splits (4,117 + 2,388 headlines).

Targets (issue): sentiment accuracy >= 0.88 and macro-F1 >= 0.85; topic accuracy >= 0.90 and
macro-F1 >= 0.85. The manifest records what the shipped artifact measured; this test recomputes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.data import SPLIT_FILES
from models.evaluate import evaluate, logits_fn
from models.manifest import DEFAULT_MODEL_DIR, load_manifest

MODEL_DIR = Path(os.environ.get("FINPULSE_MODEL_DIR") or DEFAULT_MODEL_DIR)
TARGETS = {"topic": (0.90, 0.85), "sentiment": (0.88, 0.85)}


@pytest.fixture(scope="module")
def reports() -> dict:
    run = logits_fn("int8", MODEL_DIR)
    return {task: evaluate(SPLIT_FILES[(task, "valid")], task, run) for task in TARGETS}


@pytest.mark.parametrize("task", list(TARGETS))
def test_shipped_model_reproduces_its_manifest_metrics(reports, task):
    recorded = load_manifest(MODEL_DIR)["metrics"]["int8"][task]
    assert reports[task]["accuracy"] == pytest.approx(recorded["accuracy"], abs=0.002)
    assert reports[task]["macro_f1"] == pytest.approx(recorded["macro_f1"], abs=0.002)


@pytest.mark.parametrize("task", list(TARGETS))
def test_shipped_model_meets_targets(reports, task):
    acc, f1 = TARGETS[task]
    rep = reports[task]
    assert rep["accuracy"] >= acc, f"{task} accuracy {rep['accuracy']:.4f} < {acc}"
    assert rep["macro_f1"] >= f1, f"{task} macro-F1 {rep['macro_f1']:.4f} < {f1}"
