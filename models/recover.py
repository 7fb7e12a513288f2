"""A PyTorch checkpoint rebuilt from a shipped int8 model, to continue training from it.

The repository ships the int8 ONNX file, not the fp32 training checkpoint (90 MB, over the
repository's budget). :func:`checkpoint_from_int8` dequantises the int8 graph (the same code as the
GPU variant, :func:`finpulse.models.gpu.dequantize_model`), maps its fused tensors back onto
:class:`~finpulse.models.network.MultiTaskClassifier`'s parameters and writes a checkpoint that
``finpulse train --init-from`` accepts:

* ``Attention_<i>_qkv_weight`` ``[384, 1152]`` -> layer ``i``'s query / key / value weights (the
  three column blocks, transposed to ``nn.Linear``'s ``[out, in]``), the fused bias likewise;
* each ``MatMul`` weight ``[in, out]`` -> its ``nn.Linear`` weight transposed, found by the node
  name the exporter gave it (``/encoder/encoder/layer.<i>/<block>/dense/MatMul``, ``/<head>/Gemm_MatMul``);
* the word-embedding table is taken from the base encoder (training keeps it frozen, so it is exact),
  the other embedding and layer-norm tensors from the dequantised graph.

The weights carry the int8 rounding; :func:`checkpoint_from_int8` reports how far the rebuilt
network's logits are from the int8 model's on sample texts, and the recipe it writes is the
manifest's (same dev slice, so a continued run is judged on headlines neither run trained on).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .manifest import load_manifest

HIDDEN = 384

_DENSE = re.compile(r"^/encoder/encoder/layer\.(\d+)/(attention/output|intermediate|output)/dense/MatMul$")
_HEADS = ("topic_head", "sentiment_head", "news_topic_head", "news_sentiment_head", "style_gate")
_HEAD = re.compile(rf"^/({'|'.join(_HEADS)})/Gemm_MatMul$")


def int8_state_dict(model_dir: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The network's parameters as numpy arrays, read from the int8 model in ``model_dir``.

    :param model_dir: a model directory with ``manifest.json``; ``None`` = the shipped default model.
    :returns: ``(state, manifest)``; ``state`` has every key of the network's ``state_dict`` except
        ``encoder.embeddings.word_embeddings.weight`` (see :func:`checkpoint_from_int8`).
    :raises ValueError: if a parameter of the network is not found in the graph.
    """
    from onnx import numpy_helper

    from .gpu import dequantize_model

    manifest = load_manifest(model_dir)
    graph = dequantize_model(Path(manifest["_dir"]) / manifest["files"]["cpu"]["path"]).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state: dict[str, np.ndarray] = {}
    for name, arr in inits.items():  # tensors the graph kept under their PyTorch names
        key = name.removesuffix("_dq")
        if key.startswith(("encoder.", *(f"{h}." for h in _HEADS))) and key.endswith((".weight", ".bias")) \
                and not key.endswith("word_embeddings.weight"):
            state[key] = arr
    for node in graph.node:
        if node.op_type == "Attention":
            layer = int(node.name.rsplit("_", 1)[1])
            w, b = inits[node.input[1]], inits[node.input[2]]
            for k, part in enumerate(("query", "key", "value")):
                prefix = f"encoder.encoder.layer.{layer}.attention.self.{part}"
                state[f"{prefix}.weight"] = w[:, k * HIDDEN:(k + 1) * HIDDEN].T.copy()
                state[f"{prefix}.bias"] = b[k * HIDDEN:(k + 1) * HIDDEN].copy()
        elif node.op_type == "MatMul":
            if m := _DENSE.match(node.name):
                block = m.group(2).replace("/", ".")
                state[f"encoder.encoder.layer.{m.group(1)}.{block}.dense.weight"] = inits[node.input[1]].T.copy()
            elif m := _HEAD.match(node.name):
                state[f"{m.group(1)}.weight"] = inits[node.input[1]].T.copy()
    return state, manifest


def checkpoint_from_int8(out_dir: str | Path, model_dir: str | Path | None = None,
                         check_texts: list[str] | None = None) -> dict:
    """Write a training checkpoint (``weights.pt``, ``config.json``, ``recipe.json``) rebuilt from int8.

    :param out_dir: the checkpoint directory to write.
    :param model_dir: the model directory to rebuild; ``None`` = the shipped default model.
    :param check_texts: texts on which the rebuilt network is compared with the int8 model.
    :returns: ``{"version", "max_abs_logit_diff", "argmax_agreement"}`` on ``check_texts``.
    :raises ValueError: if the rebuilt state does not cover the network exactly.
    """
    import torch

    from .classifier import Classifier
    from .labels import SENTIMENT_LABELS, TOPIC_LABELS
    from .network import MultiTaskClassifier, base_encoder_dir, save_checkpoint, torch_logits
    from .tokenize import load_tokenizer

    state, manifest = int8_state_dict(model_dir)
    recipe = dict(manifest["recipe"])
    base = base_encoder_dir()
    model = MultiTaskClassifier.from_base(base, len(TOPIC_LABELS), len(SENTIMENT_LABELS), recipe.get("dropout", 0.1),
                                          bool(recipe.get("style_heads", False)))
    expected = set(model.state_dict())
    expected.discard("encoder.embeddings.word_embeddings.weight")
    expected = {k for k in expected if not k.endswith("position_ids")}
    missing, extra = expected - set(state), set(state) - expected
    if missing or extra:
        raise ValueError(f"int8 graph does not map onto the network: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(extra)[:5]}")
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}, strict=False)
    model.eval()
    recipe.update({"recovered_from": {"version": manifest["version"], "sha256": manifest["files"]["cpu"]["sha256"]}})
    save_checkpoint(model, out_dir, recipe)
    report: dict = {"version": manifest["version"]}
    if check_texts:
        clf = Classifier(model_dir, device="cpu", variant="int8")
        t8, s8 = clf.logits(check_texts)
        tok = load_tokenizer(Path(manifest["_dir"]) / manifest["files"]["tokenizer"]["path"],
                             int(manifest["max_length"]))
        tt, st = torch_logits(model, tok, check_texts)
        report["max_abs_logit_diff"] = float(max(np.abs(t8 - tt).max(), np.abs(s8 - st).max()))
        report["argmax_agreement"] = {"topic": float((t8.argmax(1) == tt.argmax(1)).mean()),
                                      "sentiment": float((s8.argmax(1) == st.argmax(1)).mean())}
    (Path(out_dir) / "recovered.json").write_text(json.dumps(report, indent=2))
    return report
