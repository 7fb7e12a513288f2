"""Model versions side by side, the shared version in force, promotion, rollback and shadow counts."""

from __future__ import annotations

import json

import pytest

from finpulse.models import Classifier
from finpulse.models.exceptions import ManifestError, ModelVersionError
from finpulse.models.lifecycle import ModelControl, compare
from finpulse.models.registry import ModelRegistry

from .model_versions import make_version

BASE = Classifier(device="cpu", verify=False).model_version


def test_registry_lists_the_base_and_the_directory_and_refuses_corrupt_or_existing(tmp_path):
    reg = ModelRegistry(tmp_path / "models", bundled_dir=tmp_path / "no-bundled")
    assert [v.version for v in reg.versions()] == [BASE]  # no model directory yet: the shipped model only
    src = make_version(tmp_path / "exported", "v-b")
    added = reg.add(src)
    assert added.path == tmp_path / "models" / "v-b" and not added.base
    assert [(v.version, v.base) for v in reg.versions()] == [(BASE, True), ("v-b", False)]
    with pytest.raises(ModelVersionError, match="immutable"):
        reg.add(src)
    with pytest.raises(ModelVersionError, match="no model version 'nope'"):
        reg.get("nope")
    with open(added.path / "model.int8.onnx", "r+b") as fh:  # one flipped byte
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        reg.get("v-b")
    assert reg.get(BASE).base  # the shipped model is always there, read from the package
    kept = reg.add(reg.base().path)  # keep the base for a rollback after an upgrade changes it
    assert kept.base and [v.version for v in reg.versions()].count(BASE) == 1
    assert (tmp_path / "models" / BASE / "manifest.json").is_file()


async def test_promote_rollback_and_events(redis_client):
    ctl = ModelControl(redis_client, "t", BASE)
    assert await ctl.state() == (BASE, None)
    with pytest.raises(ModelVersionError, match="nothing to roll back"):
        await ctl.rollback()
    ev = await ctl.promote("v-b", by="ops", reason="better on news")
    assert (ev["from"], ev["to"]) == (BASE, "v-b")
    with pytest.raises(ModelVersionError, match="in force already"):
        await ctl.promote("v-b")
    await ctl.promote("v-c")
    assert await ctl.in_force() == "v-c"
    back = await ctl.rollback(by="ops", reason="regression")
    assert (back["from"], back["to"]) == ("v-c", "v-b") and await ctl.in_force() == "v-b"
    assert (await ctl.rollback())["to"] == BASE and await ctl.in_force() == BASE
    events = await ctl.events()
    assert [(e["action"], e["from"], e["to"]) for e in events] == [
        ("rollback", "v-b", BASE), ("rollback", "v-c", "v-b"), ("promote", "v-b", "v-c"), ("promote", BASE, "v-b")]
    assert events[-1]["by"] == "ops" and events[-1]["reason"] == "better on news"
    other = ModelControl(redis_client, "other-namespace", BASE)
    await other.promote("v-c")
    assert await ctl.in_force() == BASE  # namespaces (live, backtests) do not share the setting


async def test_shadow_agreement_is_counted(redis_client):
    ctl = ModelControl(redis_client, "t", BASE)
    await ctl.set_shadow("v-b")
    assert await ctl.state() == (BASE, "v-b")
    a = [{"topic": "Macro", "sentiment": "neutral"}, {"topic": "Earnings", "sentiment": "negative"},
         {"error": "empty"}]
    b = [{"topic": "Macro", "sentiment": "negative"}, {"topic": "Earnings", "sentiment": "negative"},
         {"error": "empty"}]
    counts = compare(a, b)
    assert counts == {"n": 2, "topic": 2, "sentiment": 1, "s:neutral|negative": 1, "s:negative|negative": 1}
    await ctl.record_agreement("v-b", BASE, counts)
    await ctl.record_agreement("v-b", BASE, counts)
    rep = await ctl.agreement("v-b", BASE)
    assert rep["n"] == 4 and rep["topic_agreement"] == 1.0 and rep["sentiment_agreement"] == 0.5
    assert rep["sentiment_pairs"] == {"negative|negative": 2, "neutral|negative": 2}
    await ctl.set_shadow(None)
    assert await ctl.state() == (BASE, None)


def test_decision_rule_in_the_manifest_decides_the_sentiment(tmp_path):
    texts = ["Shares of Halvorsen Foods fell after the company cut its outlook",
             "Fed keeps rates unchanged", "Acme Corp to hold annual meeting on June 3"]
    plain = Classifier(device="cpu")
    biased = Classifier(make_version(tmp_path, "neg", sentiment_bias=[8.0, 0.0, 0.0]), device="cpu")
    assert [r["sentiment"] for r in biased.classify(texts)] == ["negative"] * 3
    p, b = plain.classify(texts), biased.classify(texts)
    # the bias decides the label only: probabilities, scores and topics are the model's
    assert [x["sentiment_probs"] for x in p] == [x["sentiment_probs"] for x in b]
    assert [x["topic"] for x in p] == [x["topic"] for x in b]
    bad = make_version(tmp_path, "bad")
    m = json.loads((bad / "manifest.json").read_text())
    m["decision"] = {"sentiment_bias": [1.0]}
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="sentiment_bias"):
        Classifier(bad, device="cpu")


def test_the_other_committed_releases_are_intact_and_promotable(tmp_path):
    """``models/bundled/<version>`` (the releases committed beside the default; the superseded
    ``models/releases/`` copy lives in git history only): each verifies, adds to a model directory under
    its own name and scores with labels independent of the batch (static scales)."""
    from finpulse.models.manifest import BUNDLED_DIR

    root = BUNDLED_DIR
    dirs = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
    assert dirs, "no earlier release committed"
    texts = ["Insurer posts surprise quarterly loss", "Chipmaker raises full-year outlook",
             "Central bank holds rates steady", "Airline cuts 4,000 jobs as bookings slump"]
    reg = ModelRegistry(tmp_path / "models")
    for src in dirs:
        added = reg.add(src)
        assert added.version == src.name and not added.base and added.version != BASE
        clf = Classifier(reg.get(added.version).path, device="cpu", verify=False)
        together = clf.classify(texts)
        alone = [clf.classify([t])[0] for t in texts]
        assert [(r["topic"], r["sentiment"]) for r in together] == [(r["topic"], r["sentiment"]) for r in alone]
        assert all(r["model_version"] == added.version for r in together)


def test_the_bundled_news_first_release_is_promotable_as_shipped_and_reads_news(tmp_path):
    """``models/bundled/<version>`` ships in the wheel: listed after the base, verified on ``get``, never
    copied; on the held-out news set it reads polar news far better than the base (docs/model-card.md)."""
    import csv

    from finpulse.models.data import NEWS_TEST_FILE
    from finpulse.models.manifest import BUNDLED_DIR

    reg = ModelRegistry(tmp_path / "models")
    bundled = [v for v in reg.versions() if v.bundled]
    assert [v.version for v in bundled] == sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir())
    news = reg.get("minilm-news-2026.11.29")
    assert news.bundled and not news.base and news.path.parent == BUNDLED_DIR and "news-first" in news.summary()["purpose"]
    # kept in the model directory (before an upgrade that might drop it): the copy is returned, listed once
    kept = reg.add(news.path)
    assert kept.path == (tmp_path / "models" / news.version).resolve() and not kept.bundled
    assert [v.version for v in reg.versions()].count(news.version) == 1
    other = make_version(tmp_path / "exported", news.version)  # the default's files under the same version
    with pytest.raises(ModelVersionError, match="immutable"):
        ModelRegistry(tmp_path / "models-2").add(other)
    with open(NEWS_TEST_FILE, newline="", encoding="utf-8") as fh:
        polar = [r for r in csv.DictReader(fh) if r["sentiment"] != "neutral"]
    texts = [r["headline"] for r in polar]

    def sign_accuracy(clf: Classifier) -> float:
        return sum(p["sentiment"] == r["sentiment"] for p, r in zip(clf.classify(texts), polar, strict=True)) / len(polar)

    news_clf = Classifier(news.path, device="cpu", verify=False)
    base_acc, news_acc = sign_accuracy(Classifier(device="cpu", verify=False)), sign_accuracy(news_clf)
    assert news_acc >= 0.85 and news_acc >= base_acc + 0.15, (base_acc, news_acc)
    together = news_clf.classify(texts[:40])
    assert [(r["topic"], r["sentiment"]) for r in together] == [
        (r["topic"], r["sentiment"]) for r in (news_clf.classify([t])[0] for t in texts[:40])]
