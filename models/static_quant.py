"""Batch-independent int8: freeze the activation scales of a dynamically quantised model.

The shipped int8 model is *dynamically* quantised: each ``DynamicQuantizeLinear`` computes its scale
and zero point from the whole tensor it quantises, i.e. from every row (and every padding position)
of the batch, so a headline's labels depend on what it is batched with (2.6 % of topics and 1.6 % of
sentiments changed when batches were shuffled). This module replaces each ``DynamicQuantizeLinear``
with a ``QuantizeLinear`` whose scale and zero point are constants, calibrated once on headlines
scored one at a time (no padding), the usual MinMax calibration of static quantisation. The integer
kernels after it (``QAttention``, ``MatMulInteger``) are unchanged; labels no longer depend on the
batch.

Measured on the shipped ``minilm-mt-2026.11.23`` (2-vCPU AMD EPYC, calibrated on 1,500 training tweets
and the 804 ``train`` headlines of ``data/news-dev``): upstream validation topic 0.9092 / macro-F1 0.8997,
sentiment 0.8911 / macro-F1 0.8518 (dynamic: 0.9111 / 0.9053, 0.8899 / 0.8495); 0 of 3,000 labels
changed by re-batching (dynamic: 44 topics, 56 sentiments); throughput at batch 32, interleaved in one
run, 404 vs 419 headlines/s (-3.5 %). Not yet the shipped artifact: see the model issue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STATIC_SUFFIX = "_static"


def activation_ranges(src: str | Path, encodings: Iterable[Sequence[int]]) -> dict[str, tuple[float, float]]:
    """The smallest and largest value each ``DynamicQuantizeLinear`` input takes over ``encodings``.

    :param src: the dynamically quantised ONNX model.
    :param encodings: token ids of calibration texts, each scored alone (no padding).
    :returns: input tensor name -> (min, max).
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    names = [n.input[0] for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict[str, tuple[float, float]] = {}
    for ids in encodings:
        x = np.asarray([list(ids)], dtype=np.int64)
        for name, out in zip(names, session.run(names, {"input_ids": x, "attention_mask": np.ones_like(x)}),
                             strict=True):
            lo, hi = ranges.get(name, (0.0, 0.0))
            ranges[name] = (min(lo, float(out.min())), max(hi, float(out.max())))
    return ranges


def freeze_activation_scales(src: str | Path, dst: str | Path, ranges: dict[str, tuple[float, float]]) -> Path:
    """Write ``dst``: ``src`` with every ``DynamicQuantizeLinear`` replaced by a ``QuantizeLinear`` with
    the constant uint8 scale and zero point of its calibrated range (values outside it saturate).

    :param src: the dynamically quantised model.
    :param dst: where to write the static one.
    :param ranges: :func:`activation_ranges`.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    nodes: list[Any] = []
    for n in model.graph.node:
        if n.op_type != "DynamicQuantizeLinear":
            nodes.append(n)
            continue
        lo, hi = ranges[n.input[0]]
        lo, hi = min(0.0, lo), max(0.0, hi)
        scale = (hi - lo) / 255.0 or 1.0
        zero = int(np.clip(round(-lo / scale), 0, 255))
        s_name, z_name = f"{n.output[1]}{STATIC_SUFFIX}", f"{n.output[2]}{STATIC_SUFFIX}"
        model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, dtype=np.float32), s_name),
                                        numpy_helper.from_array(np.array(zero, dtype=np.uint8), z_name)])
        nodes.append(helper.make_node("QuantizeLinear", [n.input[0], s_name, z_name], [n.output[0]],
                                      name=f"{n.name}{STATIC_SUFFIX}"))
        nodes.append(helper.make_node("Identity", [s_name], [n.output[1]], name=f"{n.name}{STATIC_SUFFIX}_scale"))
        nodes.append(helper.make_node("Identity", [z_name], [n.output[2]], name=f"{n.name}{STATIC_SUFFIX}_zp"))
    return _save(model, nodes, None, dst)


def thaw_activation_scales(src: str | Path, dst: str | Path) -> Path:
    """The inverse of :func:`freeze_activation_scales`: each frozen ``QuantizeLinear`` becomes the
    ``DynamicQuantizeLinear`` it replaced again (to measure what the static scales change).

    :param src: a model written by :func:`freeze_activation_scales`.
    :param dst: where to write the dynamically quantised model.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    idents = {n.name: n for n in model.graph.node if n.op_type == "Identity" and STATIC_SUFFIX in n.name}
    nodes: list[Any] = []
    consts: set[str] = set()
    for n in model.graph.node:
        if n.name in idents:
            continue
        if n.op_type == "QuantizeLinear" and n.name.endswith(STATIC_SUFFIX):
            scale, zp = idents[f"{n.name}_scale"], idents[f"{n.name}_zp"]
            consts.update({scale.input[0], zp.input[0]})
            nodes.append(helper.make_node("DynamicQuantizeLinear", [n.input[0]],
                                          [n.output[0], scale.output[0], zp.output[0]],
                                          name=n.name[: -len(STATIC_SUFFIX)]))
        else:
            nodes.append(n)
    return _save(model, nodes, consts, dst)


def _save(model: Any, nodes: list[Any], drop_initializers: set[str] | None, dst: str | Path) -> Path:
    """Replace ``model``'s nodes (and drop the named initializers), check it and write it to ``dst``."""
    import onnx

    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if drop_initializers:
        keep = [i for i in model.graph.initializer if i.name not in drop_initializers]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    onnx.checker.check_model(model)
    out = Path(dst)
    onnx.save(model, str(out))
    return out
