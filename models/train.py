"""Multi-task fine-tuning of all-MiniLM-L6-v2 for topic and sentiment.

``finpulse train`` calls :func:`train`. Needs the ``train`` extra (torch, transformers).

Recipe (recorded in ``recipe.json`` and the manifest):

* both training CSVs are normalised with :func:`finpulse.models.normalize.normalize_text`, pooled and
  shuffled; each example carries the label of its own task and ``-100`` for the other, so one
  mixed batch trains both heads (cross-entropy with ``ignore_index``, losses summed);
* a stratified ``dev_fraction`` slice of *each training split* is held out for early stopping
  (the upstream ``*_valid.csv`` splits are never read here);
* AdamW, linear warm-up then linear decay, gradient clipping at 1.0, length-bucketed batches
  (examples of similar length batched together to cut padding), fixed seeds;
* optionally (``teacher``) knowledge distillation: a fine-tuned checkpoint's softened logits on
  every training text are extra targets for both heads (:func:`distillation_loss`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data import Example, load_news, load_split, stratified_holdout
from .headline_style import to_headline_style
from .labels import SENTIMENT_LABELS, TOPIC_LABELS
from .metrics import classification_report
from .normalize import NORMALIZATION_VERSION, normalize_text
from .tokenize import load_tokenizer

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class TrainConfig:
    """Hyper-parameters and paths of one training run.

    :param out_dir: where the best checkpoint is written.
    :param epochs: maximum number of passes over the training data.
    :param batch_size: examples per optimisation step.
    :param lr: peak learning rate.
    :param weight_decay: AdamW weight decay (not applied to biases and LayerNorm).
    :param warmup_ratio: share of steps spent warming the learning rate up.
    :param max_length: token limit during training (the runtime limit is in the manifest).
    :param dev_fraction: share of each training split held out for early stopping.
    :param patience: epochs without dev improvement before stopping.
    :param seed: seed for Python, numpy and torch.
    :param limit: if set, use only this many training examples per task (smoke tests).
    :param device: ``auto``, ``cpu`` or ``cuda``.
    :param threads: torch intra-op threads on CPU (0 = torch's default).
    :param init_from: start from this checkpoint instead of the base encoder (continued training).
    :param sentiment_weight: weight of the sentiment loss (the topic loss has weight 1).
    :param sentiment_class_weights: ``"balanced"`` weights sentiment classes by inverse frequency
        (helps macro-F1 on the rarer negative / positive classes); ``None`` = unweighted.
    :param freeze_word_embeddings: keep the 30522 x 384 token-embedding table fixed (a third of
        the weights; freezing it speeds CPU steps and guards rare tokens against drift).
    :param layer_lr_decay: layer-wise learning-rate decay: the heads train at ``lr``, encoder layer
        ``i`` (of ``L``) at ``lr * decay ** (L - i)``, the embeddings at ``lr * decay ** (L + 1)``;
        ``1.0`` = one rate for all.
    :param ema_decay: keep an exponential moving average of the weights (e.g. ``0.999``) and
        evaluate and save the averaged weights; ``0`` = off.
    :param label_smoothing: cross-entropy label smoothing for both heads.
    :param teacher: checkpoint of a fine-tuned model to distil from (``None`` = off). Its logits
        on every training text become soft targets for *both* heads, so the ~17k topic headlines
        also teach sentiment and the sentiment headlines teach topic (the teacher must have been
        trained with the same dev slice, else it would have seen the slice that judges this run).
        With news-style headlines in the training data (``news_repeat``), the soft targets apply to
        the tweets only (a tweet rewritten in headline style keeps its tweet's targets), so the
        teacher holds the tweet behaviour while the news labels teach the rest.
    :param distill_weight: weight of the distillation loss (added to the labelled cross-entropy).
    :param distill_temperature: softmax temperature of the distillation loss.
    :param base_encoder: encoder directory to start from instead of the shipped all-MiniLM-L6-v2,
        e.g. one adapted by ``finpulse adapt`` (:mod:`finpulse.models.adapt`); it must have held out the
        same dev slice.
    :param rdrop_weight: R-Drop consistency regularisation (Liang et al., 2021; ``0`` = off): each
        batch goes through the model twice with independent dropout, the cross-entropy is averaged
        over both passes, and ``rdrop_weight`` times the symmetric KL divergence between the two
        passes' predictions (:func:`consistency_loss`) is added, for *both* heads on every text, so
        the topic headlines regularise the sentiment head too. Doubles the cost of a step.
    :param news_repeat: add the ``train`` split of finpulse's news-style set (``data/news-dev``,
        :func:`~finpulse.models.data.load_news`) this many times to the training data (``0`` = off).
    :param headline_style: share of the tweets rewritten in headline style
        (:func:`~finpulse.models.headline_style.to_headline_style`), drawn afresh each epoch.
    :param news_select: select the epoch on the mean of the tweet dev slice's score and the score
        on the news-style ``dev`` split (both macro-F1 means), instead of the tweet slice alone.
    :param style_heads: give each task a second head for news-style text and a style gate
        (:class:`~finpulse.models.network.MultiTaskClassifier`). The tweet heads learn from the
        upstream tweets only (and the teacher's soft targets, if any); the news heads learn from
        everything, tweets included, as a one-head model trained on all of it would. The gate is
        not trained by gradient: after every epoch, before the dev slices are scored,
        :func:`fit_style_gate` fits it as a logistic regression on the pooled vectors, the
        news-style training texts (1) against the training tweets as written (0). Starting from a
        one-head checkpoint (``init_from``), the news heads start as copies of its heads. Not combined
        with ``rdrop_weight``.
    :param fake_quant: train through the export's int8 weight rounding
        (:func:`finpulse.models.qat.fake_quantize_linear_weights`); needed when continuing from a
        checkpoint rebuilt from an int8 model, whose weights all start on the int8 grid.
    """

    out_dir: str = "models/artifacts/checkpoint"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 8e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 64
    dev_fraction: float = 0.08
    patience: int = 2
    dropout: float = 0.1
    seed: int = 13
    limit: int | None = None
    device: str = "auto"
    threads: int = 0
    freeze_word_embeddings: bool = True
    init_from: str | None = None
    sentiment_weight: float = 1.0
    sentiment_class_weights: str | None = None
    layer_lr_decay: float = 1.0
    ema_decay: float = 0.0
    label_smoothing: float = 0.0
    teacher: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    base_encoder: str | None = None
    rdrop_weight: float = 0.0
    news_repeat: int = 0
    headline_style: float = 0.0
    news_select: bool = False
    fake_quant: bool = False
    style_heads: bool = False
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) for a reproducible run."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def torch_device(name: str):
    """The torch device for ``name``: ``auto`` is CUDA when torch sees a GPU, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _bucketed_batches(lengths: np.ndarray, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within chunks of 50 batches by length, then shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def _param_groups(model, cfg: TrainConfig) -> list[dict]:
    """AdamW parameter groups: no weight decay on biases and LayerNorm; layer-wise lr decay.

    :param model: the :class:`~models.network.MultiTaskClassifier` being trained.
    :param cfg: supplies ``lr``, ``weight_decay`` and ``layer_lr_decay``.
    """
    n_layers = model.encoder.config.num_hidden_layers
    no_decay = ("bias", "LayerNorm.weight")

    def depth(name: str) -> int:
        # heads: 0; encoder layer i: n_layers - i; embeddings: n_layers + 1
        if name.startswith("encoder.embeddings."):
            return n_layers + 1
        if name.startswith("encoder.encoder.layer."):
            return n_layers - int(name.split(".")[3])
        return 0

    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        d, nd = depth(name), any(k in name for k in no_decay)
        g = groups.setdefault((d, nd), {"params": [], "weight_decay": 0.0 if nd else cfg.weight_decay,
                                        "lr": cfg.lr * cfg.layer_lr_decay ** d})
        g["params"].append(p)
    return list(groups.values())


def train_dev_split(dev_fraction: float, seed: int, limit: int | None = None) -> tuple[list[Example], list[Example]]:
    """The training examples and the dev slice of one run (both tasks pooled; train shuffles again).

    Only the upstream ``*_train.csv`` splits are read; the dev slice is a stratified
    ``dev_fraction`` of each, so two runs with the same ``dev_fraction``, ``seed`` and ``limit``
    hold out exactly the same dev slice (what :mod:`finpulse.models.soup` relies on).

    :param dev_fraction: share of each task's training split held out.
    :param seed: seed of the holdout and of the shuffle.
    :param limit: if set, sample this many examples per task first (smoke runs).
    """
    train_set: list[Example] = []
    dev_set: list[Example] = []
    for task in ("topic", "sentiment"):
        exs = load_split(task, "train")
        if limit:
            exs = random.Random(seed).sample(exs, min(limit, len(exs)))
        tr, dv = stratified_holdout(exs, dev_fraction, seed)
        train_set.extend(tr)
        dev_set.extend(dv)
    return train_set, dev_set


def dev_score(report: dict) -> float:
    """The release criterion: mean macro-F1 of the heads in a :func:`dev_report`."""
    return float(np.mean([report[t]["macro_f1"] for t in report]))


def dev_report(model, tokenizer, examples: list[Example], device=None, batch_size: int = 128) -> dict:
    """Accuracy, macro-F1 and size per task on ``examples`` (the dev slice), from the PyTorch model.

    :param model: a :class:`~models.network.MultiTaskClassifier` (left in train mode afterwards).
    :param tokenizer: the training tokenizer.
    :param examples: labelled examples of either task.
    :param device: torch device of the model (default CPU).
    :param batch_size: texts per forward pass.
    """
    from .network import torch_logits

    model.eval()
    out = {}
    for task, labels in (("topic", TOPIC_LABELS), ("sentiment", SENTIMENT_LABELS)):
        exs = [e for e in examples if e.task == task]
        if not exs:
            continue
        t_logits, s_logits = torch_logits(model, tokenizer, [e.text for e in exs], device, batch_size)
        preds = (t_logits if task == "topic" else s_logits).argmax(-1).tolist()
        rep = classification_report([e.label for e in exs], preds, labels)
        out[task] = {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "n": rep["n"]}
    model.train()
    return out


#: teacher recipe fields that must equal the student's: same label sets, text pipeline, dev slice.
TEACHER_MUST_MATCH = ("n_topics", "n_sentiments", "normalization_version", "dev_fraction", "seed", "limit")


#: recipe fields an adapted encoder (``finpulse adapt``) must share with the run that starts from it.
ENCODER_MUST_MATCH = ("normalization_version", "dev_fraction", "seed", "limit")


def require_match(what: str, recipe: dict, cfg: TrainConfig, fields: tuple[str, ...]) -> None:
    """Refuse (``ValueError``) a teacher or adapted encoder that saw this run's dev slice.

    :param what: names the source in the message, e.g. ``"teacher runs/r3"``.
    :param recipe: the source's recipe.
    :param cfg: this run's settings.
    :param fields: the recipe fields that must equal this run's.
    """
    ours = {"n_topics": len(TOPIC_LABELS), "n_sentiments": len(SENTIMENT_LABELS),
            "normalization_version": NORMALIZATION_VERSION, "dev_fraction": cfg.dev_fraction,
            "seed": cfg.seed, "limit": cfg.limit}
    diff = [k for k in fields if recipe.get(k) != ours[k]]
    if diff:
        detail = ", ".join(f"{k}: {recipe.get(k)!r} there vs {ours[k]!r} here" for k in diff)
        raise ValueError(f"{what} does not match this run ({detail}); it must share the label sets, text "
                         "pipeline and dev slice (same dev_fraction, seed and limit)")


def start_encoder(cfg: TrainConfig) -> tuple[Path, str, dict | None]:
    """The encoder directory a run starts from, its ``base_model`` name and its adaptation recipe.

    The shipped all-MiniLM-L6-v2 unless ``cfg.base_encoder`` names a ``finpulse adapt`` output,
    whose name then carries the first 12 hex digits of its weights' sha256 (so ``finpulse soup``
    never averages runs that started from different weights). A continued run (``init_from``)
    keeps its checkpoint's ``base_model``; it cannot also name a ``base_encoder``.
    """
    from .network import base_encoder_dir

    if cfg.init_from and cfg.base_encoder:
        raise ValueError("init_from and base_encoder both name the starting weights; give one of them")
    if cfg.init_from:
        from .network import read_recipe

        return base_encoder_dir(), read_recipe(cfg.init_from)["base_model"], None
    if not cfg.base_encoder:
        return base_encoder_dir(), "sentence-transformers/all-MiniLM-L6-v2", None
    from .manifest import sha256_file

    path = Path(cfg.base_encoder)
    rec_path = path / "adapt_recipe.json"
    if not rec_path.is_file():
        raise ValueError(f"{path}: no adapt_recipe.json (not an encoder written by finpulse adapt)")
    adapted = json.loads(rec_path.read_text())
    require_match(f"adapted encoder {path}", adapted["recipe"], cfg, ENCODER_MUST_MATCH)
    digest = sha256_file(path / "model.safetensors")[:12]
    return path, f"sentence-transformers/all-MiniLM-L6-v2 + TAPT {digest}", adapted


def distillation_loss(student_logits, teacher_logits, temperature: float):
    """Knowledge-distillation loss (Hinton et al., 2015): ``T**2 * KL(teacher_T || student_T)``.

    Both distributions are softened by ``temperature``; the ``T**2`` factor keeps the gradient
    scale independent of the temperature. Mean over the batch.

    :param student_logits: ``(batch, classes)`` tensor from the model being trained.
    :param teacher_logits: ``(batch, classes)`` tensor of the teacher (no gradient).
    :param temperature: softening temperature ``T`` (> 0).
    """
    import torch.nn.functional as F

    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature ** 2


def consistency_loss(logits_a, logits_b):
    """R-Drop's symmetric KL divergence between two predictions of the same texts.

    ``(KL(p_a || p_b) + KL(p_b || p_a)) / 2``, mean over the batch; both arguments get gradient.

    :param logits_a: ``(batch, classes)`` tensor of one forward pass.
    :param logits_b: ``(batch, classes)`` tensor of another pass over the same batch.
    """
    import torch.nn.functional as F

    log_a = F.log_softmax(logits_a, dim=-1)
    log_b = F.log_softmax(logits_b, dim=-1)
    return 0.5 * (F.kl_div(log_a, log_b, log_target=True, reduction="batchmean")
                  + F.kl_div(log_b, log_a, log_target=True, reduction="batchmean"))


def labelled_loss(t_logits, s_logits, topic_y, sent_y, loss_fn, sent_loss_fn, cfg: TrainConfig):
    """Cross-entropy of both heads on the rows labelled for them (``IGNORE`` elsewhere), summed.

    :param t_logits: topic logits, ``(batch, topics)``.
    :param s_logits: sentiment logits, ``(batch, sentiments)``.
    :param topic_y: topic labels, a tensor.
    :param sent_y: sentiment labels, a tensor.
    :param loss_fn: the topic cross-entropy (``ignore_index=IGNORE``).
    :param sent_loss_fn: the sentiment cross-entropy.
    :param cfg: supplies ``sentiment_weight``.
    """
    import torch

    loss = torch.zeros((), device=topic_y.device)
    if (topic_y != IGNORE).any():
        loss = loss + loss_fn(t_logits, topic_y)
    if (sent_y != IGNORE).any():
        loss = loss + cfg.sentiment_weight * sent_loss_fn(s_logits, sent_y)
    return loss


def style_heads_loss(heads: dict, topic_y, sent_y, tweet_rows: np.ndarray, loss_fn, sent_loss_fn,
                     cfg: TrainConfig):
    """The labelled loss of a style-head batch (see ``TrainConfig.style_heads``): :func:`labelled_loss`
    of the tweet heads on the tweet rows plus that of the news heads on every row.

    :param heads: :meth:`~finpulse.models.network.MultiTaskClassifier.all_heads` of the batch.
    :param topic_y: topic labels (``IGNORE`` where the row has none), a tensor.
    :param sent_y: sentiment labels, likewise.
    :param tweet_rows: which rows are upstream tweets (numpy bool).
    :param loss_fn: the topic cross-entropy (``ignore_index=IGNORE``).
    :param sent_loss_fn: the sentiment cross-entropy.
    :param cfg: supplies ``sentiment_weight``.
    """
    import torch

    tweets = torch.from_numpy(tweet_rows).to(topic_y.device)
    return (labelled_loss(heads["topic"], heads["sentiment"], torch.where(tweets, topic_y, IGNORE),
                          torch.where(tweets, sent_y, IGNORE), loss_fn, sent_loss_fn, cfg)
            + labelled_loss(heads["news_topic"], heads["news_sentiment"], topic_y, sent_y, loss_fn,
                            sent_loss_fn, cfg))


def fit_style_gate(model, tokenizer, tweet_texts: list[str], news_texts: list[str], device=None,
                   max_tweets: int = 8000, seed: int = 13) -> dict:
    """Fit a style-head model's gate: a logistic regression (scikit-learn) on its pooled vectors.

    The encoder and heads are unchanged; the gate's weight and bias are overwritten. Classes are
    weighted to balance (there are many more tweets than news-style texts).

    :param model: a :class:`~finpulse.models.network.MultiTaskClassifier` with style heads (left in
        train mode afterwards).
    :param tokenizer: the training tokenizer.
    :param tweet_texts: tweets as written (class 0); a random ``max_tweets`` of them are used.
    :param news_texts: news-style texts (class 1).
    :param device: torch device of the model (default CPU).
    :param max_tweets: cap on the tweets used.
    :param seed: seed of the tweet sample.
    :returns: ``{"tweets", "news", "train_accuracy"}``.
    """
    import torch
    from sklearn.linear_model import LogisticRegression

    from .network import torch_pooled

    tweets = random.Random(seed).sample(tweet_texts, min(max_tweets, len(tweet_texts)))
    news = sorted(set(news_texts))
    model.eval()
    x = torch_pooled(model, tokenizer, tweets + news, device)
    model.train()
    y = np.array([0] * len(tweets) + [1] * len(news))
    clf = LogisticRegression(class_weight="balanced", max_iter=2000).fit(x, y)
    with torch.no_grad():
        model.style_gate.weight.copy_(torch.from_numpy(clf.coef_.astype(np.float32)))
        model.style_gate.bias.copy_(torch.from_numpy(clf.intercept_.astype(np.float32)))
    return {"tweets": len(tweets), "news": len(news), "train_accuracy": round(float(clf.score(x, y)), 4)}


def teacher_logits(teacher_dir: str, cfg: TrainConfig, examples: list[Example], tokenizer,
                   device) -> tuple[np.ndarray, np.ndarray, dict]:
    """The teacher's topic and sentiment logits on ``examples``, and its recipe.

    Refuses (``ValueError``) a teacher whose :data:`TEACHER_MUST_MATCH` fields differ.

    :param teacher_dir: checkpoint directory written by :func:`train` or ``finpulse soup``.
    :param cfg: the student's settings (dev slice, limit) the teacher must share.
    :param examples: the student's training examples (raw text; normalised as at run time).
    :param tokenizer: the training tokenizer.
    :param device: torch device to run the teacher on.
    """
    from .network import load_checkpoint, read_recipe, torch_logits

    recipe = read_recipe(teacher_dir)
    require_match(f"teacher {teacher_dir}", recipe, cfg, TEACHER_MUST_MATCH)
    model = load_checkpoint(teacher_dir).to(device)
    t, s = torch_logits(model, tokenizer, [e.text for e in examples], device, 128)
    del model
    return t.astype(np.float32), s.astype(np.float32), recipe


def train(cfg: TrainConfig) -> dict:
    """Fine-tune the two-headed model and write the best checkpoint to ``cfg.out_dir``.

    :param cfg: the run's settings.
    :returns: a summary dict (recipe, dev metrics per epoch, best epoch, wall time).
    """
    import torch
    from tqdm.auto import tqdm

    from .network import MultiTaskClassifier, save_checkpoint

    if cfg.style_heads and cfg.rdrop_weight:
        raise ValueError("style_heads and rdrop_weight are not combined; set rdrop_weight to 0")
    if cfg.style_heads and not cfg.news_repeat:
        raise ValueError("style_heads needs the news-style training split (news_repeat >= 1)")
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch_device(cfg.device)
    log.info("training on %s", device)

    base, base_name, adapted = start_encoder(cfg)
    tokenizer = load_tokenizer(base / "tokenizer.json", cfg.max_length)

    train_set, dev_set = train_dev_split(cfg.dev_fraction, cfg.seed, cfg.limit)
    n_tweets = len(train_set)
    news_dev: list[Example] = load_news("dev") if cfg.news_select else []
    news_train = load_news("train") if cfg.news_repeat else []
    if cfg.limit:  # smoke runs: the limit applies to the news-style headlines too (both tasks per headline)
        news_dev, news_train = news_dev[:2 * cfg.limit], news_train[:2 * cfg.limit]
    train_set.extend(news_train * cfg.news_repeat)
    rng = random.Random(cfg.seed)
    order = list(range(len(train_set)))
    rng.shuffle(order)
    is_tweet = np.array([i < n_tweets for i in order])
    train_set = [train_set[i] for i in order]

    texts = [normalize_text(e.text) for e in train_set]
    ids_plain = [enc.ids for enc in tokenizer.encode_batch(texts)]
    ids_all, lengths = ids_plain, np.array([len(x) for x in ids_plain])
    ids_styled = ids_plain
    if cfg.headline_style:
        styled = [normalize_text(to_headline_style(e.text)) if tw else t
                  for e, t, tw in zip(train_set, texts, is_tweet, strict=True)]
        ids_styled = [enc.ids for enc in tokenizer.encode_batch(styled)]
        log.info("headline style: %d of %d tweets change when rewritten",
                 sum(a != b for a, b in zip(styled, texts, strict=True)), n_tweets)
    topic_y = np.array([e.label if e.task == "topic" else IGNORE for e in train_set])
    sent_y = np.array([e.label if e.task == "sentiment" else IGNORE for e in train_set])
    soft_t = soft_s = t_recipe = None
    if cfg.teacher:
        log.info("computing teacher logits from %s on %d training texts", cfg.teacher, len(train_set))
        soft_t, soft_s, t_recipe = teacher_logits(cfg.teacher, cfg, train_set, tokenizer, device)

    if cfg.init_from:
        from .network import load_checkpoint

        model = load_checkpoint(cfg.init_from)
        if model.style_heads and not cfg.style_heads:
            raise ValueError(f"{cfg.init_from} has style heads; continue it with style_heads=True")
        if cfg.style_heads:
            model.add_style_heads()
        model = model.to(device)
        model.train()
    else:
        model = MultiTaskClassifier.from_base(base, len(TOPIC_LABELS), len(SENTIMENT_LABELS), cfg.dropout,
                                              cfg.style_heads).to(device)
    if cfg.freeze_word_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    if cfg.fake_quant:
        from .qat import fake_quantize_linear_weights

        log.info("fake int8 weights on %d linear layers", fake_quantize_linear_weights(model))
    groups = _param_groups(model, cfg)
    optim = torch.optim.AdamW(groups, lr=cfg.lr)
    ema = None
    if cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = max(1, int(total_steps * cfg.warmup_ratio))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=cfg.label_smoothing)
    sent_loss_fn = loss_fn
    if cfg.sentiment_class_weights == "balanced":
        counts = np.bincount(sent_y[sent_y != IGNORE], minlength=len(SENTIMENT_LABELS)).astype(float)
        w = counts.sum() / (len(counts) * np.maximum(counts, 1))
        sent_loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=cfg.label_smoothing,
                                                 weight=torch.tensor(w, dtype=torch.float32, device=device))

    recipe = {
        "base_model": base_name,
        "pooling": "masked mean",
        "normalization_version": NORMALIZATION_VERSION,
        "train_examples": len(train_set),
        "dev_examples": len(dev_set),
        "news_dev_examples": len(news_dev),
        "n_topics": len(TOPIC_LABELS),
        "n_sentiments": len(SENTIMENT_LABELS),
        **{k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "extra")},
        **cfg.extra,
    }
    if adapted is not None:
        recipe["adapt_recipe"] = {**adapted["recipe"], "history": adapted["history"]}
    if t_recipe is not None:
        recipe["teacher_recipe"] = {k: t_recipe.get(k) for k in ("epochs", "lr", "best_epoch", "dev", "teacher", "soup")
                                    if k in t_recipe}
    history = []
    best_score, best_epoch, bad_epochs = -1.0, -1, 0
    started = time.time()
    step = 0
    model.train()
    tweet_texts = [e.text for e, tw in zip(train_set, is_tweet, strict=True) if tw]  # the style gate's class 0
    for epoch in range(cfg.epochs):
        if cfg.headline_style:
            pick = np.array([rng.random() < cfg.headline_style for _ in range(len(train_set))])
            ids_all = [s if p else t for s, t, p in zip(ids_styled, ids_plain, pick, strict=True)]
            lengths = np.array([len(x) for x in ids_all])
        batches = _bucketed_batches(lengths, cfg.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", dynamic_ncols=True)
        running = None
        for batch in bar:
            width = int(lengths[batch].max())
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for r, i in enumerate(batch):
                ids[r, : lengths[i]] = ids_all[i]
                mask[r, : lengths[i]] = 1
            ids_t, mask_t = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
            ty = torch.from_numpy(topic_y[batch]).to(device)
            sy = torch.from_numpy(sent_y[batch]).to(device)
            rows = is_tweet[batch]  # the teacher learnt from tweets: its targets apply to the tweets only
            if cfg.style_heads:
                heads = model.all_heads(ids_t, mask_t)
                loss = style_heads_loss(heads, ty, sy, rows, loss_fn, sent_loss_fn, cfg)
                t_logits, s_logits = heads["topic"], heads["sentiment"]  # the teacher's targets: tweet heads
            elif cfg.rdrop_weight:
                # one forward pass over the batch twice: independent dropout masks per copy
                t_both, s_both = model(ids_t.repeat(2, 1), mask_t.repeat(2, 1))
                (t_logits, t_other), (s_logits, s_other) = t_both.chunk(2), s_both.chunk(2)
                rdrop = consistency_loss(t_logits, t_other) + cfg.sentiment_weight * consistency_loss(s_logits, s_other)
                t_logits, s_logits, ty, sy = t_both, s_both, ty.repeat(2), sy.repeat(2)
            else:
                t_logits, s_logits = model(ids_t, mask_t)
            if not cfg.style_heads:
                loss = labelled_loss(t_logits, s_logits, ty, sy, loss_fn, sent_loss_fn, cfg)
            if soft_t is not None and soft_s is not None and rows.any():  # the teacher sets both or neither
                copies = 2 if cfg.rdrop_weight else 1
                sel = torch.from_numpy(np.tile(rows, copies)).to(device)
                kd_t = distillation_loss(t_logits[sel], torch.from_numpy(soft_t[batch][rows]).to(device)
                                         .repeat(copies, 1), cfg.distill_temperature)
                kd_s = distillation_loss(s_logits[sel], torch.from_numpy(soft_s[batch][rows]).to(device)
                                         .repeat(copies, 1), cfg.distill_temperature)
                loss = loss + cfg.distill_weight * (kd_t + cfg.sentiment_weight * kd_s)
            if cfg.rdrop_weight:
                loss = loss + cfg.rdrop_weight * rdrop
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{max(sched.get_last_lr()):.2e}")
        bar.close()
        scored = model if ema is None else ema.module
        assert isinstance(scored, MultiTaskClassifier)  # AveragedModel.module is a deep copy of model
        gate_fit = None
        if cfg.style_heads:
            gate_fit = fit_style_gate(scored, tokenizer, tweet_texts, [e.text for e in news_train], device)
        dev = dev_report(scored, tokenizer, dev_set, device)
        score = dev_score(dev)
        entry = {"epoch": epoch + 1, "train_loss": running, "dev": dev, "dev_score": score}
        if gate_fit is not None:
            entry["style_gate"] = gate_fit
        if news_dev:
            news = dev_report(scored, tokenizer, news_dev, device)
            entry.update(news_dev=news, tweet_dev_score=score, news_dev_score=dev_score(news))
            score = (score + dev_score(news)) / 2
            entry["dev_score"] = score
            print(f"epoch {epoch + 1}: news dev={json.dumps(news)}", flush=True)
        history.append({**entry, "elapsed_s": round(time.time() - started, 1)})
        log.info("epoch %d dev %s", epoch + 1, json.dumps(dev))
        print(f"epoch {epoch + 1}: loss={running:.4f} dev={json.dumps(dev)}", flush=True)
        if score > best_score:
            best_score, best_epoch, bad_epochs = score, epoch + 1, 0
            save_checkpoint(scored, cfg.out_dir, {**recipe, "best_epoch": best_epoch, "dev": dev,
                                                  **({"news_dev": entry["news_dev"]} if news_dev else {})})
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                log.info("early stopping after epoch %d (best %d)", epoch + 1, best_epoch)
                break
    summary = {"recipe": recipe, "history": history, "best_epoch": best_epoch,
               "train_seconds": round(time.time() - started, 1), "device": str(device)}
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / "history.json").write_text(json.dumps(summary, indent=2))
    return summary
