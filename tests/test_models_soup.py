"""Model soup: weight averaging, the dev-slice compatibility check, the greedy choice (no training)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="the train extra is needed for model soups")

from finpulse.models.soup import SoupError, average_state_dicts, check_compatible, greedy_soup  # noqa: E402

#: a tiny dev slice: 25 % of 40 examples per task (10 topic + 10 sentiment headlines)
RECIPE = {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "pooling": "masked mean",
          "normalization_version": "1", "n_topics": 20, "n_sentiments": 3, "dev_fraction": 0.25,
          "seed": 13, "limit": 40, "max_length": 32, "dropout": 0.1}


def test_average_is_elementwise_mean_and_keeps_integer_buffers():
    a = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1, 2])}
    b = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([0, 1, 2])}
    c = {"w": torch.tensor([2.0, 1.0]), "ids": torch.tensor([0, 1, 2])}
    out = average_state_dicts([a, b, c])
    assert torch.allclose(out["w"], torch.tensor([2.0, 3.0]))
    assert out["ids"].dtype == torch.int64 and out["ids"].tolist() == [0, 1, 2]
    assert a["w"].tolist() == [1.0, 2.0]  # inputs untouched


def test_average_refuses_mismatched_ingredients():
    with pytest.raises(SoupError, match="shape"):
        average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(SoupError, match="different parameters"):
        average_state_dicts([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])
    with pytest.raises(SoupError):
        average_state_dicts([])


def test_ingredients_must_share_the_dev_slice():
    check_compatible({"a": RECIPE, "b": {**RECIPE, "lr": 1e-4}})  # training choices may differ
    with pytest.raises(SoupError, match="seed: 13 vs 14"):
        check_compatible({"a": RECIPE, "b": {**RECIPE, "seed": 14}})
    with pytest.raises(SoupError, match="dev_fraction"):
        check_compatible({"a": RECIPE, "b": {**RECIPE, "dev_fraction": 0.1}})


def _ingredient(path, seed: int):
    from finpulse.models.network import MultiTaskClassifier, base_encoder_dir, save_checkpoint

    torch.manual_seed(seed)
    model = MultiTaskClassifier.from_base(base_encoder_dir(), 20, 3)
    with torch.no_grad():  # differ in the encoder too, not only in the heads' initialisation
        model.encoder.encoder.layer[5].output.dense.weight.mul_(1.0 + 0.05 * seed)
    save_checkpoint(model, path, {**RECIPE, "lr": 1e-5 * seed})
    return model.state_dict()


def test_greedy_soup_keeps_the_best_first_and_never_scores_below_it(tmp_path):
    from finpulse.models.network import load_checkpoint

    states = {f"c{i}": _ingredient(tmp_path / f"c{i}", i) for i in (1, 2, 3)}
    summary = greedy_soup([tmp_path / n for n in states], tmp_path / "soup", threads=1)

    scores = {i["checkpoint"]: i["dev_score"] for i in summary["ingredients"]}
    assert set(scores) == set(states)
    best = max(scores, key=scores.get)
    assert summary["kept"][0] == best
    assert summary["dev_score"] >= scores[best]
    assert len(summary["trials"]) == 2
    assert [t["added"] for t in summary["trials"] if t["kept"]] == summary["kept"][1:]

    soup = load_checkpoint(tmp_path / "soup").state_dict()
    expected = average_state_dicts([states[n] for n in summary["kept"]])
    for k, v in expected.items():
        assert torch.equal(soup[k], v), k
    recipe = json.loads((tmp_path / "soup" / "recipe.json").read_text())
    assert recipe["seed"] == 13 and recipe["n_topics"] == 20
    assert {i["checkpoint"] for i in recipe["soup"]["ingredients"]} == set(states)
    assert all(i["recipe"]["lr"] for i in recipe["soup"]["ingredients"])


def test_soup_cli_reports_incompatible_checkpoints(tmp_path):
    from click.testing import CliRunner

    from finpulse.cli import main

    for name, seed in (("a", 13), ("b", 14)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.json").write_text(json.dumps({**RECIPE, "seed": seed}))
    res = CliRunner().invoke(main, ["soup", str(tmp_path / "a"), str(tmp_path / "b"),
                                    "--out-dir", str(tmp_path / "out")])
    assert res.exit_code != 0
    assert "one dev slice" in res.output and "seed: 13 vs 14" in res.output
    assert not (tmp_path / "out").exists()
