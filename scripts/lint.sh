#!/usr/bin/env bash
# Static checks (CI runs them before the tests): ruff, the import contracts and mypy.
# The contracts and mypy read the *installed* package (the wheel installed into a temporary folder),
# which is what users run and where every layer sits under the one import root `finpulse`.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
. .venv/bin/activate
ruff check .
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip install -q --no-deps --no-build-isolation --target "$tmp/site" . 2>&1 | grep -v -e '^ ' -e '^!!' -e '^$' || true
cd "$tmp"
PYTHONPATH="$tmp/site" lint-imports "$root/pyproject.toml"
PYTHONPATH="$tmp/site" mypy --config-file "$root/pyproject.toml" -p finpulse
