"""Weight averaging of fine-tuned checkpoints ("model soup"), chosen on the dev slice.

Checkpoints fine-tuned from the same pre-trained encoder (and, with the same seed, the same head
initialisation) usually sit in one basin of the loss, so the element-wise mean of their weights is
a single model of the same size and speed that is often better than each of them (Wortsman et
al., 2022, "Model soups"). :func:`greedy_soup` follows their greedy recipe: rank the checkpoints by
their own dev score, start from the best, and keep each further checkpoint only if averaging it in
does not lower the soup's dev score.

Every choice is made on the **dev slice** that the trainer holds out of the ``*_train.csv``
splits, never on the upstream validation splits. So that no ingredient has trained on the slice
that judges the soup, all checkpoints must have been trained with the same ``dev_fraction``,
``seed`` and ``limit`` (hence the same dev slice); :func:`check_compatible` refuses others.

``finpulse soup CKPT CKPT ... --out-dir DIR`` calls :func:`greedy_soup`. Needs the ``train`` extra.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .exceptions import SoupError
from .network import read_recipe

log = logging.getLogger(__name__)

#: recipe fields that must be equal in every ingredient: architecture, text pipeline, dev slice.
MUST_MATCH = ("base_model", "pooling", "normalization_version", "n_topics", "n_sentiments",
              "dev_fraction", "seed", "limit", "max_length")


def check_compatible(recipes: Mapping[str, dict]) -> None:
    """Raise :class:`SoupError` unless all recipes share :data:`MUST_MATCH` (same dev slice too).

    :param recipes: checkpoint name -> its recipe.
    """
    if not recipes:
        raise SoupError("no checkpoints given")
    names = list(recipes)
    first = recipes[names[0]]
    for name in names[1:]:
        diff = [k for k in MUST_MATCH if recipes[name].get(k) != first.get(k)]
        if diff:
            detail = ", ".join(f"{k}: {first.get(k)!r} vs {recipes[name].get(k)!r}" for k in diff)
            raise SoupError(f"{name} cannot be averaged with {names[0]} ({detail}); a soup needs one "
                            "architecture and one dev slice (same dev_fraction, seed and limit)")


def average_state_dicts(state_dicts: Sequence[Mapping]) -> dict:
    """Element-wise mean of state dicts with the same keys and shapes (computed in float32).

    :param state_dicts: ``model.state_dict()`` of each ingredient.
    :returns: a new state dict, each tensor cast back to the first ingredient's dtype.
    """
    if not state_dicts:
        raise SoupError("nothing to average")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], start=1):
        if list(sd) != keys:
            raise SoupError(f"ingredient {i} has different parameters than ingredient 0")
        for k in keys:
            if sd[k].shape != state_dicts[0][k].shape:
                raise SoupError(f"ingredient {i}: {k} has shape {tuple(sd[k].shape)}, "
                                f"expected {tuple(state_dicts[0][k].shape)}")
    out = {}
    for k in keys:
        first = state_dicts[0][k]
        if not first.is_floating_point():
            out[k] = first.clone()  # integer buffers (position ids): identical by construction
            continue
        acc = first.float().clone()
        for sd in state_dicts[1:]:
            acc += sd[k].float()
        out[k] = (acc / len(state_dicts)).to(first.dtype)
    return out


def greedy_soup(checkpoints: Sequence[str | Path], out_dir: str | Path, *, threads: int = 0) -> dict:
    """Average the checkpoints greedily by dev score and write the soup as a checkpoint.

    :param checkpoints: checkpoint directories written by :func:`finpulse.models.train.train`.
    :param out_dir: where the soup's ``weights.pt``, ``config.json`` and ``recipe.json`` go; its
        recipe records every ingredient's recipe and dev score and which were kept.
    :param threads: torch CPU threads (0 = torch's default).
    :returns: the summary written into the recipe under ``"soup"``.
    """
    import torch

    from .network import base_encoder_dir, load_checkpoint, save_checkpoint
    from .tokenize import load_tokenizer
    from .train import dev_report, dev_score, train_dev_split

    if threads:
        torch.set_num_threads(threads)
    names = [str(c) for c in checkpoints]
    if len(set(names)) != len(names):
        raise SoupError("a checkpoint is listed twice")
    recipes = {n: read_recipe(n) for n in names}
    check_compatible(recipes)
    first = recipes[names[0]]
    _, dev_set = train_dev_split(first["dev_fraction"], first["seed"], first.get("limit"))
    tokenizer = load_tokenizer(base_encoder_dir() / "tokenizer.json", first["max_length"])

    models = {n: load_checkpoint(n) for n in names}
    states = {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in models.items()}
    model = models[names[0]]
    reports = {n: dev_report(models[n].eval(), tokenizer, dev_set) for n in names}
    scores = {n: dev_score(r) for n, r in reports.items()}
    ranked = sorted(names, key=lambda n: -scores[n])
    for n in ranked:
        log.info("ingredient %s dev score %.4f", n, scores[n])

    kept = [ranked[0]]
    best_report, best = reports[ranked[0]], scores[ranked[0]]
    trials: list[dict[str, Any]] = []
    for n in ranked[1:]:
        model.load_state_dict(average_state_dicts([states[k] for k in kept + [n]]))
        rep = dev_report(model.eval(), tokenizer, dev_set)
        score = dev_score(rep)
        accept = score >= best
        trials.append({"added": n, "dev_score": score, "kept": accept})
        log.info("soup %s + %s: dev score %.4f (%s)", kept, n, score, "kept" if accept else "dropped")
        if accept:
            kept.append(n)
            best, best_report = score, rep
    model.load_state_dict(average_state_dicts([states[k] for k in kept]))
    model.eval()
    summary = {
        "method": "greedy uniform weight average (Wortsman et al. 2022), ranked and judged on the dev slice",
        "ingredients": [{"checkpoint": Path(n).name, "dev_score": scores[n], "dev": reports[n],
                         "kept": n in kept, "recipe": recipes[n]} for n in ranked],
        "trials": [{**t, "added": Path(t["added"]).name} for t in trials],
        "kept": [Path(n).name for n in kept],
        "dev": best_report,
        "dev_score": best,
    }
    recipe = {k: first[k] for k in MUST_MATCH if k in first}
    recipe.update({"dropout": first.get("dropout", 0.1), "train_examples": first.get("train_examples"),
                   "dev_examples": first.get("dev_examples"), "soup": summary})
    save_checkpoint(model, out_dir, recipe)
    return summary


#: tweet dev metrics guarded by :func:`interpolate`
GUARD_ALL = ("topic.accuracy", "topic.macro_f1", "sentiment.accuracy", "sentiment.macro_f1")
GUARD_FLOORS = ("topic.accuracy", "sentiment.accuracy", "sentiment.macro_f1")


def interpolate(start: str | Path, tuned: str | Path, out_dir: str | Path, *,
                alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0),
                max_tweet_drop: float = 0.005, guard: Sequence[str] = GUARD_ALL,
                threads: int = 0) -> dict[str, Any]:
    """Weight-space interpolation between a model and its fine-tuned successor (WiSE-FT).

    ``(1 - alpha) * start + alpha * tuned``, element-wise (Wortsman et al., 2022, "Robust fine-tuning
    of zero-shot models"): the fine-tune teaches something new (here: news headlines) and costs some
    of what ``start`` did well (tweets); points between the two often keep most of both. Every
    ``alpha`` is judged **with int8 weights** (:mod:`finpulse.models.qat`, what ships) on dev data
    only: the tweet dev slice held out of the training splits and the news-style ``dev`` split. The
    chosen ``alpha`` is the one with the best news dev score (mean macro-F1 of the heads) whose tweet
    dev slice metrics named in ``guard`` each stay within ``max_tweet_drop`` of ``start``'s;
    ``start`` itself (``alpha`` 0) if none does.

    :param start: checkpoint before the fine-tune (e.g. one rebuilt by ``finpulse model checkpoint``).
    :param tuned: the fine-tuned checkpoint (same architecture and dev slice).
    :param out_dir: where the chosen interpolation is written as a checkpoint.
    :param alphas: the interpolation weights tried.
    :param max_tweet_drop: the guard on the tweet dev slice.
    :param guard: the guarded tweet dev metrics, ``"<head>.<metric>"``: :data:`GUARD_ALL` (both heads'
        accuracy and macro-F1) or :data:`GUARD_FLOORS` (the metrics the model's release floors are set
        on: topic accuracy, sentiment accuracy and macro-F1; the 20-class topic macro-F1 of a
        1,362-headline slice moves by points with a few rare-class headlines).
    :param threads: torch CPU threads (0 = default).
    :returns: ``{"alpha", "candidates": [{"alpha", "tweet_dev", "news_dev", "news_score", "ok"}]}``.
    """
    import torch

    from .data import load_news
    from .network import load_checkpoint, save_checkpoint
    from .qat import fake_quantize_linear_weights
    from .tokenize import load_tokenizer
    from .train import dev_report, dev_score, train_dev_split

    if threads:
        torch.set_num_threads(threads)
    recipes = {str(start): read_recipe(start), str(tuned): read_recipe(tuned)}
    check_compatible(recipes)
    r = recipes[str(tuned)]
    _train, tweet_dev = train_dev_split(r["dev_fraction"], r["seed"], r["limit"])
    news_dev = load_news("dev")
    from .network import base_encoder_dir

    tok = load_tokenizer(base_encoder_dir() / "tokenizer.json", 128)
    a_state = load_checkpoint(start).state_dict()
    b_state = load_checkpoint(tuned).state_dict()
    candidates: list[dict[str, Any]] = []
    base_tweet: dict | None = None
    for alpha in alphas:
        model = load_checkpoint(tuned)
        model.load_state_dict({k: (1 - alpha) * a_state[k] + alpha * b_state[k]
                               if a_state[k].is_floating_point() else b_state[k] for k in b_state})
        fake_quantize_linear_weights(model)
        tweet, news = dev_report(model, tok, tweet_dev), dev_report(model, tok, news_dev)
        if base_tweet is None:
            base_tweet = tweet
        ok = all(tweet[t][m] >= base_tweet[t][m] - max_tweet_drop
                 for t, m in (g.split(".", 1) for g in guard))
        candidates.append({"alpha": alpha, "tweet_dev": tweet, "news_dev": news, "news_score": dev_score(news),
                           "ok": ok})
        log.info("alpha %.3f: tweet %s news %s ok=%s", alpha, tweet, news, ok)
    best = max((c for c in candidates if c["ok"]), key=lambda c: c["news_score"])
    alpha = best["alpha"]
    model = load_checkpoint(tuned)
    model.load_state_dict({k: (1 - alpha) * a_state[k] + alpha * b_state[k]
                           if a_state[k].is_floating_point() else b_state[k] for k in b_state})
    save_checkpoint(model, out_dir, {**r, "interpolation": {"start": str(start), "tuned": str(tuned),
                                                            "alpha": alpha, "max_tweet_drop": max_tweet_drop,
                                                            "guard": list(guard)},
                                     "dev": best["tweet_dev"], "news_dev": best["news_dev"]})
    return {"alpha": alpha, "candidates": candidates}
