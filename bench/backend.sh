#!/usr/bin/env bash
# make bench, part 3: the backend in front of one worker against the worker directly, and
# the backend's CPU-fallback path.
#
# Usage: bench/backend.sh BUILD_DIR   (bench/run.sh calls it; prints markdown on stdout)
#        bench/backend.sh --report TSV  (the report again, from a saved run)
#
# In one run, with the same photos, request composition and fw_loadgen settings:
#   1. one worker (as in bench/worker.sh: --threads 1 --decode-threads 2) and a backend in
#      front of it (GPU_WORKER_URL = that worker; --batch-size 64, so that one request to the
#      backend is one request to the worker);
#   2. per point (concurrency x images per request), fw_loadgen against the worker's URL and
#      against the backend's URL back to back, in the order worker, backend, backend, worker
#      (drift on a shared machine hits both alike); the backend's cost is
#      1 - (backend img/s) / (worker img/s) over the sums of both rounds. Goal: at most 10%.
#   3. a second backend whose GPU_WORKER_URL is a closed port: every image goes to its
#      in-process CPU fallback; fw_loadgen against it gives the fallback path's img/s, next to
#      the in-process pipeline at the same concurrency (fw_loadgen --in-process) for scale.
# CPU columns: the target's CPU over the window (fw_loadgen --pid), and the worker's and the
# backend's over the whole fw_loadgen call (from /proc/PID/stat), so that the worker behind
# the backend shows too; the backend's CPU time per image is reported with the goal.
#
# Settings (environment):
#   FW_BACKEND_BENCH_POINTS     "CONCURRENCY:IMAGES" pairs [4:1 4:8]
#   FW_BACKEND_BENCH_HTTP       protocols between fw_loadgen and the servers [1]
#   FW_BACKEND_BENCH_DURATION   seconds measured per run [15]
#   FW_BACKEND_BENCH_WARMUP     seconds of unmeasured lead-in per run [3]
#   FW_BACKEND_BENCH_FALLBACK   "CONCURRENCY:IMAGES" pairs for the fallback path [2:1 2:8]
#   FW_BACKEND_ARGS             more backend flags (both backends)
#   FW_WORKER_THREADS, FW_WORKER_DECODE_THREADS   as in bench/worker.sh [1, 2]
set -euo pipefail
build=${1:-build}
[ "$build" = "--report" ] || build=$(cd "$build" && pwd) # backends run in a scratch dir
stamp=$(date -u +%Y%m%dT%H%M%SZ)
points=${FW_BACKEND_BENCH_POINTS:-4:1 4:8}
protos=${FW_BACKEND_BENCH_HTTP:-1}
dur=${FW_BACKEND_BENCH_DURATION:-15}
warm=${FW_BACKEND_BENCH_WARMUP:-3}
fb_points=${FW_BACKEND_BENCH_FALLBACK:-2:1 2:8}
threads=${FW_WORKER_THREADS:-1}
decode_threads=${FW_WORKER_DECODE_THREADS:-2}
ncpu=$(nproc)
tck=$(getconf CLK_TCK)

# The markdown report of a run: table and goals.
report() { # tsv "W F" (front backend items) "W F" (fallback backend) dead_url
  awk -F'\t' -v split_front="$2" -v split_fb="$3" -v dead="$4" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    function v(name) { return $(col[name]) }
    function num(x, d) { return x == "-" ? "-" : sprintf("%." d "f", x) }
    {
      rows[NR] = $0; n = NR
      key = v("http") SUBSEP v("concurrency") SUBSEP v("images_per_request")
      if (v("target") == "worker" || v("target") == "backend") {
        if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
        sum[v("target"), key] += v("img_per_s"); cnt[v("target"), key]++
        # fw_loadgen --pid: the target process CPU over the window (the backend for backend
        # rows, the worker for worker rows)
        tcpu[v("target"), key] += v("worker_cpu_pct") / 100 * v("window_s")
        timg[v("target"), key] += v("images")
        if (v("other_cpu_pct") != "-" && v("other_cpu_pct") - (v("target") == "backend" ? \
            v("worker_proc_cpu_pct") : 0) > 25) noisy = 1
      }
      bad += v("errors") + v("mismatches")
      if (v("target") == "fallback" || v("target") == "inproc") {
        fk = v("concurrency") SUBSEP v("images_per_request")
        if (!(fk in fseen)) { fseen[fk] = 1; forder[++nf] = fk }
        frate[v("target"), fk] = v("img_per_s")
      }
    }
    END {
      print "| target | HTTP | concurrency | img/req | img/s | p50 ms | p95 ms | errors |" \
            " target CPU % | worker CPU % (call) | backend CPU % (call) | other CPU % |"
      print "|---|---|---|---|---|---|---|---|---|---|---|---|"
      for (r = 2; r <= n; r++) {
        $0 = rows[r]
        t = v("target") == "inproc" ? "in-process" : v("target") == "fallback" ? "backend, CPU fallback" : v("target")
        printf "| %s | %s | %d | %d | %.1f | %s | %s | %d | %s | %s | %s | %s |\n", t,
          v("target") == "inproc" ? "-" : (v("http") == 2 ? "2" : "1.1"), v("concurrency"),
          v("images_per_request"), v("img_per_s"), num(v("p50_ms"), 1), num(v("p95_ms"), 1),
          v("errors") + v("mismatches"), num(v("worker_cpu_pct"), 0), num(v("worker_proc_cpu_pct"), 0),
          v("target") == "inproc" ? "-" : num(v("backend_proc_cpu_pct"), 0), num(v("other_cpu_pct"), 0)
      }
      print ""
      print "CPU in % of one core. target CPU: the process fw_loadgen sent to (worker, backend," \
            " or this script for in-process) over the window; worker / backend CPU (call): that" \
            " process over the whole fw_loadgen call (warm-up, window, drain); other CPU:" \
            " everything but the target during the window (for backend rows that includes the" \
            " worker behind it)."
      split(split_front, sf, " "); split(split_fb, sb, " ")
      print "Images computed by the worker / by the CPU fallback: backend in front of the worker " \
            sf[1] " / " sf[2] "; fallback backend (GPU_WORKER_URL " dead ", nothing listening) " \
            sb[1] " / " sb[2] "."
      print ""
      print "### goals"
      print ""
      worst = 0
      for (j = 1; j <= nk; j++) {
        key = order[j]; split(key, p, SUBSEP)
        if (!cnt["worker", key] || !cnt["backend", key]) continue
        w = sum["worker", key] / cnt["worker", key]; b = sum["backend", key] / cnt["backend", key]
        cost = 100 * (1 - b / w)
        if (cost > worst) worst = cost
        printf "- backend cost, HTTP/%s, concurrency %d, %d img/req: %.1f vs %.1f img/s direct" \
               " (mean of 2 runs each): %+.1f%% throughput: goal at most 10%%: %s\n",
          p[1] == 2 ? "2" : "1.1", p[2], p[3], b, w, -cost, cost <= 10 ? "met" : "NOT met"
        if (timg["backend", key] > 0 && timg["worker", key] > 0) {
          bms = 1e3 * tcpu["backend", key] / timg["backend", key]
          wms = 1e3 * tcpu["worker", key] / timg["worker", key]
          printf "  CPU per image: backend %.2f ms, worker %.1f ms (direct runs): the backend adds" \
                 " %.1f%% to the CPU work per image, the cost on a host where both share the" \
                 " cores and the worker is CPU-bound (contention skews it far less than img/s)\n",
            bms, wms, 100 * bms / wms
        }
      }
      for (j = 1; j <= nf; j++) {
        fk = forder[j]; split(fk, p, SUBSEP)
        if (!(("fallback", fk) in frate)) continue
        printf "- CPU fallback path (no worker reachable), concurrency %d, %d img/req: %.1f img/s", \
          p[1], p[2], frate["fallback", fk]
        if (("inproc", fk) in frate && frate["inproc", fk] > 0)
          printf " = %.0f%% of the in-process pipeline at the same concurrency (%.1f img/s)", \
            100 * frate["fallback", fk] / frate["inproc", fk], frate["inproc", fk]
        printf "\n"
      }
      if (bad) print "- errors or face-count mismatches: " bad " (see the table): figures are suspect"
      if (noisy) print "- contention: other processes used over 25% of a core during some runs" \
        " (other CPU, less the worker behind the backend): the img/s ratios carry that noise;" \
        " the CPU-per-image figures much less"
    }' "$1"
}
# bench/backend.sh --report TSV: the report again, from a saved run.
if [ "${1:-}" = "--report" ]; then
  [ $# -ge 2 ] || { echo "usage: backend.sh --report TSV" >&2; exit 2; }
  report "$2" "? ?" "? ?" "?"
  exit 0
fi

for exe in facework fw_loadgen; do
  [ -x "$build/$exe" ] || { echo "backend.sh: $build/$exe is missing (build first)" >&2; exit 2; }
done
if ! "$build/facework" backend --help >/dev/null 2>&1; then
  echo "backend.sh: this build has no backend (no client library); skipped" >&2
  exit 0
fi
out="$build/bench-results"
mkdir -p "$out"
tsv="$out/backend-$stamp.tsv"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fw-backend-bench.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits for a port file written by a started service; prints its URL.
wait_port() { # name pid portfile log
  local _
  for _ in $(seq 600); do
    [ -s "$3" ] && { echo "http://$(cat "$3")"; return 0; }
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "backend.sh: the $1 did not become ready:" >&2
  tail -n 20 "$4" >&2
  exit 1
}

# CPU seconds (user + system) of a process so far.
cpu_s() { # pid
  awk -v t="$tck" '{ sub(/^.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# A free loopback port: bound, then closed (nothing listens on it afterwards).
closed_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo 9 # discard: nothing listens there on a normal host
}

# Runs fw_loadgen and appends one TSV row: target, http, c, k, loadgen columns, worker and
# backend CPU % of one core over the call.
run_point() { # target(worker|backend|fallback|inproc) http c k url pid (url, pid: not inproc)
  local target=$1 h=$2 c=$3 k=$4 url=$5 pid=$6 line rc=0 w0 w1 b0 b1 t0 t1 args
  if [ "$target" = inproc ]; then
    args=(--in-process --threads "$threads")
  else
    args=(--url "$url" --pid "$pid" --http "$h")
  fi
  w0=$(cpu_s "$worker_pid"); b0=$(cpu_s "$backend_pid"); t0=$(date +%s.%N)
  line=$("$build/fw_loadgen" "${args[@]}" --concurrency "$c" --images-per-request "$k" \
    --warmup "$warm" --duration "$dur" --timeout 300 --format tsv --header \
    2>"$tmp/loadgen.err") || rc=$?
  t1=$(date +%s.%N); w1=$(cpu_s "$worker_pid"); b1=$(cpu_s "$backend_pid")
  if [ -z "$line" ]; then
    echo "backend.sh: fw_loadgen ($target c=$c k=$k) failed: $(tail -n 3 "$tmp/loadgen.err")" >&2
    return 0
  fi
  [ "$rc" -eq 0 ] || echo "backend.sh: fw_loadgen ($target): $(tail -n 1 "$tmp/loadgen.err")" >&2
  [ -s "$tsv" ] || printf 'target\thttp\t%s\tworker_proc_cpu_pct\tbackend_proc_cpu_pct\n' \
    "$(printf '%s\n' "$line" | head -n 1)" >"$tsv"
  awk -v a="$w0" -v b="$w1" -v c="$b0" -v d="$b1" -v s="$t0" -v e="$t1" -v target="$target" \
    -v h="$h" -v row="$(printf '%s\n' "$line" | tail -n 1)" 'BEGIN {
      printf "%s\t%s\t%s\t%.1f\t%.1f\n", target, h, row, 100 * (b - a) / (e - s),
        100 * (d - c) / (e - s) }' >>"$tsv"
}

# Items the backend at url computed by workers and by the fallback ("W F").
items_split() { # url
  curl -s -m 5 "$1/health" | /usr/bin/python3 -c \
    'import json, sys; h = json.load(sys.stdin); print(h["items_worker"], h["items_fallback"])' \
    2>/dev/null || echo "? ?"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')

# --- the worker and the backends -----------------------------------------------------------
"$build/facework" worker --listen 127.0.0.1:0 --port-file "$tmp/wport" --lock-file "$tmp/lock" \
  --threads "$threads" --decode-threads "$decode_threads" --max-queue 512 \
  --request-timeout 600s --log-level warn 2>"$tmp/worker.log" &
worker_pid=$!
pids+=("$worker_pid")
wurl=$(wait_port worker "$worker_pid" "$tmp/wport" "$tmp/worker.log")

# The client's settings as flags, so that GPU_WORKER_* from the caller's environment or a
# .env cannot change what is measured: no retries needed on a healthy worker, deadlines far
# above any latency of the sweep, one worker request per backend request.
backend_flags=(--listen 127.0.0.1:0 --threads 64 --max-pending 4096 --request-timeout 600s
  --log-level warn --batch-size 64 --timeout 600s --attempt-timeout 600s --max-retries 2
  --worker-connections 64)
# shellcheck disable=SC2206 # FW_BACKEND_ARGS is a list of flags
backend_flags+=(${FW_BACKEND_ARGS:-})
(cd "$tmp" && exec "$build/facework" backend "${backend_flags[@]}" --port-file "$tmp/bport" \
  --worker-url "$wurl" --wait-ready 60s 2>"$tmp/backend.log") &
backend_pid=$!
pids+=("$backend_pid")
burl=$(wait_port backend "$backend_pid" "$tmp/bport" "$tmp/backend.log")

names=$(for h in $protos; do [ "$h" = 2 ] && printf ' HTTP/2 (h2c)' || printf ' HTTP/1.1'; done)
echo "## backend in front of one worker (fw_loadgen over${names}, worker --threads $threads --decode-threads $decode_threads)"
echo
echo "machine: $ncpu cores, $cpu_model; load average before: $load_before; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo

for h in $protos; do
  for pt in $points; do
    c=${pt%%:*}; k=${pt##*:}
    for target in worker backend backend worker; do
      if [ "$target" = worker ]; then
        run_point worker "$h" "$c" "$k" "$wurl" "$worker_pid"
      else
        run_point backend "$h" "$c" "$k" "$burl" "$backend_pid"
      fi
    done
  done
done
split_front=$(items_split "$burl")
kill -TERM "$backend_pid" 2>/dev/null || true
wait "$backend_pid" 2>/dev/null || true

# --- the fallback path: a backend whose only worker URL is a closed port ---------------------
dead="http://127.0.0.1:$(closed_port)"
(cd "$tmp" && exec "$build/facework" backend "${backend_flags[@]}" --port-file "$tmp/fport" \
  --worker-url "$dead" --connect-timeout 500ms 2>"$tmp/fallback.log") &
backend_pid=$!
pids+=("$backend_pid")
furl=$(wait_port "fallback backend" "$backend_pid" "$tmp/fport" "$tmp/fallback.log")
# the worker stays up but idle (its CPU column shows ~0): same machine state as above
for pt in $fb_points; do
  c=${pt%%:*}; k=${pt##*:}
  run_point fallback 1 "$c" "$k" "$furl" "$backend_pid"
  run_point inproc - "$c" "$k" "" ""
done
split_fallback=$(items_split "$furl")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report --------------------------------------------------------------------------------
report "$tsv" "$split_front" "$split_fallback" "$dead"
echo
echo "load average before: $load_before; after: $load_after (other work on the machine skews" \
  "every figure; compare rows of one run only)"
echo "raw results: $tsv"
