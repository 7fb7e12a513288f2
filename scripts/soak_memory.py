"""Memory soak: is Redis memory flat once the retention horizon has passed?

Feeds the window store and the detector (the code the worker runs) with live-like news whose event
time is the wall clock, on a real redis-server (or a 3-master Redis Cluster with ``--cluster``), with
the retention rules scaled down from days to minutes so that several horizons pass in one run:
buckets and seen sets live ``--retention`` seconds, hourly roll-ups ``--rollup-retention`` seconds, and
the rules' windows are seconds long. The ticker universe churns (new symbols keep appearing and old
ones go quiet), so a key family without a retention rule grows for the whole run. Samples
``used_memory`` (summed over the primaries), the number of keys and the size of the scope index
every ``--every`` seconds, and compares the second half of the run with the end of the first horizon.

Usage: python scripts/soak_memory.py [--minutes 6] [--rate 200] [--retention 90] [--cluster] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
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

from finpulse.alerts.detector import Detector  # noqa: E402
from finpulse.alerts.rules import Level, Rule  # noqa: E402
from finpulse.alerts.store import WindowStore  # noqa: E402
from finpulse.core import constants as C  # noqa: E402
from finpulse.core.connections import async_redis, primaries, sync_redis  # noqa: E402
from finpulse.core.rfc3339 import format as format_time  # noqa: E402
from finpulse.stack import free_port, redis_server_binary, wait_for_redis  # noqa: E402

TOPICS = ("Macro", "Earnings", "Energy | Oil", "Fed | Central Banks", "Company | Product News")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def symbol(k: int) -> str:
    """A distinct 4-letter ticker for each k (``AAAA``, ``AAAB``, ...)."""
    out = ""
    for _ in range(4):
        k, r = divmod(k, 26)
        out = LETTERS[r] + out
    return out


def rules() -> list[Rule]:
    common = {"short_window_s": 10, "baseline_window_s": 40, "levels": (Level("warning", 0.6),),
              "resolve_below": 0.4, "resolve_hold_s": 10, "cooldown_s": 20}
    return [Rule(name="topic", scope_type="topic", min_count=5, **common),
            Rule(name="ticker", scope_type="ticker", min_count=3, **common)]


def memory(url: str, ns: str) -> dict:
    client = sync_redis(url)
    try:
        nodes = primaries(client)
        used = sum(int(n.info("memory")["used_memory"]) for n in nodes)
        keys = sum(int(n.dbsize()) for n in nodes)
        scopes = int(client.zcard(C.ns_key(ns, C.SCOPES_KEY)))
    finally:
        client.close()
    return {"used_memory_mib": round(used / 2**20, 2), "keys": keys, "scopes": scopes}


async def soak(url: str, args) -> list[dict]:
    r = async_redis(url)
    ns = f"soak-{int(time.time())}"
    store = WindowStore(r, ns, bucket_seconds=1, retention_s=args.retention,
                        rollup_retention_s=args.rollup_retention)
    det = Detector(store, rules(), emit_lease_s=5)
    rng = random.Random(7)
    t_start = time.time()
    samples: list[dict] = []
    next_sample = t_start
    i = 0
    while time.time() - t_start < args.minutes * 60:
        now = time.time()
        block = int(now // args.churn)  # every `churn` seconds a new set of tickers is in the news
        batch = []
        for _ in range(args.rate):
            i += 1
            neg = rng.random() < 0.3
            batch.append({"id": f"s{i}", "published_at": format_time(now - rng.random()), "title": "shares move",
                          "url": f"https://soak.test/{i}", "source": "soak", "topic": rng.choice(TOPICS),
                          "sentiment": "negative" if neg else "neutral", "sentiment_score": -0.8 if neg else 0.0,
                          "tickers": [symbol(block * 40 + rng.randrange(40))], "model_version": "soak"})
        await store.record(batch)
        alerts = await det.evaluate()
        await det.mark_emitted(alerts)
        if now >= next_sample:
            m = memory(url, ns)
            samples.append({"t_s": round(now - t_start), **m})
            print(json.dumps(samples[-1]), flush=True)
            next_sample += args.every
        await asyncio.sleep(max(0.0, 1.0 - (time.time() - now)))
    await r.aclose()
    return samples


def summary(samples: list[dict], horizon_s: float) -> dict:
    """Memory after the first horizon vs the second half of the run (medians)."""
    after = [s for s in samples if s["t_s"] >= horizon_s]
    half = [s for s in samples if s["t_s"] >= samples[-1]["t_s"] / 2]
    if not after or not half:
        return {}
    first = after[: max(1, len(after) // 4)]
    out = {}
    for k in ("used_memory_mib", "keys", "scopes"):
        a, b = statistics.median(x[k] for x in first), statistics.median(x[k] for x in half)
        out[k] = {"after_first_horizon": a, "second_half": b, "ratio": round(b / a, 3) if a else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--rate", type=int, default=200, help="articles per second")
    ap.add_argument("--retention", type=int, default=90, help="bucket / seen-set / claim TTL (s)")
    ap.add_argument("--rollup-retention", type=int, default=120, help="hourly roll-up TTL (s)")
    ap.add_argument("--churn", type=int, default=20, help="seconds between ticker universes")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--cluster", action="store_true", help="a 3-master Redis Cluster instead of one Redis")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="finpulse-soak-") as tmp:
        if args.cluster:
            from finpulse.redis_cluster import LocalRedisCluster

            server = LocalRedisCluster(masters=3, replicas=0, log_dir=tmp).start()
            url, stop = server.url, server.stop
        else:
            port = free_port()
            proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--dir", tmp],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            url, stop = f"redis://127.0.0.1:{port}/0", proc.terminate
            wait_for_redis(url)
        try:
            samples = asyncio.run(soak(url, args))
        finally:
            stop()
    # every key family is bounded by the longest of: the TTLs, the scope horizon (rule span)
    horizon = max(args.retention, args.rollup_retention) + args.churn
    result = {"config": {k: v for k, v in vars(args).items() if k != "json"}, "horizon_s": horizon,
              "summary": summary(samples, horizon), "samples": samples}
    print(json.dumps(result if args.json else result["summary"], indent=2))


if __name__ == "__main__":
    main()
