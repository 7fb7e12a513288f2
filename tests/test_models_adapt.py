"""Task-adaptive pre-training: which texts it reads, what it changes, and how training uses it."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch", reason="the train extra is needed for adaptation")

from safetensors.torch import load_file  # noqa: E402

from finpulse.models.adapt import AdaptConfig, adapt, adaptation_texts  # noqa: E402
from finpulse.models.network import base_encoder_dir  # noqa: E402
from finpulse.models.normalize import normalize_text  # noqa: E402
from finpulse.models.train import TrainConfig, train, train_dev_split  # noqa: E402


def test_adaptation_reads_training_texts_once_and_never_the_dev_slice():
    texts, dev_texts = adaptation_texts(AdaptConfig())
    train_set, dev_set = train_dev_split(0.08, 13)
    assert set(dev_texts) == {normalize_text(e.text) for e in dev_set}
    assert not set(texts) & set(dev_texts)
    assert len(texts) == len(set(texts))
    assert set(texts) == {normalize_text(e.text) for e in train_set} - set(dev_texts)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    out = tmp_path_factory.mktemp("tapt") / "encoder"
    summary = adapt(AdaptConfig(out_dir=str(out), epochs=2, limit=48, max_length=24, batch_size=16,
                                head_warmup_steps=2, threads=1))
    return out, summary


def test_adaptation_moves_the_encoder_but_not_the_word_embeddings(adapted):
    out, summary = adapted
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "adapt_recipe.json"):
        assert (out / name).is_file(), name
    before = load_file(str(base_encoder_dir() / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    strip = lambda k: k.removeprefix("bert.")  # noqa: E731
    before = {strip(k): v for k, v in before.items()}
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(before[emb], after[emb])
    q = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[q], after[q])
    recipe = json.loads((out / "adapt_recipe.json").read_text())
    assert recipe["recipe"]["limit"] == 48 and recipe["recipe"]["texts"] == summary["recipe"]["texts"]
    losses = [h["dev_mlm_loss"] for h in summary["history"]]
    assert len(losses) == 3 and all(isinstance(x, float) for x in losses)


def test_training_from_an_adapted_encoder_records_it_and_starts_elsewhere(adapted, tmp_path):
    out, _ = adapted
    common = dict(epochs=1, limit=48, max_length=24, threads=1, batch_size=16)
    train(TrainConfig(out_dir=str(tmp_path / "plain"), **common))
    train(TrainConfig(out_dir=str(tmp_path / "tapt"), base_encoder=str(out), **common))
    recipe = json.loads((tmp_path / "tapt" / "recipe.json").read_text())
    assert recipe["base_model"].startswith("sentence-transformers/all-MiniLM-L6-v2 + TAPT ")
    assert recipe["adapt_recipe"]["objective"].startswith("masked LM")
    plain = json.loads((tmp_path / "plain" / "recipe.json").read_text())
    assert plain["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and "adapt_recipe" not in plain
    wp = torch.load(tmp_path / "plain" / "weights.pt", weights_only=True)
    wt = torch.load(tmp_path / "tapt" / "weights.pt", weights_only=True)
    k = "encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(wp[k], wt[k])


def test_an_adapted_encoder_that_saw_the_dev_slice_is_refused(adapted, tmp_path):
    out, _ = adapted
    other = tmp_path / "other"
    shutil.copytree(out, other)
    rec = json.loads((other / "adapt_recipe.json").read_text())
    rec["recipe"]["seed"] = 14
    (other / "adapt_recipe.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"adapted encoder .*\(seed: 14 there vs 13 here\)"):
        train(TrainConfig(out_dir=str(tmp_path / "x"), epochs=1, limit=48, max_length=24, threads=1,
                          base_encoder=str(other)))
    with pytest.raises(ValueError, match="not an encoder written by finpulse adapt"):
        train(TrainConfig(out_dir=str(tmp_path / "y"), epochs=1, limit=48, threads=1,
                          base_encoder=str(tmp_path)))


def test_a_continued_run_keeps_its_checkpoints_base_and_cannot_name_another(adapted, tmp_path):
    out, _ = adapted
    common = dict(epochs=1, limit=48, max_length=24, threads=1, batch_size=16)
    train(TrainConfig(out_dir=str(tmp_path / "tapt"), base_encoder=str(out), **common))
    train(TrainConfig(out_dir=str(tmp_path / "more"), init_from=str(tmp_path / "tapt"), **common))
    first = json.loads((tmp_path / "tapt" / "recipe.json").read_text())
    more = json.loads((tmp_path / "more" / "recipe.json").read_text())
    assert more["base_model"] == first["base_model"] and "+ TAPT " in more["base_model"]
    with pytest.raises(ValueError, match="init_from and base_encoder"):
        train(TrainConfig(out_dir=str(tmp_path / "z"), init_from=str(tmp_path / "tapt"), base_encoder=str(out),
                          **common))
