#!/usr/bin/env bash
# Valgrind memcheck over the integration tests: every facework process they start (workers,
# the CLI) runs under valgrind; the test programs themselves do not.
#
#   scripts/valgrind.sh [--build DIR] [--tests REGEX] [--jobs N] [--no-build]
#
# Builds DIR (default build-valgrind: Debug, no sanitizers, integration-test timeout raised)
# and runs `ctest -L integration` there with FW_TEST_WRAPPER set (tests/integration/harness.h:
# the harness execs facework under it and multiplies its own deadlines by
# FW_TEST_TIME_SCALE, 40 by default). Each process writes DIR/valgrind/vg.<pid>.log.
# Afterwards every log is scanned: an error is any valgrind report with a stack (invalid
# access, uninitialised value, overlap, bad free, a definitely/indirectly lost block, a
# crash). Third-party noise is suppressed by tests/valgrind.supp, each entry justified there.
#
# Under the wrapper the heaviest tests (test_worker_batches, test_worker_load) send a few
# dozen images instead of a few hundred, over the same code paths (harness.h fwt_reduced);
# FW_TEST_FULL=1 keeps their whole workload (about 100 s of CPU per image under memcheck).
#
# Exit status: 0 when every test passed and no log holds an error; 1 otherwise.
# Extra valgrind options: VALGRIND_EXTRA="--track-origins=yes" (slower still).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

build=build-valgrind
tests=""
jobs=1
do_build=1
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --tests) tests=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "valgrind.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed (scripts/setup.sh installs it)" >&2; exit 1; }

if [ $do_build = 1 ]; then
    # Debug, no sanitizers (valgrind and ASan do not mix); ctest's per-test timeout raised
    # to 4 h since each worker start loads the models for ~45 s under valgrind.
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DFW_SANITIZE=OFF -DFW_TEST_TIMEOUT=14400 >/dev/null
    cmake --build "$build" -j "$(nproc)"
fi

logs=$root/$build/valgrind
rm -rf "$logs"
mkdir -p "$logs"

wrapper="valgrind --tool=memcheck --error-exitcode=99 --leak-check=full"
wrapper+=" --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect"
wrapper+=" --num-callers=40 --trace-children=yes --fair-sched=yes --gen-suppressions=all"
wrapper+=" --suppressions=$root/tests/valgrind.supp --log-file=$logs/vg.%p.log"
wrapper+=" ${VALGRIND_EXTRA:-}"
export FW_TEST_WRAPPER=$wrapper

echo "valgrind.sh: $(valgrind --version), build $build, logs in $logs"
start=$(date +%s)
ctest_rc=0
ctest --test-dir "$build" -L integration ${tests:+-R "$tests"} -j "$jobs" --output-on-failure \
    || ctest_rc=$?
elapsed=$(($(date +%s) - start))

# An error header is a line "==PID== Text" directly followed by its stack ("==PID==    at").
# "Process terminating with default action of signal N" is a crash unless N is a signal a
# test sends on purpose (SIGTERM, SIGINT, SIGKILL, SIGHUP).
scan() {
    awk '
        /^==[0-9]+== [^ ]/ { hdr = $0; sub(/^==[0-9]+== /, "", hdr); next }
        /^==[0-9]+==    (at|by) / {
            if (hdr != "") {
                if (hdr ~ /^Process terminating with default action of signal (1|2|9|15) /) { hdr = ""; next }
                print hdr
            }
            hdr = ""; next
        }
        { hdr = "" }
    ' "$1"
}

n_logs=0
n_bad=0
n_err=0
n_summary=0
: >"$logs/errors.txt"
for f in "$logs"/vg.*.log; do
    [ -e "$f" ] || continue
    n_logs=$((n_logs + 1))
    grep -q "ERROR SUMMARY" "$f" && n_summary=$((n_summary + 1))
    errs=$(scan "$f")
    if [ -n "$errs" ]; then
        n_bad=$((n_bad + 1))
        n_err=$((n_err + $(printf '%s\n' "$errs" | wc -l)))
        {
            echo "== $f ($(sed -n 's/^==[0-9]*== Command: //p' "$f" | head -1 | cut -c1-120))"
            printf '%s\n' "$errs" | sort | uniq -c
        } >>"$logs/errors.txt"
    fi
done

echo
echo "valgrind.sh: ${elapsed}s; ctest exit $ctest_rc; $n_logs processes ($n_summary ran to exit," \
    "the others were killed by their test); $n_err errors in $n_bad of them"
if [ $n_bad -gt 0 ]; then
    cat "$logs/errors.txt"
    echo "valgrind.sh: full reports (with suppression stubs) in the logs above"
fi
[ $ctest_rc -eq 0 ] && [ $n_bad -eq 0 ]
