"""Classifier throughput benchmark (``finpulse bench`` / ``scripts/bench_classify.py``).

Measures headlines per second through :class:`finpulse.models.Classifier` on real validation headlines at
batch sizes 1, 8, 32 and 128, for the fp32 ONNX export (``build/onnx``; skipped if absent) and the
shipped int8 model, and the peer a user would otherwise pick: a Hugging Face
``pipeline("text-classification")`` with a BERT-base-size model (FinBERT's architecture, random
weights: weights do not change speed), called once per headline. Each figure is the median of
``repeats`` timed passes after a warm-up pass. Also measures the peak RSS of a fresh process that
loads the classifier and classifies 10,000 headlines.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .data import load_split


def _headlines(n: int) -> list[str]:
    texts = [e.text for e in load_split("topic", "valid")] + [e.text for e in load_split("sentiment", "valid")]
    return (texts * (n // len(texts) + 1))[:n]


def _rate(fn, texts: list[str], repeats: int) -> float:
    fn(texts[: min(len(texts), 64)])  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return statistics.median(rates)


def machine() -> dict:
    """CPU model, core count, memory and library versions, for the results file."""
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}


def peak_rss_mib(n: int = 10_000, variant: str = "int8") -> float:
    """Peak RSS (MiB) of a fresh process that loads the classifier and classifies ``n`` headlines."""
    # VmHWM of the child itself: ru_maxrss would include the parent's peak, which survives exec
    code = (
        "import sys\n"
        "from models.bench import _headlines\n"
        "from models import Classifier\n"
        f"c = Classifier(device='cpu', variant='{variant}')\n"
        f"texts = _headlines({n})\n"
        "for i in range(0, len(texts), 1024):\n"
        "    c.classify(texts[i:i+1024])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(hwm.split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return round(int(out.stdout.strip().splitlines()[-1]) / 1024, 1)


def run_bench(quick: bool = False, peer: bool = True, batch_sizes=(1, 8, 32, 128)) -> dict:
    """Run the benchmark; returns a dict of figures with a ``table`` (markdown) entry.

    :param quick: fewer headlines and one repeat (a smoke run).
    :param peer: also time the Hugging Face pipeline (needs the ``train`` extra).
    :param batch_sizes: Classifier batch sizes to time.
    """
    from .classifier import Classifier
    from .export import BUILD_DIR

    n = 256 if quick else 2048
    repeats = 1 if quick else 3
    texts = _headlines(n)
    results: dict = {"machine": machine(), "headlines": n, "repeats": repeats, "classifier": {}}
    variants = ["int8"]
    fp32_path = BUILD_DIR / "model.fp32.opt.onnx"
    if fp32_path.exists():
        variants.insert(0, "fp32")
    for variant in variants:
        clf = Classifier(device="cpu", onnx_path=fp32_path if variant == "fp32" else None)
        results["classifier"][variant] = {}
        for bs in batch_sizes:
            clf.batch_size = bs
            sample = texts if bs > 1 else texts[: n // 4]

            def run(ts, clf=clf, bs=bs):
                for i in range(0, len(ts), bs):
                    clf.classify(ts[i:i + bs])

            results["classifier"][variant][str(bs)] = round(_rate(run, sample, repeats), 1)
    if peer:
        results["peer"] = _peer(texts[: 64 if quick else 256], repeats)
        base = results["classifier"]["int8"]["32"]
        results["ratio_int8_b32_vs_peer"] = round(base / results["peer"]["headlines_per_s"], 1)
    results["peak_rss_mib_10k"] = peak_rss_mib(2_000 if quick else 10_000)
    results["table"] = _table(results)
    return results


def _peer(texts: list[str], repeats: int) -> dict:
    import torch

    # BertTokenizerFast exists at runtime in every supported transformers (>=4.44), but 5.x exports it only
    # through its lazy module (an alias of BertTokenizer), so its type stubs lack the name
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, pipeline  # type: ignore[attr-defined]

    from .network import base_encoder_dir

    torch.manual_seed(0)
    # bert-base: 12 layers, 768 hidden, 110M parameters (FinBERT's shape). transformers 5.x makes BertConfig a
    # dataclass; the __init__ mypy derives from its fields lacks num_labels, which the runtime accepts as an extra kwarg
    cfg = BertConfig(num_labels=3)  # type: ignore[call-arg]
    model = BertForSequenceClassification(cfg).eval()
    tok = BertTokenizerFast.from_pretrained(str(base_encoder_dir()))  # same uncased WordPiece vocabulary
    pipe = pipeline("text-classification", model=model, tokenizer=tok, device=-1)

    def run(ts):
        for t in ts:
            pipe(t, truncation=True, max_length=128)

    return {"model": "BertForSequenceClassification (bert-base shape, random weights)",
            "call": "pipeline('text-classification') once per headline", "torch_threads": torch.get_num_threads(),
            "headlines_per_s": round(_rate(run, texts, repeats), 1)}


def _table(r: dict) -> str:
    bss = list(next(iter(r["classifier"].values())).keys())
    lines = ["| variant | " + " | ".join(f"batch {b}" for b in bss) + " |", "|---|" + "---:|" * len(bss)]
    for v, row in r["classifier"].items():
        lines.append(f"| {v} | " + " | ".join(f"{row[b]:.0f}" for b in bss) + " |")
    if "peer" in r:
        lines.append(f"\nHF pipeline peer (BERT-base, one call per headline): "
                     f"{r['peer']['headlines_per_s']:.1f} headlines/s; "
                     f"int8 batch 32 is {r['ratio_int8_b32_vs_peer']}x faster")
    lines.append(f"peak RSS, load + classify 10,000 headlines (int8): {r['peak_rss_mib_10k']} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    res = run_bench(quick="--quick" in sys.argv, peer="--no-peer" not in sys.argv)
    print(json.dumps(res, indent=2) if "--json" in sys.argv else res["table"])
