#!/usr/bin/env bash
# make bench: runs every benchmark that needs no GPU and prints markdown tables.
# Usage: bench/run.sh BUILD_DIR   (results also saved under BUILD_DIR/bench-results/)
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$build/bench-results"
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
{
  echo "# facework benchmarks, $stamp"
  echo
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo
  for t in 1 2; do
    "$build/fw_bench" --threads "$t" --rounds "${FW_BENCH_ROUNDS:-5}" --repeats "${FW_BENCH_REPEATS:-5}"
    echo
  done
  "$build/fw_bench" --quality --threads 1 --rounds "${FW_BENCH_ROUNDS:-5}" \
    --repeats "${FW_BENCH_REPEATS:-5}"
  echo
  # FW_BENCH_WEBGPU=0 skips it (on lavapipe it takes about 2 minutes)
  if [ "${FW_BENCH_WEBGPU:-1}" != 0 ]; then
    bash "$root/bench/webgpu.sh" "$build"
  fi
  if [ -x "$build/fw_loadgen" ] && [ -f "$root/bench/worker.sh" ]; then
    bash "$root/bench/worker.sh" "$build"
  fi
  if [ -x "$build/fw_loadgen" ] && [ -f "$root/bench/backend.sh" ]; then
    echo
    bash "$root/bench/backend.sh" "$build"
  fi
} | tee "$out/bench-$stamp.md"
