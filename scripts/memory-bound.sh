#!/usr/bin/env bash
# Peak RSS of the worker under hostile load (README "Memory"), with the default limits and
# with the tighter limits the README suggests for exposed deployments.
#
#   scripts/memory-bound.sh [--build DIR] [--seconds S]
#
# For each configuration: starts build/facework worker (ephemeral port), notes its RSS once
# ready, then runs fw_memload phases one after the other: "bodies" (clients uploading
# bodies just under --max-body, slowly, so all are held at once; more clients than
# --max-connections in the tight set) and "bombs" (requests of 16 PNGs at just under
# --max-pixels each, one colour: tiny to send, 3 bytes a pixel decoded; as many in flight as
# --max-queue allows); in the tight set also "h2streams" (32 such uploads as concurrent
# streams of a single HTTP/2 connection: h2o 2.2 admits 100 per connection, each up to
# --max-body, whatever --max-connections says). Prints a markdown
# table: the worker's RSS before, its peak (VmHWM, reset before each phase) and after.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
seconds=30
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "memory-bound.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
fw=$build/facework
load=$build/fw_memload
[ -x "$fw" ] && [ -x "$load" ] || { echo "memory-bound.sh: build $build first (fw_memload)" >&2; exit 2; }
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT

MiB=$((1 << 20))
has_decoded=$("$fw" worker --help 2>&1 | grep -c -- --max-decoded-mb || true)

start_worker() { # worker args...: sets pid and url
    rm -f "$tmp/port"
    "$fw" worker --listen 127.0.0.1:0 --port-file "$tmp/port" --lock-file "$tmp/lock" \
        --log-level error "$@" 2>"$tmp/worker.log" &
    pid=$!
    for _ in $(seq 600); do [ -s "$tmp/port" ] && break; sleep 0.1; done
    [ -s "$tmp/port" ] || { cat "$tmp/worker.log"; exit 1; }
    url="http://$(head -1 "$tmp/port")"
}

stop_worker() {
    kill -TERM $pid
    wait $pid || true
    pid=""
}

# Each phase on a fresh worker, so that its peak is its own.
run_set() { # label, body bytes, part bytes, body clients, pixels, bomb clients, worker args...
    local label=$1 body=$2 part=$3 bclients=$4 pixels=$5 pclients=$6
    shift 6
    start_worker "$@"
    "$load" --url "$url" --pid $pid --phase bodies --clients "$bclients" --seconds "$seconds" \
        --body-bytes "$body" --part-bytes "$part" --send-seconds 5 --label "$label"
    stop_worker
    if [ "${H2STREAMS:-0}" -gt 0 ]; then
        start_worker "$@"
        "$load" --url "$url" --pid $pid --phase h2streams --clients "$H2STREAMS" \
            --seconds "$seconds" --body-bytes "$body" --send-seconds 5 --label "$label"
        stop_worker
    fi
    start_worker "$@"
    "$load" --url "$url" --pid $pid --phase bombs --clients "$pclients" --images 16 \
        --pixels "$pixels" --seconds "$seconds" --label "$label"
    stop_worker
}

echo "Worker: $fw (tree at $(git rev-parse --short HEAD 2>/dev/null || echo '?') + working" \
    "changes), $(nproc) cores; --max-decoded-mb $([ "$has_decoded" -gt 0 ] && echo present || echo absent)"
echo
echo "| limits | load | clients | requests | 2xx/413/4xx/5xx/none | RSS before MiB | peak MiB | after MiB | worker |"
echo "|---|---|---:|---:|---|---:|---:|---:|---|"
run_set "defaults (--max-body 64MiB, --max-connections 1024, --max-pixels 50M)" \
    $((60 * MiB)) $((19 * MiB)) 16 49000000 8
tight=(--max-body 16MiB --max-connections 32 --max-image-bytes 8MiB --max-pixels 12000000
    --max-queue 64)
[ "$has_decoded" -gt 0 ] && tight+=(--max-decoded-mb 128)
H2STREAMS=32 run_set "tight (${tight[*]})" $((15 * MiB)) $((7 * MiB)) 48 12000000 4 "${tight[@]}"
