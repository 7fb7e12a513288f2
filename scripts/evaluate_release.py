"""Evaluate a freshly exported model and record the figures in its manifest and docs/model-eval.json.

Runs every variant (int8 shipped, fp32 ONNX export, fp16 rebuilt from int8, PyTorch checkpoint)
over both upstream validation splits (the ONNX variants with the manifest's decision rule, as the
runtime; the checkpoint by arg-max), and measures ONNX fp32 vs PyTorch logit parity and int8 vs
fp32 agreement on all validation headlines. Needs the train extra and build/onnx from the export.

Usage: python scripts/evaluate_release.py [--checkpoint models/artifacts/checkpoint]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finpulse.models.data import SPLIT_FILES, load_split  # noqa: E402
from finpulse.models.evaluate import decision_of, evaluate, logits_fn  # noqa: E402
from finpulse.models.export import ARTIFACT_DIR, BUILD_DIR, update_metrics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(ARTIFACT_DIR / "checkpoint"))
    args = ap.parse_args()
    out: dict = {"variants": {}}
    fns = {}
    decision = decision_of(ARTIFACT_DIR)  # the ONNX variants decide labels as the runtime does
    for variant in ("int8", "fp32", "fp16", "torch"):
        fns[variant] = logits_fn(variant, checkpoint=args.checkpoint, fp32_path=BUILD_DIR / "model.fp32.onnx")
        out["variants"][variant] = {}
        for task in ("topic", "sentiment"):
            t0 = time.time()
            rep = evaluate(SPLIT_FILES[(task, "valid")], task, fns[variant], None if variant == "torch" else decision)
            out["variants"][variant][task] = {"accuracy": round(rep["accuracy"], 4),
                                              "macro_f1": round(rep["macro_f1"], 4), "n": rep["n"],
                                              "seconds": round(time.time() - t0, 1)}
            if variant == "int8":
                out.setdefault("int8_reports", {})[task] = rep
            print(variant, task, out["variants"][variant][task], flush=True)
    texts = [e.text for e in load_split("topic", "valid")] + [e.text for e in load_split("sentiment", "valid")]
    pt_t, pt_s = fns["torch"](texts)
    fx_t, fx_s = fns["fp32"](texts)
    i8_t, i8_s = fns["int8"](texts)
    h_t, h_s = fns["fp16"](texts)
    out["parity"] = {
        "texts": len(texts),
        "onnx_fp32_vs_torch_max_abs": float(max(np.abs(pt_t - fx_t).max(), np.abs(pt_s - fx_s).max())),
        "int8_vs_fp32_max_abs": float(max(np.abs(i8_t - fx_t).max(), np.abs(i8_s - fx_s).max())),
        "int8_vs_fp32_argmax_agreement": {"topic": float((i8_t.argmax(1) == fx_t.argmax(1)).mean()),
                                          "sentiment": float((i8_s.argmax(1) == fx_s.argmax(1)).mean())},
        "fp16_vs_fp32_argmax_agreement": {"topic": float((h_t.argmax(1) == fx_t.argmax(1)).mean()),
                                          "sentiment": float((h_s.argmax(1) == fx_s.argmax(1)).mean())},
    }
    sizes = {p.name: p.stat().st_size for p in ARTIFACT_DIR.iterdir() if p.is_file()}
    out["sizes_bytes"] = sizes
    out["fp32_onnx_bytes"] = (BUILD_DIR / "model.fp32.onnx").stat().st_size
    metrics = {v: {t: {k: out["variants"][v][t][k] for k in ("accuracy", "macro_f1", "n")} for t in ("topic", "sentiment")}
               for v in out["variants"]}
    update_metrics(ARTIFACT_DIR, {**metrics, "parity": out["parity"],
                                  "evaluated_on": "upstream validation splits (topic_valid.csv, sent_valid.csv)"})
    (ROOT / "docs" / "model-eval.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out["parity"], indent=2))


if __name__ == "__main__":
    main()
