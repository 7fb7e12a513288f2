"""The shipped model: manifest checks, batch edge cases, export parity, the fp16 rebuild."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from finpulse.models import Classifier, InvalidInputError, ManifestError
from finpulse.models.manifest import DEFAULT_MODEL_DIR, load_manifest

MODEL_DIR = Path(os.environ.get("FINPULSE_MODEL_DIR") or DEFAULT_MODEL_DIR)


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier(MODEL_DIR, device="cpu")


def test_manifest_lists_every_file_with_sha256():
    m = load_manifest(MODEL_DIR)
    assert {"cpu", "tokenizer"} <= set(m["files"])
    for entry in m["files"].values():
        assert len(entry["sha256"]) == 64
    assert m["opset"] >= 17 and m["outputs"] == ["topic_logits", "sentiment_logits"]
    from finpulse.models.manifest import BUNDLED_DIR

    # what the wheel carries: the default model and the bundled versions
    files = [f for f in MODEL_DIR.iterdir() if f.is_file()] + [f for f in BUNDLED_DIR.rglob("*") if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    assert total <= 60 * 1024 * 1024, "the model files in the wheel must stay under 60 MB"


def test_wrong_sha256_is_refused_with_a_clear_message(tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(MODEL_DIR, bad, ignore=shutil.ignore_patterns("checkpoint"))
    with open(bad / "tokenizer.json", "ab") as fh:
        fh.write(b" ")
    with pytest.raises(ManifestError, match=r"sha256 mismatch for tokenizer\.json"):
        Classifier(bad)


def test_missing_manifest_and_label_drift_are_refused(tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_manifest(tmp_path)
    bad = tmp_path / "model"
    shutil.copytree(MODEL_DIR, bad, ignore=shutil.ignore_patterns("checkpoint"))
    m = json.loads((bad / "manifest.json").read_text())
    m["labels"]["sentiment"] = ["positive", "negative", "neutral"]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="label maps"):
        load_manifest(bad)


def test_result_fields_and_scores(clf):
    (r,) = clf.classify(["Fed raises rates by 75 basis points"])
    assert set(r) >= {"topic", "topic_score", "topics_top3", "sentiment", "sentiment_probs", "sentiment_score",
                      "model_version"}
    assert len(r["topics_top3"]) == 3 and r["topics_top3"][0]["topic"] == r["topic"]
    assert r["topics_top3"][0]["score"] >= r["topics_top3"][1]["score"] >= r["topics_top3"][2]["score"]
    assert sum(r["sentiment_probs"].values()) == pytest.approx(1.0, abs=1e-4)
    p = r["sentiment_probs"]
    assert r["sentiment_score"] == pytest.approx(p["positive"] - p["negative"], abs=1e-5)
    assert r["model_version"] == clf.model_version


def test_batch_edge_cases_never_crash_the_batch(clf):
    texts = ["Oil slumps as OPEC dithers", "", "   \n\t", None, 42, "https://t.co/abc", "Apple " * 5000,
             "Gold rallies"]
    out = clf.classify(texts)
    assert len(out) == len(texts)
    assert "error" in out[1] and "error" in out[2] and "error" in out[5]
    assert "string" in out[3]["error"] and "string" in out[4]["error"]
    for i in (0, 6, 7):  # over-long input is truncated (documented), not refused
        assert "topic" in out[i]
    with pytest.raises(InvalidInputError):
        clf.classify("a single string is a mistake")
    assert clf.classify([]) == []


def test_labels_and_scores_do_not_depend_on_the_batch(clf):
    import random

    from finpulse.models.data import load_split

    # static activation scales (models/static_quant.py): a headline's labels are the same alone, in any
    # batch, in any order; a backtest reproduces live labels (docs/backtest.md, "Determinism")
    texts = ["Fed hikes", "Apple beats on revenue and raises its full-year guidance as iPhone demand holds",
             "Oil slumps", "Treasury yields climb to a 15-year high after hot CPI print"] * 3
    texts += [e.text for e in load_split("topic", "valid")][:300]
    alone = [clf.classify([t])[0] for t in texts]
    for batch, seed in ((32, 1), (7, 2), (64, 3)):
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        got: dict[int, dict] = {}
        for i in range(0, len(order), batch):
            chunk = order[i:i + batch]
            for j, r in zip(chunk, clf.classify([texts[k] for k in chunk]), strict=True):
                got[j] = r
        for i, a in enumerate(alone):
            b = got[i]
            assert (a["topic"], a["sentiment"]) == (b["topic"], b["sentiment"]), texts[i]
            assert a["sentiment_score"] == pytest.approx(b["sentiment_score"], abs=1e-4)
            assert a["topic_score"] == pytest.approx(b["topic_score"], abs=1e-4)


def test_fp16_variant_is_rebuilt_from_the_int8_file(tmp_path, monkeypatch, clf):
    import finpulse.models.gpu as gpu

    monkeypatch.setattr(gpu, "CACHE_DIR", tmp_path)
    fp16 = Classifier(MODEL_DIR, device="cpu", variant="fp16")  # the fp16 graph also runs on CPU
    assert (tmp_path / f"{fp16.manifest['files']['cpu']['sha256'][:24]}.fp16.onnx").exists()
    from finpulse.models.data import load_split

    texts = [e.text for e in load_split("sentiment", "valid")[:256]]
    t8, s8 = clf.logits(texts)
    t16, s16 = fp16.logits(texts)
    # the fp16 graph has the int8 weights but float activations: differences are the int8 model's
    # activation-quantisation noise (logits of the trained model span about +-8), so labels agree
    # on most headlines, not all (borderline ones flip; measured 94.5 % / 98.4 % here, 97.6 % /
    # 97.7 % int8 vs fp32 over the validation splits); a wrongly rebuilt graph agrees on few
    assert (t8.argmax(1) == t16.argmax(1)).mean() >= 0.9 and (s8.argmax(1) == s16.argmax(1)).mean() >= 0.9
    assert np.abs(t8 - t16).mean() < 0.2 and np.abs(s8 - s16).mean() < 0.2
    assert np.abs(t8 - t16).max() < 2.0 and np.abs(s8 - s16).max() < 2.0


torch = pytest.importorskip("torch", reason="the train extra is needed for the export parity test")


def test_onnx_fp32_export_matches_pytorch(tmp_path):
    """The export path used for the shipped model: ONNX fp32 logits == PyTorch logits (< 1e-3)."""
    from finpulse.models.export import export_fp32
    from finpulse.models.network import MultiTaskClassifier, base_encoder_dir, save_checkpoint
    from finpulse.models.normalize import normalize_text
    from finpulse.models.tokenize import encode_batch, load_tokenizer

    torch.manual_seed(0)
    model = MultiTaskClassifier.from_base(base_encoder_dir(), 20, 3).eval()
    save_checkpoint(model, tmp_path / "ckpt", {"n_topics": 20, "n_sentiments": 3})
    onnx_path = export_fp32(tmp_path / "ckpt", tmp_path / "model.fp32.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tok = load_tokenizer(base_encoder_dir() / "tokenizer.json", 128)
    texts = ["$AAPL beats estimates", "Fed hikes rates by 75bp as inflation stays hot https://t.co/x",
             "Oil", "Goldman Sachs cuts its S&P 500 target, citing weaker margins and slowing buybacks " * 3]
    ids, mask, _ = encode_batch(tok, [normalize_text(t) for t in texts])
    with torch.no_grad():
        pt_t, pt_s = model(torch.from_numpy(ids), torch.from_numpy(mask))
    ox_t, ox_s = sess.run(None, {"input_ids": ids, "attention_mask": mask})
    assert np.abs(pt_t.numpy() - ox_t).max() < 1e-3
    assert np.abs(pt_s.numpy() - ox_s).max() < 1e-3


def test_style_head_export_matches_pytorch(tmp_path):
    """A style-head network exports as one graph: the gate and both heads' mix are in the ONNX model."""
    from finpulse.models.export import export_fp32
    from finpulse.models.network import MultiTaskClassifier, base_encoder_dir, save_checkpoint
    from finpulse.models.normalize import normalize_text
    from finpulse.models.tokenize import encode_batch, load_tokenizer

    torch.manual_seed(1)
    model = MultiTaskClassifier.from_base(base_encoder_dir(), 20, 3, style_heads=True).eval()
    with torch.no_grad():  # a gate that is not 0.5 everywhere and news heads unlike the tweet heads
        for module in (model.style_gate, model.news_topic_head, model.news_sentiment_head):
            module.weight.normal_(0, 0.2)
    save_checkpoint(model, tmp_path / "ckpt", {"n_topics": 20, "n_sentiments": 3, "style_heads": True})
    onnx_path = export_fp32(tmp_path / "ckpt", tmp_path / "model.fp32.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tok = load_tokenizer(base_encoder_dir() / "tokenizer.json", 128)
    texts = ["$AAPL beats estimates", "Regulators close a regional lender after a run on deposits", "Oil"]
    ids, mask, _ = encode_batch(tok, [normalize_text(t) for t in texts])
    with torch.no_grad():
        pt_t, pt_s = model(torch.from_numpy(ids), torch.from_numpy(mask))
        gate = torch.sigmoid(model.all_heads(torch.from_numpy(ids), torch.from_numpy(mask))["style"])
    assert ((gate > 0.05) & (gate < 0.95)).any() or (gate.max() - gate.min()) > 0.01  # the mix matters
    ox_t, ox_s = sess.run(None, {"input_ids": ids, "attention_mask": mask})
    assert np.abs(pt_t.numpy() - ox_t).max() < 1e-3
    assert np.abs(pt_s.numpy() - ox_s).max() < 1e-3
