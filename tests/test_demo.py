"""`finpulse demo --once`: the README's first command, with the real model, broker and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_demo_once_fires_and_delivers_the_burst_alert(stack):
    env = {**os.environ, "FINPULSE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "FINPULSE_REDIS_URL": stack.redis_url}
    env.pop("FINPULSE_MODEL_DIR", None)  # the shipped model
    res = subprocess.run([sys.executable, "-m", "finpulse.cli", "demo", "--once", "--quiet"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = res.stdout.strip().splitlines()[-1]
    assert summary.startswith("processed=398 ")
    assert "ALERT FIRED" in res.stdout and "scope=topic:Energy | Oil" in res.stdout
    assert "signature VERIFIED" in res.stdout and "INVALID" not in res.stdout
    fields = dict(kv.split("=") for kv in summary.split())
    assert int(fields["alerts"]) >= 1 and fields["alerts"] == fields["webhooks_verified"]
