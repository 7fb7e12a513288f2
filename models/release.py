"""Choosing a release: one tweet guard for the whole release, judged on the exported model.

A new release is made of two choices on dev data: how far to move from the release in force towards a
news fine-tune (the weight interpolation's ``alpha``, :mod:`finpulse.models.soup`) and the decision rule
(temperatures and the neutral bias, :mod:`finpulse.models.calibration`). Guarding each choice with its
own half-point allowance lets the two allowances add up: ``minilm-mt-2026.11.29.2`` passed both guards
and still lost 0.7 points of tweet dev sentiment accuracy against the release in force (0.8729 ->
0.8663), then missed the upstream floor. Here the allowance is counted **once**, from the release in
force (``reference``), on what ships: every ``alpha`` is exported (int8, static scales, its decision
rule fitted under the same reference guard) and the exported model's labels on the tweet dev slice
must each stay within ``max_drop`` of the reference's on the guarded metrics. Of the ``alpha`` values
that pass, the one with the best news dev sentiment macro-F1 is chosen.

All figures are dev data: the tweet dev slice held out of the ``*_train.csv`` splits (the same slice
for the reference, so both checkpoints must share it) and the news-style ``dev`` split. The upstream
validation splits are never read here.

``finpulse choose-release START TUNED --reference MODEL_DIR --version V --out-dir DIR`` calls
:func:`choose_release`. Needs the ``train`` extra.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .exceptions import SoupError

log = logging.getLogger(__name__)

#: the tweet dev metrics a release is guarded on: those the upstream release floors are set on
RELEASE_GUARD = ("topic.accuracy", "sentiment.accuracy", "sentiment.macro_f1")


def within_guard(tweet: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]],
                 guard: Sequence[str] = RELEASE_GUARD, max_drop: float = 0.005) -> bool:
    """Whether every guarded tweet dev metric stays within ``max_drop`` of the reference's.

    :param tweet: the candidate's tweet dev figures (``{"topic": {"accuracy": ...}, ...}``).
    :param reference: the release in force's figures on the same slice.
    :param guard: ``"<head>.<metric>"`` names.
    :param max_drop: the allowance, counted once for the whole release.
    """
    return all(tweet[h][m] >= reference[h][m] - max_drop for h, m in (g.split(".", 1) for g in guard))


def choose_release(start: str | Path, tuned: str | Path, out_dir: str | Path, *, reference: str | Path,
                   version: str, alphas: Sequence[float] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
                   max_drop: float = 0.005, guard: Sequence[str] = RELEASE_GUARD,
                   work_dir: str | Path | None = None) -> dict[str, Any]:
    """Export ``(1 - alpha) * start + alpha * tuned`` for each ``alpha``; keep the best that passes.

    :param start: checkpoint of the release in force (e.g. rebuilt by ``finpulse model checkpoint``).
    :param tuned: the news fine-tune (same architecture and dev slice as ``start``).
    :param out_dir: where the chosen release is written (an exported model directory; a model directory's
        ``<version>`` folder adds it as a promotable version).
    :param reference: the exported release in force: the guard's reference.
    :param version: the version recorded in the chosen release's manifest.
    :param alphas: interpolation weights tried.
    :param max_drop: the allowance on each guarded tweet dev metric, for weights and decision rule together.
    :param guard: the guarded metrics (:data:`RELEASE_GUARD`).
    :param work_dir: where the blends and their exports go (default: next to ``out_dir``).
    :returns: ``{"alpha", "reference": figures, "candidates": [{"alpha", "tweet", "news", "decision", "ok"}]}``;
        ``alpha`` is ``None`` (and nothing is written) when no candidate passes. The chosen release's
        manifest records the choice under ``selection``.
    """
    from .data import load_news
    from .export import dev_figures, export
    from .network import load_checkpoint, read_recipe, save_checkpoint, with_style_heads
    from .soup import check_compatible
    from .train import train_dev_split

    recipes = {str(start): read_recipe(start), str(tuned): read_recipe(tuned)}
    check_compatible(recipes)
    r = recipes[str(tuned)]
    _train, tweet_dev = train_dev_split(r["dev_fraction"], r["seed"], r["limit"])
    news_dev = load_news("dev")
    ref = dev_figures(reference, tweet_dev, news_dev)
    log.info("reference %s: tweet %s news %s", reference, ref["tweet"], ref["news"])
    work = Path(work_dir) if work_dir else Path(out_dir).parent / f".{Path(out_dir).name}.work"
    b_state = load_checkpoint(tuned).state_dict()
    a_state = load_checkpoint(start).state_dict()
    if "style_gate.weight" in b_state:  # a one-head release and a style-head candidate: both heads start at its head
        a_state = with_style_heads(a_state, b_state)
    candidates: list[dict[str, Any]] = []
    for alpha in alphas:
        tag = f"alpha-{alpha:.3f}"
        model = load_checkpoint(tuned)
        model.load_state_dict({k: (1 - alpha) * a_state[k] + alpha * b_state[k]
                               if a_state[k].is_floating_point() else b_state[k] for k in b_state})
        save_checkpoint(model, work / tag / "ckpt", {**r, "interpolation": {
            "start": str(start), "tuned": str(tuned), "alpha": alpha, "max_tweet_drop": max_drop,
            "guard": list(guard), "reference": str(reference)}})
        manifest = export(work / tag / "ckpt", work / tag / "model", work / tag / "build", version=version,
                          reference_dir=reference, max_tweet_drop=max_drop)
        figs = dev_figures(work / tag / "model", tweet_dev, news_dev)
        ok = within_guard(figs["tweet"], ref["tweet"], guard, max_drop)
        candidates.append({"alpha": alpha, "tweet": figs["tweet"], "news": figs["news"],
                           "decision": manifest["decision"], "ok": ok})
        log.info("alpha %.3f: tweet %s news %s bias %s ok=%s", alpha, figs["tweet"], figs["news"],
                 manifest["decision"]["sentiment_bias"], ok)
    passing = [c for c in candidates if c["ok"]]
    result: dict[str, Any] = {"alpha": None, "reference": ref, "max_drop": max_drop, "guard": list(guard),
                              "candidates": candidates}
    if not passing:
        return result
    best = max(passing, key=lambda c: c["news"]["sentiment"]["macro_f1"])
    result["alpha"] = best["alpha"]
    src = work / f"alpha-{best['alpha']:.3f}" / "model"
    if Path(out_dir).exists():
        raise SoupError(f"{out_dir} exists; choose_release writes a new release directory")
    shutil.copytree(src, out_dir)
    manifest_path = Path(out_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["selection"] = {"alpha": best["alpha"], "alphas": list(alphas), "max_drop": max_drop,
                             "guard": list(guard), "reference_version": _version_of(reference),
                             "reference_tweet_dev": ref["tweet"], "tweet_dev": best["tweet"],
                             "news_dev": best["news"]}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _version_of(model_dir: str | Path) -> str:
    from .manifest import load_manifest

    return str(load_manifest(model_dir, verify=False).get("version"))
