#!/usr/bin/env bash
# Starts the facework worker and the backend in the background and waits until each
# answers /health, like the original start-gpu-worker.ps1.
#
#   scripts/start-gpu-worker.sh [--skip-worker] [--skip-backend] [--timeout SECONDS]
#
# Settings come from the environment / .env as usual (FACEWORK_LISTEN, FACEWORK_BACKEND_LISTEN,
# GPU_WORKER_URL, ...). When this script starts the worker and GPU_WORKER_URL is set neither
# in the environment nor in ./.env, the backend is pointed at that worker.
# Logs go to $FACEWORK_LOG_DIR (default ./logs); pids to $FACEWORK_LOG_DIR/*.pid.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${FACEWORK_BIN:-$root/build/facework}"
logdir="${FACEWORK_LOG_DIR:-$PWD/logs}"
skip_worker=0 skip_backend=0 timeout=180
while [ $# -gt 0 ]; do
  case $1 in
    --skip-worker) skip_worker=1 ;;
    --skip-backend) skip_backend=1 ;;
    --timeout) timeout=$2; shift ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "start-gpu-worker: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin" ] || { echo "start-gpu-worker: $bin not built (run make)" >&2; exit 1; }
mkdir -p "$logdir"

wait_health() { # name url pid
  local name=$1 url=$2 pid=$3 deadline=$((SECONDS + timeout)) delay=0.1
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "start-gpu-worker: $name exited; see $logdir/$name.log" >&2
      tail -n 20 "$logdir/$name.log" >&2 || true
      return 1
    fi
    if curl -fsS -m 2 "$url/health" >/dev/null 2>&1; then
      echo "$name ready at $url (pid $pid)"
      return 0
    fi
    sleep "$delay"
    delay=$(awk -v d="$delay" 'BEGIN { d *= 2; print (d > 2 ? 2 : d) }')
  done
  echo "start-gpu-worker: $name not healthy after ${timeout}s" >&2
  return 1
}

# A setting as the services see it: the environment, else the last NAME=value line of ./.env
# (quotes and a trailing " # comment" removed), else the default.
setting() { # name default
  local name=$1 v raw
  v=$(printenv "$name" 2>/dev/null || true)
  if [ -z "$v" ] && [ -f .env ]; then
    raw=$(sed -n "s/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}${name}[[:space:]]*=[[:space:]]*//p" \
      .env | tail -n 1)
    case $raw in
      \"*) v=${raw#\"}; v=${v%%\"*} ;;
      \'*) v=${raw#\'}; v=${v%%\'*} ;;
      *) v=$(printf '%s' "$raw" | sed -e 's/[[:space:]]\{1,\}#.*$//' -e 's/[[:space:]]*$//') ;;
    esac
  fi
  echo "${v:-$2}"
}

# http://HOST:PORT for the first address of a listen list; a wildcard host is reached
# through the loopback.
local_url() {
  local addr=${1%%,*}
  case $addr in
    0.0.0.0:*) addr="127.0.0.1:${addr#0.0.0.0:}" ;;
    \[::\]:*) addr="[::1]:${addr#\[::\]:}" ;;
  esac
  echo "http://$addr"
}

worker_url=
if [ $skip_worker -eq 0 ]; then
  listen=$(setting FACEWORK_LISTEN 127.0.0.1:8765)
  worker_url=$(local_url "$listen")
  nohup "$bin" worker --listen "$listen" >"$logdir/worker.log" 2>&1 &
  echo $! >"$logdir/worker.pid"
  wait_health worker "$worker_url" "$!"
fi
if [ $skip_backend -eq 0 ]; then
  if "$bin" backend --help >/dev/null 2>&1; then
    blisten=$(setting FACEWORK_BACKEND_LISTEN 127.0.0.1:8000)
    if [ -n "$worker_url" ] && [ -z "$(setting GPU_WORKER_URL '')" ]; then
      export GPU_WORKER_URL="$worker_url"
    fi
    nohup "$bin" backend --listen "$blisten" >"$logdir/backend.log" 2>&1 &
    echo $! >"$logdir/backend.pid"
    wait_health backend "$(local_url "$blisten")" "$!"
  else
    echo "start-gpu-worker: this build has no backend yet; skipped" >&2
  fi
fi
