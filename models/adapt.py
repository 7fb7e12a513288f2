"""Task-adaptive pre-training (TAPT): more masked-language-model training on our own headlines.

``finpulse adapt`` calls :func:`adapt`. Needs the ``train`` extra (torch, transformers).

all-MiniLM-L6-v2 was trained on general web sentence pairs; the finance tweets we classify use a
register of their own (cashtags, "PT raised to", "beats by $0.02"). Gururangan et al. (2020,
"Don't Stop Pretraining") continue the masked-LM objective on the unlabelled texts of the task
before fine-tuning, and report gains on small classification sets. Here:

* the texts are the *training* texts of both tasks, normalised exactly as for fine-tuning, without
  the dev slice (same ``dev_fraction`` / ``seed`` / ``limit`` as :func:`finpulse.models.train.train_dev_split`)
  and never the upstream ``*_valid.csv`` splits; the dev slice's texts measure a held-out MLM loss;
* masking is BERT's (15 % of tokens; of those 80 % ``[MASK]``, 10 % random, 10 % kept), drawn
  afresh every epoch by ``transformers``' ``DataCollatorForLanguageModeling``;
* the sentence-transformers checkpoint has no MLM head, so a fresh one is trained alone for
  ``head_warmup_steps`` (encoder frozen) before the encoder joins; the decoder is tied to the
  word-embedding table, which stays frozen as in fine-tuning; the loss is computed only at the
  masked positions (the 30,522-way projection of every token would cost more than the encoder);
* the output is an encoder directory (``config.json``, ``model.safetensors``, the unchanged
  tokenizer files, ``adapt_recipe.json``) that ``finpulse train --base-encoder DIR`` starts from.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .normalize import NORMALIZATION_VERSION, normalize_text

log = logging.getLogger(__name__)

#: tokenizer files copied unchanged from the base encoder into the adapted encoder's directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass
class AdaptConfig:
    """Settings of one task-adaptive pre-training run.

    :param out_dir: where the adapted encoder is written.
    :param epochs: passes over the training texts.
    :param batch_size: texts per optimisation step.
    :param lr: peak learning rate of the encoder (linear warm-up 6 %, then linear decay).
    :param head_lr: learning rate of the fresh MLM head (transform + decoder bias).
    :param head_warmup_steps: steps during which only the MLM head trains (encoder frozen).
    :param mlm_probability: share of tokens selected for prediction.
    :param max_length: token limit (as in fine-tuning).
    :param dev_fraction: share of each training split held out (must match the fine-tuning run).
    :param seed: seed of the holdout, the shuffles and the masking (must match the fine-tuning run).
    :param limit: if set, use only this many training examples per task (smoke tests).
    :param device: ``auto``, ``cpu`` or ``cuda``.
    :param threads: torch intra-op threads on CPU (0 = torch's default).
    """

    out_dir: str = "models/artifacts/encoder-tapt"
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 5e-4
    head_warmup_steps: int = 300
    mlm_probability: float = 0.15
    max_length: int = 64
    dev_fraction: float = 0.08
    seed: int = 13
    limit: int | None = None
    device: str = "auto"
    threads: int = 0


def adaptation_texts(cfg: AdaptConfig) -> tuple[list[str], list[str]]:
    """The normalised texts to adapt on, and the dev slice's texts (for the held-out loss).

    Training texts of both tasks, each distinct text once, none that is also a dev-slice text
    (the same headline can sit in both tasks' splits); the upstream validation splits are not read.

    :param cfg: supplies ``dev_fraction``, ``seed`` and ``limit`` (the fine-tuning run's dev slice).
    """
    from .train import train_dev_split

    train_set, dev_set = train_dev_split(cfg.dev_fraction, cfg.seed, cfg.limit)
    dev_texts = list(dict.fromkeys(normalize_text(e.text) for e in dev_set))
    held_out = set(dev_texts)
    texts = [t for t in dict.fromkeys(normalize_text(e.text) for e in train_set) if t not in held_out]
    return texts, dev_texts


def _mlm_loss(model, batch, device):
    """Masked-LM cross-entropy over the masked positions of one collated batch."""
    import torch.nn.functional as F

    hidden = model.bert(input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    labels = batch["labels"].to(device)
    picked = labels != -100
    if not picked.any():
        return hidden.sum() * 0.0
    logits = model.cls(hidden[picked])
    return F.cross_entropy(logits, labels[picked])


def adapt(cfg: AdaptConfig) -> dict:
    """Continue masked-LM training of the base encoder on the training texts; save the encoder.

    :param cfg: the run's settings.
    :returns: a summary dict: the recipe, the history (entry 0: held-out MLM loss when the
        head-only warm-up ends, i.e. of the unchanged encoder; then train and held-out loss after
        each epoch), wall time and device.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling

    from .network import base_encoder_dir
    from .train import _bucketed_batches, seed_everything, torch_device

    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch_device(cfg.device)
    log.info("adapting on %s", device)

    base = base_encoder_dir()
    hf_tok = AutoTokenizer.from_pretrained(str(base))
    collate = DataCollatorForLanguageModeling(hf_tok, mlm=True, mlm_probability=cfg.mlm_probability,
                                              return_tensors="pt")
    texts, dev_texts = adaptation_texts(cfg)

    def encode(batch_texts):
        return hf_tok(batch_texts, truncation=True, max_length=cfg.max_length)["input_ids"]

    ids_all = encode(texts)
    dev_ids = encode(dev_texts)
    lengths = np.array([len(x) for x in ids_all])

    model = BertForMaskedLM.from_pretrained(str(base)).to(device)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # also the tied decoder matrix
    head = [p for n, p in model.named_parameters() if n.startswith("cls.") and p.requires_grad]
    body = [p for n, p in model.named_parameters() if n.startswith("bert.") and p.requires_grad]
    optim = torch.optim.AdamW([{"params": head, "lr": cfg.head_lr}, {"params": body, "lr": cfg.lr}],
                              weight_decay=0.01)
    steps_per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    body_steps = max(1, total - cfg.head_warmup_steps)
    body_warmup = max(1, int(body_steps * 0.06))

    def head_factor(step: int) -> float:
        return max(0.0, (total - step) / total)

    def body_factor(step: int) -> float:
        s = step - cfg.head_warmup_steps
        if s < 0:
            return 0.0
        if s < body_warmup:
            return (s + 1) / body_warmup
        return max(0.0, (body_steps - s) / max(1, body_steps - body_warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, [head_factor, body_factor])

    def held_out_loss() -> float:
        # the same masks every time (own generator state), so epochs are comparable
        state = torch.random.get_rng_state()
        torch.manual_seed(cfg.seed + 1)
        model.eval()
        total_loss, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(dev_ids), 128):
                batch = collate([{"input_ids": x} for x in dev_ids[i:i + 128]])
                total_loss += _mlm_loss(model, batch, device).item() * len(batch["input_ids"])
                n += len(batch["input_ids"])
        model.train()
        torch.random.set_rng_state(state)
        return total_loss / max(1, n)

    rng = random.Random(cfg.seed)
    history: list[dict[str, Any]] = [{"epoch": 0, "dev_mlm_loss": None}]
    started = time.time()
    step = 0
    model.train()
    for p in body:
        p.requires_grad_(cfg.head_warmup_steps <= 0)
    for epoch in range(cfg.epochs):
        bar = tqdm(_bucketed_batches(lengths, cfg.batch_size, rng), desc=f"adapt {epoch + 1}/{cfg.epochs}",
                   unit="batch", dynamic_ncols=True)
        running: float | None = None
        for batch_idx in bar:
            if step == cfg.head_warmup_steps:
                for p in body:
                    p.requires_grad_(True)
                # the head-only phase ends: its held-out loss is the baseline the encoder must beat
                history[0]["dev_mlm_loss"] = round(held_out_loss(), 4)
                log.info("head warm-up done: held-out MLM loss %.4f", history[0]["dev_mlm_loss"])
            batch = collate([{"input_ids": ids_all[i]} for i in batch_idx])
            loss = _mlm_loss(model, batch, device)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in head + body if p.requires_grad], 1.0)
            optim.step()
            sched.step()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        bar.close()
        assert running is not None  # every epoch has at least one batch
        dev_loss = held_out_loss()
        history.append({"epoch": epoch + 1, "train_mlm_loss": round(running, 4), "dev_mlm_loss": round(dev_loss, 4),
                        "elapsed_s": round(time.time() - started, 1)})
        print(f"adapt epoch {epoch + 1}: train MLM loss {running:.4f}, held-out {dev_loss:.4f}", flush=True)

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.bert.save_pretrained(str(out))
    for name in TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copyfile(base / name, out / name)
    recipe = {"adapted_from": "sentence-transformers/all-MiniLM-L6-v2", "objective": "masked LM (TAPT)",
              "normalization_version": NORMALIZATION_VERSION, "texts": len(texts),
              **{k: v for k, v in asdict(cfg).items() if k != "out_dir"}}
    summary = {"recipe": recipe, "history": history, "train_seconds": round(time.time() - started, 1),
               "device": str(device)}
    (out / "adapt_recipe.json").write_text(json.dumps(summary, indent=2))
    return summary
