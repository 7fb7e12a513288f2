"""The GPU (fp16) variant, built at load time from the shipped int8 model.

The repository ships one model file (int8, 23 MB) to stay within its 60 MB budget. On a CUDA
machine :func:`fp16_model_path` rebuilds a float graph from it — every quantised weight is
dequantised (``(q - zero_point) * scale``), ``QEmbedLayerNormalization``/``QAttention``/
``MatMulInteger`` become ``EmbedLayerNormalization``/``Attention``/``MatMul`` and the activation
quantisers (dynamic, or with the static scales of :mod:`finpulse.models.static_quant`) are
dropped — then converts it to fp16 (inputs and outputs stay int64 /
float32) with ONNX Runtime's own converter. The result is cached next to the user's other caches,
keyed by the int8 file's sha256, so it is built once per model version.

Its weights carry the int8 rounding (activations are no longer quantised), so its accuracy is that
of the int8 model or slightly better; ``finpulse evaluate --variant fp16`` measures it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from finpulse.core.settings import default_cache_dir

from .static_quant import STATIC_SUFFIX

log = logging.getLogger(__name__)

#: where fp16 models are cached; ``None`` = finpulse's cache folder (``FINPULSE_CACHE_DIR``, else
#: ``$XDG_CACHE_HOME/finpulse``, else ``~/.cache/finpulse``), looked up at each call
CACHE_DIR: Path | None = None


def _dequant(inits: dict, q: str, scale: str, zero: str) -> np.ndarray:
    from onnx import numpy_helper

    qv = numpy_helper.to_array(inits[q]).astype(np.float32)
    s = numpy_helper.to_array(inits[scale]).astype(np.float32)
    z = numpy_helper.to_array(inits[zero]).astype(np.float32)
    return ((qv - z) * s).astype(np.float32)


def dequantize_model(src: str | Path):
    """Return an fp32 ``onnx.ModelProto`` equivalent to the int8 model at ``src`` (weights dequantised).

    :raises ValueError: if the graph has a quantised op this function does not know.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    new_inits: list = []
    drop: set[int] = set()
    new_nodes: dict[int, list] = {}

    def fp(name: str, arr: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(arr, name))
        return name

    def float_input(q_name: str) -> str:
        """The float tensor a (Dynamic)QuantizeLinear quantised (its input)."""
        node = producer[q_name]
        if node.op_type not in ("DynamicQuantizeLinear", "QuantizeLinear"):
            raise ValueError(f"expected an activation quantiser before {q_name}, found {node.op_type}")
        return node.input[0]

    for idx, node in enumerate(g.node):
        if node.op_type == "DynamicQuantizeLinear" or (
                node.op_type in ("QuantizeLinear", "Identity") and STATIC_SUFFIX in node.name):
            drop.add(idx)  # activation quantisers, dynamic or with static scales (models/static_quant.py)
        elif node.op_type == "QEmbedLayerNormalization":
            i = list(node.input)
            tensors = [fp(i[k].replace("_quantized", "_dq"), _dequant(inits, i[k], i[k + 6], i[k + 11]))
                       for k in range(2, 7)]
            new_nodes[idx] = [helper.make_node("EmbedLayerNormalization", [i[0], i[1], *tensors, i[7]],
                                               list(node.output), name=node.name.replace("_quant", ""),
                                               domain="com.microsoft", epsilon=_attr(node, "epsilon"))]
            drop.add(idx)
        elif node.op_type == "QAttention":
            i = list(node.input)
            w = fp(i[1].replace("_quantized", "_dq"), _dequant(inits, i[1], i[4], i[7]))
            new_nodes[idx] = [helper.make_node("Attention", [float_input(i[0]), w, i[2], i[5]], list(node.output),
                                               name=node.name.replace("_quant", ""), domain="com.microsoft",
                                               num_heads=_attr(node, "num_heads"))]
            drop.add(idx)
        elif node.op_type == "MatMulInteger":
            i = list(node.input)
            w = fp(i[1].replace("_quantized", "_dq"), _dequant(inits, i[1], i[1].replace("_quantized", "_scale"), i[3]))
            # MatMulInteger -> Cast -> Mul(out_scale): find the Mul producing the float result
            cast = next(n for n in g.node if node.output[0] in n.input and n.op_type == "Cast")
            mul = next(n for n in g.node if cast.output[0] in n.input and n.op_type == "Mul")
            new_nodes[idx] = [helper.make_node("MatMul", [float_input(i[0]), w], list(mul.output),
                                               name=node.name.replace("_quant", ""))]
            drop.update({idx, list(g.node).index(cast), list(g.node).index(mul)})
        elif node.op_type.startswith("Q") and node.domain == "com.microsoft":
            raise ValueError(f"cannot dequantise {node.op_type} ({node.name})")
    for idx, node in enumerate(g.node):  # the scale products feeding dropped Muls
        if node.op_type == "Mul" and node.name.endswith("_quant_scales_mul"):
            drop.add(idx)
    nodes = []
    for idx, node in enumerate(g.node):
        nodes.extend(new_nodes.get(idx, []))
        if idx not in drop:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def _attr(node, name: str):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    raise ValueError(f"{node.op_type} {node.name} lacks attribute {name}")


def to_fp16(model):
    """Convert an fp32 BERT graph to fp16, keeping int64 inputs and float32 outputs."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    om = OnnxModel(model)
    om.convert_float_to_float16(keep_io_types=True)
    return om.model


def fp16_model_path(manifest: dict) -> Path:
    """Path of the fp16 model for ``manifest``'s int8 file, building and caching it if needed."""
    import onnx

    entry = manifest["files"]["cpu"]
    out = (CACHE_DIR or default_cache_dir()) / f"{entry['sha256'][:24]}.fp16.onnx"
    if not out.exists():
        src = Path(manifest["_dir"]) / entry["path"]
        log.info("building the fp16 GPU model from %s (once per model version) -> %s", src.name, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        onnx.save(to_fp16(dequantize_model(src)), str(tmp))
        tmp.replace(out)
    return out
