#!/usr/bin/env bash
# Create .venv (if missing) and install finpulse with the extras given as arguments.
#   scripts/bootstrap.sh dev          runtime + broker/redis binaries (demo)
#   scripts/bootstrap.sh dev,train    + torch (CPU build) and transformers (tests, training)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [[ ",$extras," == *",train,"* ]]; then
  # exact pin: a looser one downloads the CUDA build (GBs); 2.13.0 resolves to the CPU wheel here
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[$extras]"
