"""Build the demo's bundled sample: real headlines, assigned event times, one negative burst.

Headlines are taken verbatim from the MIT-licensed training split of the Twitter Financial News
sentiment corpus (``data/twitter-financial-news-sentiment/sent_train.csv``); the corpus has no
timestamps, so event times are *assigned* by this script (seeded, reproducible) on one trading
day, 2024-03-12 UTC:

* 08:00-13:00  250 headlines drawn at random (the corpus' own mix: mostly neutral);
* 13:00-13:14  a burst: 32 bearish oil / energy headlines and 6 random ones;
* 13:15-15:30  110 calm headlines (bullish or neutral) so the burst's alert resolves.

Run: ``python scripts/make_demo_sample.py`` (writes ``data/demo/sample.jsonl``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "data" / "twitter-financial-news-sentiment" / "sent_train.csv"
OUT = ROOT / "data" / "demo" / "sample.jsonl"
DAY = datetime(2024, 3, 12, tzinfo=UTC)
OIL = re.compile(r"\b(oil|crude|OPEC|Brent|WTI|barrels?|refiner\w*|shale)\b", re.I)


def main(seed: int = 2024) -> None:
    rng = random.Random(seed)
    rows = [(r["text"], int(r["label"])) for r in csv.DictReader(open(SRC, encoding="utf-8", newline=""))]
    oil_neg = [t for t, y in rows if y == 0 and OIL.search(t)]
    others = [(t, y) for t, y in rows if not OIL.search(t)]
    rng.shuffle(oil_neg)
    rng.shuffle(others)
    background = others[:250]
    burst_fill = others[250:256]
    calm = [(t, y) for t, y in others[256:] if y != 0][:110]

    def at(start_h: float, end_h: float) -> datetime:
        return DAY + timedelta(seconds=rng.uniform(start_h * 3600, end_h * 3600))

    items = [(at(8, 13), t) for t, _ in background]
    items += [(at(13, 13 + 14 / 60), t) for t in oil_neg[:32]]
    items += [(at(13, 13 + 14 / 60), t) for t, _ in burst_fill]
    items += [(at(13.25, 15.5), t) for t, _ in calm]
    items.sort(key=lambda x: x[0])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as fh:
        for when, text in items:
            published = when.replace(microsecond=0).isoformat().replace("+00:00", "Z")
            msg = {
                "id": "demo-" + hashlib.sha256(text.encode()).hexdigest()[:16],
                "title": text,
                "source": "twitter-financial-news (MIT)",
                "published_at": published,
                "lang": "en",
            }
            fh.write(json.dumps(msg, ensure_ascii=False) + "\n")
    print(f"wrote {len(items)} headlines to {OUT}")


if __name__ == "__main__":
    main()
