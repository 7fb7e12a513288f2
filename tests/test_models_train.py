"""Training smoke runs: the recipe is recorded, the dev slice is disjoint, runs are reproducible."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="the train extra is needed for training")

from finpulse.models.train import TrainConfig, train, train_dev_split  # noqa: E402


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


def test_distillation_loss_is_zero_only_when_student_matches_teacher():
    from finpulse.models.train import distillation_loss

    teacher = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    assert distillation_loss(teacher.clone(), teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros_like(teacher, requires_grad=True)
    loss = distillation_loss(student, teacher, 2.0)
    assert loss.item() > 0.1
    loss.backward()
    # the gradient pushes each student logit towards the teacher's ranking
    assert (student.grad.argmin(-1) == teacher.argmax(-1)).all()
    # T**2 * KL, checked against the formula at T = 1
    p = torch.softmax(teacher, -1)
    kl = (p * (torch.log_softmax(teacher, -1) - torch.log_softmax(torch.zeros_like(teacher), -1))).sum(-1).mean()
    assert distillation_loss(torch.zeros_like(teacher), teacher, 1.0).item() == pytest.approx(kl.item(), rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(student, teacher, 0.0)


def test_distillation_from_a_teacher_is_recorded_and_moves_the_student(tmp_path):
    _tiny(tmp_path / "teacher")
    plain = _tiny(tmp_path / "plain")
    kd = _tiny(tmp_path / "kd", teacher=str(tmp_path / "teacher"), distill_weight=1.0)
    recipe = json.loads((tmp_path / "kd" / "recipe.json").read_text())
    assert recipe["teacher"] == str(tmp_path / "teacher")
    assert recipe["teacher_recipe"]["best_epoch"] == 1 and "dev" in recipe["teacher_recipe"]
    assert kd["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    wp = torch.load(tmp_path / "plain" / "weights.pt", weights_only=True)
    wk = torch.load(tmp_path / "kd" / "weights.pt", weights_only=True)
    assert not torch.equal(wp["sentiment_head.weight"], wk["sentiment_head.weight"])


def test_a_teacher_with_another_dev_slice_is_refused(tmp_path):
    _tiny(tmp_path / "teacher", seed=14)
    with pytest.raises(ValueError, match=r"teacher .*\(seed: 14 there vs 13 here\)"):
        _tiny(tmp_path / "kd", teacher=str(tmp_path / "teacher"))


def test_consistency_loss_is_symmetric_and_zero_only_for_equal_predictions():
    from finpulse.models.train import consistency_loss

    a = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    b = torch.tensor([[0.5, 0.5, 0.0], [1.0, -1.0, 2.0]])
    assert consistency_loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert consistency_loss(a, a + 5.0).item() == pytest.approx(0.0, abs=1e-5)  # same softmax
    assert consistency_loss(a, b).item() == pytest.approx(consistency_loss(b, a).item())
    pa, pb = torch.softmax(a, -1), torch.softmax(b, -1)
    expected = 0.5 * ((pa * (pa.log() - pb.log())).sum(-1) + (pb * (pb.log() - pa.log())).sum(-1)).mean()
    assert consistency_loss(a, b).item() == pytest.approx(expected.item(), rel=1e-5)


def test_rdrop_is_recorded_and_changes_training(tmp_path):
    plain = _tiny(tmp_path / "plain")
    rd = _tiny(tmp_path / "rd", rdrop_weight=1.0)
    recipe = json.loads((tmp_path / "rd" / "recipe.json").read_text())
    assert recipe["rdrop_weight"] == 1.0
    # the consistency term is positive (two dropout passes disagree), so the loss differs
    assert rd["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    wp = torch.load(tmp_path / "plain" / "weights.pt", weights_only=True)
    wr = torch.load(tmp_path / "rd" / "weights.pt", weights_only=True)
    assert not torch.equal(wp["sentiment_head.weight"], wr["sentiment_head.weight"])


def test_news_style_training_and_selection_are_recorded(tmp_path):
    res = _tiny(tmp_path / "n", news_repeat=2, headline_style=0.5, news_select=True)
    entry = res["history"][0]
    assert set(entry["news_dev"]) == {"topic", "sentiment"} and entry["news_dev"]["topic"]["n"] == 48
    # the epoch is selected on the mean of the tweet slice's and the news dev split's scores
    assert entry["dev_score"] == pytest.approx((entry["tweet_dev_score"] + entry["news_dev_score"]) / 2)
    recipe = json.loads((tmp_path / "n" / "recipe.json").read_text())
    assert recipe["news_repeat"] == 2 and recipe["headline_style"] == 0.5 and recipe["news_dev_examples"] == 96
    assert recipe["news_dev"] == entry["news_dev"]


def test_a_checkpoint_rebuilt_from_the_int8_model_scores_like_it(tmp_path):
    from finpulse.models.data import load_split
    from finpulse.models.recover import checkpoint_from_int8

    texts = [e.text for e in load_split("sentiment", "train")[:200]]
    rep = checkpoint_from_int8(tmp_path / "ckpt", check_texts=texts)
    # int8 rounding of weights and activations only: the labels agree as int8 and fp32 exports do
    assert rep["argmax_agreement"]["topic"] > 0.95 and rep["argmax_agreement"]["sentiment"] > 0.95
    recipe = json.loads((tmp_path / "ckpt" / "recipe.json").read_text())
    assert recipe["recovered_from"]["version"] == rep["version"] and recipe["dev_fraction"] == 0.08
    cont = train(TrainConfig(out_dir=str(tmp_path / "cont"), epochs=1, limit=16, max_length=24, threads=1,
                             batch_size=16, init_from=str(tmp_path / "ckpt"), lr=1e-6))
    # continued training from it starts where the shipped model is: the tiny dev slice is nearly all right
    assert cont["history"][0]["dev"]["topic"]["accuracy"] > 0.8


def test_fake_quantised_weights_round_like_the_export_and_train_the_latent_weights(tmp_path):
    from torch import nn

    from finpulse.models.network import load_checkpoint
    from finpulse.models.qat import Int8PerChannel, fake_quantize_linear_weights

    w = torch.randn(4, 8, requires_grad=True)
    q = Int8PerChannel()(w)
    scale = w.detach().abs().amax(1, keepdim=True) / 127
    assert torch.allclose(q / scale, torch.round(q / scale), atol=1e-4)  # on the int8 grid, per row
    assert (q - w).abs().max() <= scale.max() / 2 + 1e-7
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through: the latent weight learns

    # a weight update below half a step leaves the exported (rounded) weight where it was
    lin = nn.Linear(8, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.randint(-60, 60, (4, 8)) / 127)  # on the grid, as a rebuilt checkpoint
        lin.weight[:, 0] = 1.0  # the row maxima: the per-row scale is 1/127
    fake_quantize_linear_weights(lin)
    before = lin.weight.detach().clone()
    with torch.no_grad():
        lin.parametrizations.weight.original[:, 1:].add_(1e-4)  # < half a step (0.0039)
    assert torch.equal(lin.weight, before)
    with torch.no_grad():
        lin.parametrizations.weight.original[:, 1:].add_(0.004)  # past half a step: moves one step
    assert torch.allclose(lin.weight[:, 1:] - before[:, 1:], torch.full((4, 7), 1 / 127), atol=1e-6)

    tr = _tiny(tmp_path / "q", fake_quant=True)
    recipe = json.loads((tmp_path / "q" / "recipe.json").read_text())
    assert recipe["fake_quant"] is True and tr["best_epoch"] == 1
    state = torch.load(tmp_path / "q" / "weights.pt", weights_only=True)
    assert not any("parametrizations" in k for k in state)  # saved under the plain names
    load_checkpoint(tmp_path / "q")  # loads into the plain network


def test_interpolation_is_chosen_on_dev_data_with_the_tweet_guard(tmp_path):
    from finpulse.models.network import read_recipe
    from finpulse.models.soup import interpolate

    _tiny(tmp_path / "a")
    _tiny(tmp_path / "b", lr=5e-4, news_repeat=1)  # a very different fine-tune of the same slice
    res = interpolate(tmp_path / "a", tmp_path / "b", tmp_path / "mix", alphas=(0.0, 1.0), max_tweet_drop=0.0)
    start = res["candidates"][0]
    assert start["alpha"] == 0.0 and start["ok"]  # the start is always allowed: it is the reference
    chosen = next(c for c in res["candidates"] if c["alpha"] == res["alpha"])
    assert chosen["ok"] and chosen["news_score"] == max(c["news_score"] for c in res["candidates"] if c["ok"])
    recipe = read_recipe(tmp_path / "mix")
    assert recipe["interpolation"]["alpha"] == res["alpha"] and recipe["news_dev"] == chosen["news_dev"]
    from finpulse.models.soup import GUARD_ALL

    ref = start["tweet_dev"]
    for c in res["candidates"]:  # ok = every guarded tweet dev metric within the allowance of the start's
        assert c["ok"] == all(c["tweet_dev"][t][m] >= ref[t][m] for t, m in (g.split(".") for g in GUARD_ALL))
    assert recipe["interpolation"]["guard"] == list(GUARD_ALL)


def test_interpolate_cli_guards_the_release_floor_metrics(tmp_path):
    from click.testing import CliRunner

    from finpulse.cli import main
    from finpulse.models.network import read_recipe
    from finpulse.models.soup import GUARD_FLOORS

    _tiny(tmp_path / "a")
    _tiny(tmp_path / "b", lr=5e-4, news_repeat=1)
    bad = CliRunner().invoke(main, ["interpolate", str(tmp_path / "a"), str(tmp_path / "b"), "--out-dir",
                                    str(tmp_path / "m"), "--alphas", "0.5,1"])
    assert bad.exit_code == 2 and "first alpha must be 0" in bad.output
    res = CliRunner().invoke(main, ["interpolate", str(tmp_path / "a"), str(tmp_path / "b"), "--out-dir",
                                    str(tmp_path / "mix"), "--alphas", "0,1", "--guard", "floors",
                                    "--max-tweet-drop", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [c["alpha"] for c in out["candidates"]] == [0.0, 1.0]
    start, tuned = out["candidates"]
    floors_ok = (tuned["tweet_topic"]["accuracy"] >= start["tweet_topic"]["accuracy"]
                 and all(tuned["tweet_sentiment"][m] >= start["tweet_sentiment"][m] for m in ("accuracy", "macro_f1")))
    assert tuned["ok"] == floors_ok  # topic macro-F1 is not guarded
    assert read_recipe(tmp_path / "mix")["interpolation"]["guard"] == list(GUARD_FLOORS)


def test_choose_release_guards_the_exported_release_against_the_release_in_force(tmp_path):
    """Blends are exported (int8, decision rule fitted under the same reference) and judged as shipped."""
    from finpulse.models.export import ARTIFACT_DIR
    from finpulse.models.manifest import load_manifest
    from finpulse.models.release import RELEASE_GUARD, choose_release, within_guard

    _tiny(tmp_path / "a")
    _tiny(tmp_path / "b", lr=5e-4, news_repeat=1)
    # a tiny model is far worse than the shipped one on tweets: within no allowance of it, nothing written
    refused = choose_release(tmp_path / "a", tmp_path / "b", tmp_path / "none", reference=ARTIFACT_DIR,
                             version="v-none", alphas=(1.0,), max_drop=0.005, work_dir=tmp_path / "w0")
    assert refused["alpha"] is None and not (tmp_path / "none").exists()
    cand = refused["candidates"][0]
    assert not cand["ok"] and not within_guard(cand["tweet"], refused["reference"]["tweet"], RELEASE_GUARD, 0.005)
    # the decision rule was fitted against the reference's tweet dev figures, on the same slice
    ref_sent = refused["reference"]["tweet"]["sentiment"]
    assert cand["decision"]["guard_reference"]["tweet_dev_sentiment"] == {
        k: round(ref_sent[k], 4) for k in ("accuracy", "macro_f1")}
    # an allowance wide enough for anything: the release is written, verifies and records the choice
    res = choose_release(tmp_path / "a", tmp_path / "b", tmp_path / "rel", reference=ARTIFACT_DIR,
                         version="v-rel", alphas=(0.5,), max_drop=1.0, work_dir=tmp_path / "w1")
    assert res["alpha"] == 0.5
    manifest = load_manifest(tmp_path / "rel")  # sha256 of every file checked
    assert manifest["version"] == "v-rel"
    sel = manifest["selection"]
    assert sel["alpha"] == 0.5 and sel["reference_version"] == load_manifest(ARTIFACT_DIR)["version"]
    assert sel["news_dev"] == res["candidates"][0]["news"] and sel["guard"] == list(RELEASE_GUARD)


def _encode(texts):
    from finpulse.models.network import base_encoder_dir
    from finpulse.models.normalize import normalize_text
    from finpulse.models.tokenize import encode_batch, load_tokenizer

    ids, mask, _ = encode_batch(load_tokenizer(base_encoder_dir() / "tokenizer.json", 24),
                                [normalize_text(t) for t in texts])
    return torch.from_numpy(ids), torch.from_numpy(mask)


def test_style_heads_train_apart_and_the_gate_picks_between_them(tmp_path):
    from finpulse.models.network import load_checkpoint, mix_by_style

    _tiny(tmp_path / "s", news_repeat=2, headline_style=0.5, style_heads=True, lr=5e-4)
    assert json.loads((tmp_path / "s" / "recipe.json").read_text())["style_heads"] is True
    w = torch.load(tmp_path / "s" / "weights.pt", weights_only=True)
    # the news heads started as copies of the tweet heads; they learn from other rows, so they part
    assert not torch.equal(w["news_sentiment_head.weight"], w["sentiment_head.weight"])
    assert not torch.equal(w["news_topic_head.weight"], w["topic_head.weight"])
    assert w["style_gate.weight"].abs().sum() > 0  # the gate started at zero and was fitted
    history = json.loads((tmp_path / "s" / "history.json").read_text())["history"]
    assert history[0]["style_gate"]["news"] > 0 and history[0]["style_gate"]["train_accuracy"] > 0.5
    model = load_checkpoint(tmp_path / "s")
    ids, mask = _encode(["$TSLA to the moon!!", "Regional lender shut down by regulators after deposit run"])
    with torch.no_grad():
        heads = model.all_heads(ids, mask)
        topic, sentiment = model(ids, mask)
    assert torch.allclose(topic, mix_by_style(heads)[0]) and torch.allclose(sentiment, mix_by_style(heads)[1])
    # a gate sure of "tweet" gives the tweet heads' logits, sure of "news" the news heads'
    for style, prefix in ((-60.0, ""), (60.0, "news_")):
        t, s = mix_by_style({**heads, "style": torch.full_like(heads["style"], style)})
        assert torch.allclose(t, heads[prefix + "topic"]) and torch.allclose(s, heads[prefix + "sentiment"])


def test_a_one_head_checkpoint_continues_with_style_heads_copied_from_its_heads(tmp_path):
    _tiny(tmp_path / "one")
    _tiny(tmp_path / "two", init_from=str(tmp_path / "one"), style_heads=True, news_repeat=1, lr=0.0)
    one = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)
    for task in ("topic", "sentiment"):  # nothing learnt at lr 0: both heads are the checkpoint's head
        assert torch.equal(two[f"news_{task}_head.weight"], one[f"{task}_head.weight"])
        assert torch.equal(two[f"{task}_head.weight"], one[f"{task}_head.weight"])
    # the gate is fitted after the epoch (not learnt by gradient): recorded with the epoch
    gate = json.loads((tmp_path / "two" / "history.json").read_text())["history"][0]["style_gate"]
    assert gate["tweets"] > 0 and gate["news"] > 0
    with pytest.raises(ValueError, match="has style heads"):
        _tiny(tmp_path / "back", init_from=str(tmp_path / "two"))
    with pytest.raises(ValueError, match="rdrop"):
        _tiny(tmp_path / "rd", style_heads=True, news_repeat=1, rdrop_weight=1.0)
    with pytest.raises(ValueError, match="news_repeat"):
        _tiny(tmp_path / "nn", style_heads=True)


def test_with_style_heads_puts_a_one_head_state_in_style_head_form():
    from transformers import BertConfig

    from finpulse.models.network import MultiTaskClassifier, with_style_heads

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    one = MultiTaskClassifier(config, 4, 3).state_dict()
    styled = MultiTaskClassifier(config, 4, 3, style_heads=True).state_dict()
    out = with_style_heads(one, styled)
    assert set(out) == set(styled)
    assert torch.equal(out["news_topic_head.weight"], one["topic_head.weight"])
    assert torch.equal(out["news_sentiment_head.bias"], one["sentiment_head.bias"])
    assert torch.equal(out["style_gate.weight"], styled["style_gate.weight"])
    assert with_style_heads(styled, styled) is styled


def test_a_style_head_candidate_blends_with_a_one_head_release(tmp_path):
    """The release path with a style-head candidate: blended, exported as it ships, recorded."""
    from finpulse.models.export import ARTIFACT_DIR
    from finpulse.models.manifest import load_manifest
    from finpulse.models.release import choose_release

    _tiny(tmp_path / "a")
    _tiny(tmp_path / "b", lr=5e-4, news_repeat=1, style_heads=True)
    res = choose_release(tmp_path / "a", tmp_path / "b", tmp_path / "rel", reference=ARTIFACT_DIR,
                         version="v-style", alphas=(0.5,), max_drop=1.0, work_dir=tmp_path / "w")
    assert res["alpha"] == 0.5
    manifest = load_manifest(tmp_path / "rel")
    assert manifest["recipe"]["style_heads"] is True
    blend = torch.load(tmp_path / "w" / "alpha-0.500" / "ckpt" / "weights.pt", weights_only=True)
    a = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    # the release's one head is the start of both heads' paths; the gate is the candidate's
    assert torch.allclose(blend["news_sentiment_head.weight"],
                          0.5 * a["sentiment_head.weight"] + 0.5 * b["news_sentiment_head.weight"])
    assert torch.equal(blend["style_gate.weight"], b["style_gate.weight"])


def test_train_cli_passes_style_heads_through():
    from click.testing import CliRunner

    from finpulse.cli import main

    res = CliRunner().invoke(main, ["train", "--style-heads", "--limit", "8", "--out-dir", "unused"])
    # the flag reaches the trainer, which refuses style heads without the news-style training split
    assert res.exit_code != 0 and "news_repeat" in str(res.exception)
