#!/usr/bin/env bash
# scripts/start-gpu-worker.sh as an operator runs it: it starts the worker and the backend in
# the background, waits for both to answer /health, and points the backend at that worker.
# The listen addresses come from ./.env (as the services themselves read them); GPU_WORKER_URL
# is set nowhere, so the script must hand the backend the worker's URL. Then --skip-worker
# with GPU_WORKER_URL in the environment: the backend alone, pointed where it says.
set -euo pipefail
fw=${FW_FACEWORK:?}
src=${FW_SOURCE_DIR:?}
photos=${FW_PHOTOS_DIR:?}
py=/usr/bin/python3
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$tmp"/logs*/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}
[ -x "$py" ] || { echo "no $py: skipped"; exit 0; }
if ! "$fw" backend --help >/dev/null 2>&1; then echo "no backend in this build: skipped"; exit 0; fi
# FW_TEST_WRAPPER (scripts/valgrind.sh): the script starts the services, and the CLI runs,
# under it. The test's waits and the services' clocks then stretch by FW_TEST_TIME_SCALE
# (40 by default, as in tests/integration/harness.h), set through the environment the
# services read; a value the caller set is kept.
scale=1
if [ -n "${FW_TEST_WRAPPER:-}" ]; then
  printf '#!/bin/sh\nexec %s %q "$@"\n' "$FW_TEST_WRAPPER" "$fw" >"$tmp/fw-wrapped"
  chmod +x "$tmp/fw-wrapped"
  fw=$tmp/fw-wrapped
  scale=${FW_TEST_TIME_SCALE:-40}
  scale=${scale%.*}
  # the services' clocks, as tests/integration/slow-clocks.txt lists them for harness.c
  while read -r cmd _ var ms; do
    case $cmd in '' | '#'*) continue ;; esac
    [ -z "${!var:-}" ] || continue # set by the caller: kept
    v=$((ms * scale))
    export "$var=$((v < 3600000 ? v : 3600000))ms"
  done <"$src/tests/integration/slow-clocks.txt"
fi
# waits on the script and on exits, in seconds and in 50 ms polls
run_s=$((120 * scale)) health_s=$((60 * scale)) stop_polls=$((200 * scale))
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wport=$(free_port)
bport=$(free_port)
unset GPU_WORKER_URL FACEWORK_LISTEN FACEWORK_BACKEND_LISTEN
export FACEWORK_BIN=$fw FACEWORK_LOCK_FILE=$tmp/worker.lock FACEWORK_LOG_LEVEL=info

cd "$tmp"
cat >.env <<EOF
# as an operator would write it
export FACEWORK_LISTEN="127.0.0.1:$wport"
FACEWORK_BACKEND_LISTEN=127.0.0.1:$bport   # the backend
EOF
FACEWORK_LOG_DIR=$tmp/logs timeout $run_s bash "$src/scripts/start-gpu-worker.sh" --timeout $health_s \
  >out.txt 2>&1 || { cat out.txt >&2; fail "start-gpu-worker.sh failed"; }
pids+=("$(cat logs/worker.pid)" "$(cat logs/backend.pid)")
grep -q "worker ready at http://127.0.0.1:$wport" out.txt || fail "worker line: $(cat out.txt)"
grep -q "backend ready at http://127.0.0.1:$bport" out.txt || fail "backend line: $(cat out.txt)"

# the backend's only worker is the one the script started, and it computes the images
curl -fsS "http://127.0.0.1:$bport/health" >health.json || fail "backend /health"
curl -fsS -F "image=@$photos/sample1.jpg" "http://127.0.0.1:$bport/v1/analyze" >analyze.json ||
  fail "backend /v1/analyze"
"$py" - "$wport" <<'PY' || fail "backend not wired to the worker"
import json, sys
url = "http://127.0.0.1:%s" % sys.argv[1]
h = json.load(open("health.json"))
assert h["role"] == "backend" and h["status"] == "healthy", h
assert [w["url"] for w in h["workers"]] == [url], h["workers"]
a = json.load(open("analyze.json"))
assert a["origins"] == [url], a["origins"]
assert len(a["results"][0]["faces"]) == 3, a["results"][0]
PY
"$fw" health "http://127.0.0.1:$bport" >health.txt || fail "facework health: $(cat health.txt)"
grep -q "1 of 1 healthy" health.txt || fail "facework health: $(cat health.txt)"

# stop the backend (SIGTERM: clean exit); --skip-worker, GPU_WORKER_URL from the environment
# (here the running worker under another spelling of its address) wins over the script's own
kill -TERM "$(cat logs/backend.pid)"
for _ in $(seq $stop_polls); do kill -0 "$(cat logs/backend.pid)" 2>/dev/null || break; sleep 0.05; done
kill -0 "$(cat logs/backend.pid)" 2>/dev/null && fail "the backend did not stop on SIGTERM"
GPU_WORKER_URL="http://localhost:$wport" FACEWORK_LOG_DIR=$tmp/logs2 timeout $run_s \
  bash "$src/scripts/start-gpu-worker.sh" --skip-worker --timeout $health_s >out2.txt 2>&1 ||
  { cat out2.txt >&2; fail "start-gpu-worker.sh --skip-worker failed"; }
pids+=("$(cat logs2/backend.pid)")
[ ! -e logs2/worker.pid ] || fail "--skip-worker started a worker"
curl -fsS "http://127.0.0.1:$bport/health" >health2.json || fail "backend /health (2)"
"$py" - "$wport" <<'PY' || fail "GPU_WORKER_URL from the environment not used"
import json, sys
h = json.load(open("health2.json"))
assert [w["url"] for w in h["workers"]] == ["http://localhost:%s" % sys.argv[1]], h["workers"]
PY
kill -TERM "$(cat logs2/backend.pid)" "$(cat logs/worker.pid)"
for p in "$(cat logs2/backend.pid)" "$(cat logs/worker.pid)"; do
  for _ in $(seq $((2 * stop_polls))); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$p" 2>/dev/null && fail "pid $p did not stop on SIGTERM"
done
# sanitizer builds: no report in any log
if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' logs/*.log logs2/*.log; then
  fail "a sanitizer report in the logs above"
fi
echo "start-gpu-worker.sh: worker and backend started, wired and healthy"
