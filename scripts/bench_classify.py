"""Classifier throughput benchmark; same as ``finpulse bench``. Usage: python scripts/bench_classify.py [--json] [--quick] [--no-peer]"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finpulse.models.bench import run_bench  # noqa: E402

if __name__ == "__main__":
    res = run_bench(quick="--quick" in sys.argv, peer="--no-peer" not in sys.argv)
    print(json.dumps(res, indent=2) if "--json" in sys.argv else res["table"])
