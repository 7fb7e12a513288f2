#!/usr/bin/env bash
# Fresh machine -> the demo: embedded broker + Redis, worker, sample news with a negative burst,
# alerts delivered to a local signed-webhook receiver. Pass --once to exit after the sample.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
. .venv/bin/activate
exec finpulse demo "$@"
