#!/usr/bin/env bash
# The WebGPU row of `make bench`: fw_bench on the CPU provider and on the WebGPU provider,
# same process settings, one after the other in this run, each table followed by the
# providers and (for WebGPU) the adapter it ran on. On a host whose only Vulkan device is
# Mesa's lavapipe (this one, and CI) that adapter is a SOFTWARE device: the WebGPU figures
# then measure a CPU emulating a GPU, i.e. what WebGPU costs here, not what a GPU does; the
# line under the table says so. On a GPU host (AMD/Intel/NVIDIA with a Vulkan driver) the
# same script gives the real figures; scripts/gpu/device.sh runs the ceiling too.
# Usage: bench/webgpu.sh BUILD_DIR. Knobs: FW_WEBGPU_ROUNDS (1), FW_WEBGPU_REPEATS (3),
# FW_WEBGPU_MAX_BATCH (8: on lavapipe the warm-up of 1..64 alone takes about a minute).
set -euo pipefail
build=${1:-build}
rounds=${FW_WEBGPU_ROUNDS:-1}
repeats=${FW_WEBGPU_REPEATS:-3}
max_batch=${FW_WEBGPU_MAX_BATCH:-8}
export FACEWORK_LOG_LEVEL=${FACEWORK_LOG_LEVEL:-warn}
echo "## WebGPU provider beside the CPU (fw_bench --threads 1 --max-batch $max_batch --rounds $rounds --repeats $repeats)"
echo
for p in cpu webgpu; do
  echo "### provider $p"
  echo
  if ! "$build/fw_bench" --provider "$p" --threads 1 --max-batch "$max_batch" --rounds "$rounds" \
      --repeats "$repeats" 2>"$build/bench-webgpu-$p.err"; then
    echo "fw_bench --provider $p failed: $(tail -n 2 "$build/bench-webgpu-$p.err" | tr '\n' ' ')"
  fi
  echo
done
