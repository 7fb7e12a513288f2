"""Redis side of one worker: how many scored headlines per second the window store and the detector
take, on one redis-server and on a 3-master Redis Cluster (loopback, same machine).

Each run records ``--n`` scored headlines (real validation headlines, a topic each, a ticker for one
in three, event time 2 s apart) in batches of ``--batch`` into a fresh namespace, and runs the
detector after every batch, as the worker's ``aggregate`` agent does (the classifier is not involved).
Each configuration is run ``--repeat`` times; the median is reported.

Usage: python scripts/bench_store.py [--n 20000] [--batch 256] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finpulse.alerts.config import load_config  # noqa: E402
from finpulse.alerts.detector import Detector  # noqa: E402
from finpulse.alerts.store import WindowStore  # noqa: E402
from finpulse.core.connections import async_redis, primaries, sync_redis  # noqa: E402
from finpulse.core.settings import Settings  # noqa: E402
from finpulse.models.data import load_split  # noqa: E402
from finpulse.models.labels import TOPIC_LABELS as TOPICS  # noqa: E402
from finpulse.stack import free_port, redis_server_binary, wait_for_redis  # noqa: E402

TICKERS = ("AAPL", "MSFT", "JPM", "XOM", "TSLA", "NVDA", "BAC", "GS", "AMZN", "META", "WFC", "CVX")


def articles(n: int) -> list[dict]:
    texts = [e.text for e in load_split("topic", "valid")]
    start = datetime(2024, 6, 3, tzinfo=UTC)
    out = []
    for i in range(n):
        sent = ("negative", "neutral", "positive", "neutral")[i % 4]
        out.append({"id": f"b{i}", "title": texts[i % len(texts)], "source": "bench", "url": f"https://b.test/{i}",
                    "published_at": (start + timedelta(seconds=2 * i)).isoformat().replace("+00:00", "Z"),
                    "topic": TOPICS[i % len(TOPICS)], "sentiment": sent,
                    "sentiment_score": {"negative": -0.8, "neutral": 0.0, "positive": 0.7}[sent],
                    "tickers": [TICKERS[i % len(TICKERS)]] if i % 3 == 0 else [], "model_version": "bench"})
    return out


async def one_run(url: str, msgs: list[dict], batch: int, run: int) -> dict:
    r = async_redis(url)
    settings = Settings(namespace=f"bench-{run}-{int(time.time())}")
    store = WindowStore.from_settings(r, settings)
    det = Detector.from_config(store, load_config(settings.rules_file))
    t_rec = t_det = 0.0
    t0 = time.perf_counter()
    for off in range(0, len(msgs), batch):
        a = time.perf_counter()
        await store.record(msgs[off:off + batch], [0] * len(msgs[off:off + batch]))
        b = time.perf_counter()
        alerts = await det.evaluate()
        await det.mark_emitted(alerts)
        t_rec, t_det = t_rec + b - a, t_det + time.perf_counter() - b
    total = time.perf_counter() - t0
    await r.aclose()
    return {"headlines_per_s": len(msgs) / total, "record_ms_per_batch": 1000 * t_rec / (len(msgs) / batch),
            "detector_ms_per_batch": 1000 * t_det / (len(msgs) / batch)}


def commands(url: str) -> list[int]:
    """Commands processed so far by each primary."""
    client = sync_redis(url)
    try:
        return [int(n.info("stats")["total_commands_processed"]) for n in primaries(client)]
    finally:
        client.close()


def command_mix(url: str, reset: bool = False) -> dict[str, int]:
    """Calls per command name over every primary since the last reset (``INFO commandstats``)."""
    client = sync_redis(url)
    try:
        out: dict[str, int] = {}
        for node in primaries(client):
            if reset:
                node.config_resetstat()
                continue
            for name, st in node.info("commandstats").items():
                cmd = name.removeprefix("cmdstat_")
                out[cmd] = out.get(cmd, 0) + int(st["calls"])
        return out
    finally:
        client.close()


def measure(url: str, msgs: list[dict], batch: int, repeat: int) -> dict:
    before = commands(url)
    command_mix(url, reset=True)
    runs = [asyncio.run(one_run(url, msgs, batch, k)) for k in range(repeat)]
    per_node = [b - a for a, b in zip(before, commands(url), strict=True)]
    mix = command_mix(url)
    out = {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]} | {"runs": len(runs)}
    # how the Redis work spreads: commands per headline, and the busiest primary's share
    out["redis_commands_per_headline"] = round(sum(per_node) / (len(msgs) * repeat), 2)
    out["busiest_primary_share"] = round(max(per_node) / sum(per_node), 3)
    n = len(msgs) * repeat
    out["commands_per_headline_by_name"] = {k: round(v / n, 2) for k, v in
                                            sorted(mix.items(), key=lambda kv: -kv[1])[:8]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    msgs = articles(args.n)
    result: dict = {"n": args.n, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="finpulse-bench-store-") as tmp:
        port = free_port()
        proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "yes", "--appendfsync", "everysec", "--dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            wait_for_redis(url)
            result["one_redis"] = measure(url, msgs, args.batch, args.repeat)
        finally:
            proc.terminate()
            proc.wait()
        from finpulse.redis_cluster import LocalRedisCluster

        with LocalRedisCluster(masters=3, replicas=1, log_dir=str(Path(tmp) / "cluster")) as cluster:
            result["cluster_3_masters_1_replica_each"] = measure(cluster.url, msgs, args.batch, args.repeat)
    print(json.dumps(result, indent=2 if not args.json else None))


if __name__ == "__main__":
    main()
