"""Training smoke runs: the recipe is recorded, the dev slice is disjoint, runs are reproducible."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="the train extra is needed for training")

from models.train import TrainConfig, train, train_dev_split  # noqa: E402


def test_dev_slice_comes_from_the_training_splits_and_is_stable():
    tr, dv = train_dev_split(0.08, 13)
    assert len(tr) + len(dv) == 16990 + 9543  # the two *_train.csv splits, nothing else
    assert {e.task for e in dv} == {"topic", "sentiment"}
    assert len(dv) == 2125  # the figure in the model card
    _, dv2 = train_dev_split(0.08, 13)
    assert [(e.task, e.text) for e in dv] == [(e.task, e.text) for e in dv2]
    _, dv3 = train_dev_split(0.08, 14)
    assert [(e.task, e.text) for e in dv] != [(e.task, e.text) for e in dv3]


def _tiny(out_dir, **kw) -> dict:
    cfg = TrainConfig(out_dir=str(out_dir), epochs=1, limit=48, max_length=24, threads=1, batch_size=16, **kw)
    return train(cfg)


def test_seeded_runs_are_reproducible_and_record_their_recipe(tmp_path):
    a = _tiny(tmp_path / "a", sentiment_weight=1.5)
    b = _tiny(tmp_path / "b", sentiment_weight=1.5)
    assert a["history"][0]["dev_score"] == b["history"][0]["dev_score"]
    wa = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    recipe = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert recipe["sentiment_weight"] == 1.5 and recipe["limit"] == 48 and recipe["best_epoch"] == 1
    assert recipe["train_examples"] + recipe["dev_examples"] == 96
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert set(history["history"][0]["dev"]) == {"topic", "sentiment"}
