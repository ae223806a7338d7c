#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang and runs each one.
#   scripts/fuzz.sh [--seconds N] [--jobs J] [NAME...]
# Each harness starts from tests/fuzz/corpus/<name>/ (read-only seeds) plus a working
# corpus in build-fuzz/corpus/<name>/; crashes land in build-fuzz/crashes/. Exit status is
# non-zero when any harness found a crash. `make test` runs every harness for a few
# seconds; `make fuzz FUZZ_TIME=600` runs them for as long as asked.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=10 jobs=1 names=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    *) names+=("$1") ;;
  esac
  shift
done
build="$root/build-fuzz"
CC=clang cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFW_FUZZ=ON >/dev/null
if [ ${#names[@]} -eq 0 ]; then
  for f in "$root"/tests/fuzz/fuzz_*.c; do names+=("$(basename "$f" .c)"); done
fi
cmake --build "$build" -j "$(nproc)" --target "${names[@]}" >/dev/null
mkdir -p "$build/crashes"
status=0
for n in "${names[@]}"; do
  short=${n#fuzz_}
  work="$build/corpus/$short"
  mkdir -p "$work"
  seeds=()
  [ -d "$root/tests/fuzz/corpus/$short" ] && seeds+=("$root/tests/fuzz/corpus/$short")
  log="$build/$n.log"
  if "$build/$n" -max_total_time="$seconds" -jobs="$jobs" -workers="$jobs" -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$build/crashes/$n-" -print_final_stats=1 \
      "$work" "${seeds[@]}" >"$log" 2>&1; then
    execs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    printf 'fuzz: %-18s ok   %6ss  %10s executions\n' "$n" "$seconds" "$execs"
  else
    printf 'fuzz: %-18s FAILED (see %s)\n' "$n" "$log"
    tail -n 30 "$log"
    status=1
  fi
done
exit $status
