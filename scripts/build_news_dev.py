"""Build data/news-dev/news_dev.csv (or data/news-test/news_test.csv) from the annotation passes
(data/news-dev/GUIDE.md).

Each headline has a first label (its writer's, ``first_pass_*.csv``) and a second, independent one
(``second_pass_*.csv``: an annotator who saw only the headline). Where they agree, that is the label;
where they disagree, a third independent label (``third_pass_*.csv``, for the disagreements only)
decides by majority, and when all three differ the third (adjudicating) label is kept. Topic and
sentiment are adjudicated separately. The split is fixed by a hash of the id: ``dev`` (measure and
select on it) or ``train`` (may be trained on), half each; ``--split test`` gives every row the
``test`` split instead (data/news-test: never trained or selected on).

Prints the agreement and the disagreements per field; writes the set and ``stats.json``.

Usage: python scripts/build_news_dev.py [--dir data/news-test --out news_test.csv --split test]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finpulse.models.labels import SENTIMENT_LABELS, TOPIC_LABELS  # noqa: E402

FIELDS = ("topic", "sentiment")


def read(folder: Path, pattern: str) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for path in sorted(folder.glob(pattern)):
        with path.open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                rows[r["id"]] = {k: (v or "").strip() for k, v in r.items()}
    return rows


def split_of(aid: str) -> str:
    return "dev" if int(hashlib.sha1(aid.encode()).hexdigest(), 16) % 2 == 0 else "train"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=str(ROOT / "data" / "news-dev"), help="folder of the annotation passes")
    ap.add_argument("--out", default="news_dev.csv", help="file name of the adjudicated set in --dir")
    ap.add_argument("--split", default=None, help="one split for every row (default: dev/train by id hash)")
    args = ap.parse_args()
    folder = Path(args.dir)
    first, second, third = (read(folder, f"{p}_pass_*.csv") for p in ("first", "second", "third"))
    valid = {"topic": set(TOPIC_LABELS), "sentiment": set(SENTIMENT_LABELS)}
    out, stats = [], {"headlines": 0, "second_pass_missing": 0,
                      **{f"{f}_agreed": 0 for f in FIELDS}, **{f"{f}_disagreed": 0 for f in FIELDS},
                      **{f"{f}_resolved_by_majority": 0 for f in FIELDS},
                      **{f"{f}_resolved_by_adjudicator": 0 for f in FIELDS},
                      **{f"{f}_unresolved": 0 for f in FIELDS}}
    confusions: dict[str, Counter] = {f: Counter() for f in FIELDS}
    for aid, r in sorted(first.items()):
        for f in FIELDS:
            if r[f] not in valid[f]:
                raise SystemExit(f"{aid}: {f} {r[f]!r} is not a label")
        s = second.get(aid)
        if s is None:
            stats["second_pass_missing"] += 1
            continue
        row = {"id": aid, "headline": r["headline"], "split": args.split or split_of(aid)}
        agreed_all = True
        for f in FIELDS:
            a, b = r[f], s.get(f, "")
            if a == b:
                stats[f"{f}_agreed"] += 1
                row[f] = a
                continue
            agreed_all = False
            stats[f"{f}_disagreed"] += 1
            confusions[f][f"{a} / {b}"] += 1
            c = (third.get(aid) or {}).get(f, "")
            if c in (a, b):
                stats[f"{f}_resolved_by_majority"] += 1
                row[f] = c
            elif c in valid[f]:
                stats[f"{f}_resolved_by_adjudicator"] += 1
                row[f] = c
            else:
                stats[f"{f}_unresolved"] += 1
                row[f] = ""
        if any(not row[f] for f in FIELDS):
            continue
        row["agreed"] = "yes" if agreed_all else "no"
        out.append(row)
    stats["headlines"] = len(out)
    stats["splits"] = dict(Counter(r["split"] for r in out))
    stats["topics"] = dict(Counter(r["topic"] for r in out))
    stats["sentiments"] = dict(Counter(r["sentiment"] for r in out))
    stats["top_disagreements"] = {f: confusions[f].most_common(10) for f in FIELDS}
    with (folder / args.out).open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "headline", "topic", "sentiment", "split", "agreed"])
        w.writeheader()
        w.writerows(out)
    (folder / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps({k: v for k, v in stats.items() if k != "top_disagreements"}, indent=1))


if __name__ == "__main__":
    main()
