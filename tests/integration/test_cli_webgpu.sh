#!/usr/bin/env bash
# `facework analyze --provider webgpu DIR` as a user runs it, on the host's Vulkan device (in
# `make test`: Mesa's software device lavapipe, from `make webgpu-deps`): the six photos and
# tests/data/images give the CPU's face counts and every embedding's cosine to the CPU's is
# >= 0.999, boxes within 1 px (scripts/gpu/summarize.py --compare, as on the GPU host). `auto` never takes a software WebGPU device and
# says why; bad WebGPU options are clear errors.
set -euo pipefail
# shellcheck source=tests/integration/cli-env.sh
. "$(dirname "$0")/cli-env.sh"
cmp="${FW_SOURCE_DIR:?}/scripts/gpu/summarize.py"
export FACEWORK_LOG_LEVEL=info
cd "$tmp"

mkdir imgs
cp "$photos"/sample*.jpg "$FW_TEST_DATA"/images/*.jpg imgs/

"$fw" analyze --provider cpu imgs >cpu.json 2>cpu.log || fail "cpu run: $(tail -3 cpu.log)"
# batches of at most 4: the warm-up compiles the shaders for 1, 2 and 4, and every run is
# padded to one of them
"$fw" analyze --provider webgpu --max-batch 4 imgs >webgpu.json 2>webgpu.log ||
    fail "webgpu run: $(tail -5 webgpu.log)"
grep -q 'embedder=embedder/webgpu' webgpu.log || fail "the embedder did not run on webgpu"
$py -c 'import json,sys; p = json.load(open(sys.argv[1]))["provider"]; sys.exit(p != "webgpu")' \
    webgpu.json || fail "the webgpu run reports another provider"
$py "$cmp" --compare cpu.json webgpu.json --label WebGPU || fail "webgpu differs from the cpu"
n=$($py -c 'import json,sys; print(sum(len(r["faces"]) for r in json.load(open(sys.argv[1]))["results"]))' webgpu.json)
[ "$n" -eq 22 ] || fail "expected the photos' 22 faces on webgpu, got $n"

# auto on a host without a GPU (no device node, or only a software Vulkan device): never
# WebGPU, with the reason logged
if [ "${FW_EXPECT_PROVIDER:-}" = "" ]; then
    "$fw" models >models.json 2>auto.log
    grep -q 'provider=webgpu reason="\(no GPU device\|only a software Vulkan device\|no WebGPU adapter\)' auto.log ||
        fail "auto: no reason for skipping webgpu: $(grep webgpu auto.log | head -n 3)"
    ! grep -q '"provider": *"webgpu"' models.json || fail "auto picked WebGPU on a host without a GPU"
fi

# bad options: clear errors, no crash
set +e
"$fw" detect --provider webgpu --webgpu-backend metal "$photos/sample1.jpg" >/dev/null 2>err.txt
rc=$?
[ $rc -eq 1 ] && grep -q "unknown WebGPU backend 'metal'" err.txt || fail "bad backend: rc=$rc $(cat err.txt)"
"$fw" detect --provider webgpu --webgpu-power fast "$photos/sample1.jpg" >/dev/null 2>err.txt
rc=$?
[ $rc -eq 1 ] && grep -q "unknown WebGPU power preference" err.txt || fail "bad power: rc=$rc"
"$fw" detect --max-batch 0 "$photos/sample1.jpg" >/dev/null 2>err.txt
rc=$?
[ $rc -eq 2 ] || fail "bad --max-batch: rc=$rc"
set -e
echo "ok: webgpu matches the cpu on $n faces"
