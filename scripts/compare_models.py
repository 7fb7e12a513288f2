"""Compare two model versions on everything the model issue measures, in one run on one machine.

For each of ``--old`` and ``--new`` (model directories; default old = the shipped model):

* upstream validation splits, int8 as the runtime scores (the manifest's decision rule applied):
  topic accuracy / macro-F1, sentiment accuracy / macro-F1 (reported, never used to select);
* finpulse's news-style ``dev`` split: the same, plus how often a clearly polar headline is called
  neutral and the sign accuracy on polar headlines; the same on the held-out news ``test`` set
  (``data/news-test``, never used to choose);
* label stability: 3,000 headlines (2,500 validation tweets and 500 news dev items, so both kinds of
  text share batches) scored one at a time, then in shuffled batches of 17, 32 and 64; labels that
  differ from the one-at-a-time labels are counted;
* throughput through ``Classifier.classify`` at batch 32 on 2,000 validation headlines (tweets) and,
  when ``../shared/streams`` is there, on 2,000 real news headlines (the BBC Business stream's titles,
  shorter than tweets), old and new interleaved, median of ``--repeats`` runs each.

The held-out set is also reported by voice (``s*`` ids: report sentences, ``h*``: headlines), in full
and on the items every labelling pass agreed on, the breakdown of the issue's real-news goals.

Usage: python scripts/compare_models.py --new DIR [--old DIR] [--repeats 5] [--out docs/model-compare.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finpulse.models import Classifier  # noqa: E402
from finpulse.models.data import NEWS_FILE, NEWS_TEST_FILE, load_news, load_split  # noqa: E402
from finpulse.models.labels import SENTIMENT_LABELS, TOPIC_LABELS  # noqa: E402
from finpulse.models.metrics import classification_report  # noqa: E402


def labelled(clf: Classifier, texts: list[str], gold: dict[str, list[int]]) -> dict:
    res = clf.classify(texts)
    out = {}
    for task, labels in (("topic", TOPIC_LABELS), ("sentiment", SENTIMENT_LABELS)):
        if task not in gold:
            continue
        idx = {n: i for i, n in enumerate(labels)}
        rep = classification_report(gold[task], [idx[r[task]] for r in res], labels)
        out[task] = {"accuracy": round(rep["accuracy"], 4), "macro_f1": round(rep["macro_f1"], 4), "n": rep["n"]}
    return {"report": out, "results": res}


def news_set(clf: Classifier, path: Path = NEWS_FILE, split: str = "dev") -> dict:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    gold = {t: [labels.index(r[t]) for r in rows]
            for t, labels in (("topic", list(TOPIC_LABELS)), ("sentiment", list(SENTIMENT_LABELS)))}
    got = labelled(clf, [r["headline"] for r in rows], gold)
    out = {**got["report"], **polar_figures(list(zip(rows, got["results"], strict=True)))}
    if split == "test":  # by voice, and on the items every labelling pass agreed on
        for voice, prefix in (("sentences", "s"), ("headlines", "h")):
            for subset in ("all", "agreed"):
                pairs = [(r, p) for r, p in zip(rows, got["results"], strict=True)
                         if r["id"].startswith(prefix) and (subset == "all" or r["agreed"] == "yes")]
                out[f"{voice}/{subset}"] = {
                    "n": len(pairs),
                    "sentiment_accuracy": round(sum(p["sentiment"] == r["sentiment"] for r, p in pairs) / len(pairs), 4),
                    **polar_figures(pairs)}
    return out


def polar_figures(pairs: list[tuple[dict, dict]]) -> dict:
    """How many labelled-polar items, how many of them were called neutral, how many got the right sign."""
    polar = [(r, p) for r, p in pairs if r["sentiment"] != "neutral"]
    return {"polar_headlines": len(polar),
            "polar_called_neutral": round(sum(p["sentiment"] == "neutral" for _, p in polar) / len(polar), 4),
            "polar_sign_accuracy": round(sum(p["sentiment"] == r["sentiment"] for r, p in polar) / len(polar), 4)}


def upstream(clf: Classifier) -> dict:
    out = {}
    for task in ("topic", "sentiment"):
        exs = load_split(task, "valid")
        out[task] = labelled(clf, [e.text for e in exs], {task: [e.label for e in exs]})["report"][task]
    return out


def stability(clf: Classifier, texts: list[str]) -> dict:
    def relabel(batch: int, seed: int) -> list[tuple[str, str]]:
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        got: dict[int, tuple[str, str]] = {}
        for i in range(0, len(order), batch):
            chunk = order[i:i + batch]
            for j, r in zip(chunk, clf.classify([texts[k] for k in chunk]), strict=True):
                got[j] = (r["topic"], r["sentiment"])
        return [got[i] for i in range(len(texts))]

    alone = relabel(1, 0)
    changed = {"topic": 0, "sentiment": 0}
    for b, seed in ((17, 1), (32, 2), (64, 3)):
        for a, x in zip(alone, relabel(b, seed), strict=True):
            changed["topic"] += a[0] != x[0]
            changed["sentiment"] += a[1] != x[1]
    return {"headlines": len(texts), "batchings": [17, 32, 64], "labels_changed": changed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--new", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    models = {"old": Classifier(args.old, device="cpu", batch_size=32),
              "new": Classifier(args.new, device="cpu", batch_size=32)}
    out: dict = {"machine": f"{platform.machine()} {platform.processor() or ''} {__import__('os').cpu_count()} cores",
                 "versions": {k: c.model_version for k, c in models.items()}}
    valid = [e.text for e in load_split("topic", "valid")] + [e.text for e in load_split("sentiment", "valid")]
    random.Random(7).shuffle(valid)
    news_dev = [e.text for e in load_news("dev") if e.task == "sentiment"]
    mixed = valid[:2500] + news_dev[:500]
    random.Random(8).shuffle(mixed)
    for k, clf in models.items():
        out[k] = {"upstream_valid_int8": upstream(clf), "news_dev": news_set(clf),
                  "news_test": news_set(clf, NEWS_TEST_FILE, "test"), "stability": stability(clf, mixed)}
        print(k, json.dumps(out[k]), flush=True)
    benches = {"throughput_batch32": valid[:2000]}
    stream = ROOT.parent / "shared" / "streams" / "bbc_business_2022-2024.csv"
    if stream.exists():
        import csv

        with open(stream, newline="", encoding="utf-8") as fh:
            benches["throughput_batch32_news"] = [r["title"] for r in csv.DictReader(fh)][:2000]
    for name, bench in benches.items():
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.repeats):
            for k, clf in models.items():
                t0 = time.perf_counter()
                for i in range(0, len(bench), 32):
                    clf.classify(bench[i:i + 32])
                times[k].append(len(bench) / (time.perf_counter() - t0))
        out[name] = {k: {"median_headlines_per_s": round(statistics.median(v), 1),
                         "runs": [round(x, 1) for x in v]} for k, v in times.items()}
        out[name]["new_vs_old"] = round(statistics.median(times["new"]) / statistics.median(times["old"]) - 1, 4)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
