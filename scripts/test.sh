#!/usr/bin/env bash
# Fresh machine -> full default test suite (real Tansu broker + real redis-server, started by fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev,train
. .venv/bin/activate
exec python -m pytest -q "$@"
