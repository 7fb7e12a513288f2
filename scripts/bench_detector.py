"""Detector cost in a replay, without Kafka or the classifier.

Builds the same 50,000-headline, 14-day history as ``scripts/bench_replay.py`` and gives every
row a label without running the model (the corpus label where the row has one, otherwise a seeded
draw from that head's label frequencies; tickers from ``models.tickers.extract_tickers``), so the
figures measure the windows and the detector alone. The scored rows are counted into a fresh
redis-server with ``WindowStore.record`` in batches of 256 (the aggregate agent's largest batch)
in event-time order, and ``Detector.evaluate()`` runs after each batch, as in a backtest; a final
``flush()`` closes the rest. Prints the seconds spent in ``record`` and in the detector, the
alert counts, and a digest of the alert records (``created_at`` left out), so that two versions of
the detector can be checked for the same alerts as well as timed.

Usage: python scripts/bench_detector.py [--rows 50000] [--days 14] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_replay import START as REPLAY_START  # noqa: E402  (scripts/ is on sys.path)
from bench_replay import corpus  # noqa: E402

from finpulse.alerts.config import load_config  # noqa: E402
from finpulse.alerts.detector import Detector  # noqa: E402
from finpulse.alerts.store import WindowStore  # noqa: E402
from finpulse.core.rfc3339 import format as format_time  # noqa: E402
from finpulse.core.settings import Settings  # noqa: E402
from finpulse.models.labels import SENTIMENT_LABELS, TOPIC_LABELS  # noqa: E402
from finpulse.models.tickers import extract_tickers  # noqa: E402
from finpulse.stack import free_port, redis_server_binary, wait_for_redis  # noqa: E402

BATCH = 256
START = int(REPLAY_START.timestamp())


def scored_history(rows: int, days: float = 14.0, seed: int = 7) -> list[dict]:
    """``rows`` scored messages over ``days`` days, in event-time order (see the module docstring)."""
    examples = corpus()
    rng = random.Random(seed)
    topic_freq = [0] * len(TOPIC_LABELS)
    sent_freq = [0] * len(SENTIMENT_LABELS)
    for e in examples:
        (topic_freq if e.task == "topic" else sent_freq)[e.label] += 1
    out = []
    span_s = days * 86400
    for i in range(rows):
        e = examples[i % len(examples)]
        topic = e.label if e.task == "topic" else rng.choices(range(len(TOPIC_LABELS)), topic_freq)[0]
        sent = e.label if e.task == "sentiment" else rng.choices(range(len(SENTIMENT_LABELS)), sent_freq)[0]
        name = SENTIMENT_LABELS[sent]
        score = {"negative": -0.8, "positive": 0.8}.get(name, 0.0)
        out.append({"id": f"r{i}", "published_at": format_time(START + i * span_s / rows), "title": e.text,
                    "topic": TOPIC_LABELS[topic], "sentiment": name, "sentiment_score": score,
                    "tickers": extract_tickers(e.text), "model_version": "bench"})
    return out


async def one_run(url: str, rows: list[dict], namespace: str) -> dict:
    import redis.asyncio as aioredis

    redis = aioredis.Redis.from_url(url)
    config = load_config(ROOT / "config" / "rules.toml")
    store = WindowStore.from_settings(redis, Settings(namespace=namespace, bucket_seconds=60))
    detector = Detector.from_config(store, config, clock=lambda: 0.0)
    t_record = t_detect = 0.0
    counted = 0
    emitted: list[dict] = []
    for i in range(0, len(rows), BATCH):
        t0 = time.perf_counter()
        res = await store.record(rows[i:i + BATCH])
        counted += res.counted
        t1 = time.perf_counter()
        alerts = await detector.evaluate()
        await detector.mark_emitted(alerts)
        t_detect += time.perf_counter() - t1
        t_record += t1 - t0
        emitted += alerts
    t1 = time.perf_counter()
    alerts = await detector.flush()
    t_detect += time.perf_counter() - t1
    emitted += alerts
    await redis.aclose()
    canon = sorted(json.dumps({k: v for k, v in a.items() if k not in ("created_at", "namespace")}, sort_keys=True)
                   for a in emitted)
    return {"counted": counted, "record_s": round(t_record, 2), "detector_s": round(t_detect, 2),
            "fired": sum(a["status"] == "fired" for a in emitted),
            "resolved": sum(a["status"] == "resolved" for a in emitted),
            "alerts_sha256": hashlib.sha256("\n".join(canon).encode()).hexdigest()[:16]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--days", type=float, default=14.0, help="event-time span of the history")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = scored_history(args.rows, args.days)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="finpulse-bench-detector-")
    server = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
        runs = [asyncio.run(one_run(url, rows, f"bench{k}")) for k in range(args.repeat)]
    finally:
        server.terminate()
        server.wait()
    digests = {r["alerts_sha256"] for r in runs}
    out = {"rows": args.rows, "days": args.days, "runs": runs,
           "median_record_s": statistics.median(r["record_s"] for r in runs),
           "median_detector_s": statistics.median(r["detector_s"] for r in runs),
           "fired": runs[0]["fired"], "resolved": runs[0]["resolved"],
           "alerts_sha256": digests.pop() if len(digests) == 1 else sorted(digests)}
    print(json.dumps(out, indent=2) if args.json else json.dumps(out))


if __name__ == "__main__":
    main()
