#!/usr/bin/env bash
# Prepares the GPU benchmark for the lent device machine (docs/gpu.md), here, so that the
# device builds nothing and the run there is one short call:
#   1. the CUDA/TensorRT execution providers (npm com.github.asus4.onnxruntime.linux-x64-gpu,
#      sha256-checked by scripts/setup.sh; fetched with FACEWORK_GPU=cuda when missing);
#   2. a build of facework, fw_bench and fw_loadgen (BUILD, default build/);
#   3. one bundle: those binaries (debug info stripped), libonnxruntime.so.1 with the provider
#      libraries beside it, every shared library the binaries need that is not glibc (the
#      device image lacks h2o, jansson, turbojpeg, spng, webp...), libstdc++/libgcc_s apart
#      (used there only if missing), the default models and the six test photos;
#   4. xz-compressed and split into pieces that fit one call each (the working tree travels
#      too: 64 MiB a call in all), in .gpu/pieces/ (git-ignored), with a manifest of sha256s;
#   5. prints the exact device calls to make, in order.
# The bundle also carries the Vulkan loader (libvulkan.so.1) so that device.sh can measure the
# WebGPU provider (Dawn on Vulkan) beside CUDA on the same GPU.
# Usage: scripts/gpu/pack.sh            (BUILD=dir, PIECE_MIB=n, FW_XZ_LEVEL=n to override)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${BUILD:-build}
piece_mib=${PIECE_MIB:-57}
xz_level=${FW_XZ_LEVEL:-6}
cache="${FACEWORK_CACHE:-$HOME/.cache/facework}"
out="$root/.gpu"
stage="$out/stage/fw"
say() { printf 'pack: %s\n' "$*" >&2; }
die() { printf 'pack: error: %s\n' "$*" >&2; exit 1; }

git check-ignore -q .gpu/x || die ".gpu/ is not git-ignored: pieces would travel in the tree"

# --- 1. the providers ----------------------------------------------------------------
gpu_lib_dir=""
for d in "$root/.deps/ort/lib" "$cache/ort/gpu"; do
  if [ -f "$d/libonnxruntime_providers_cuda.so" ] && [ -f "$d/libonnxruntime_providers_shared.so" ]; then
    gpu_lib_dir=$d
    break
  fi
done
if [ -z "$gpu_lib_dir" ]; then
  say "CUDA provider missing: FACEWORK_GPU=cuda scripts/setup.sh (about 200 MB, once)"
  FACEWORK_GPU=cuda bash "$root/scripts/setup.sh"
  gpu_lib_dir="$root/.deps/ort/lib"
fi
[ -f "$root/.deps/ort/lib/libonnxruntime.so.1" ] || die "no .deps/ort/lib/libonnxruntime.so.1: run make setup"

# --- 2. build -------------------------------------------------------------------------
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target facework fw_bench fw_loadgen >/dev/null ||
  die "build failed (cmake --build $build)"

# --- 3. the bundle ----------------------------------------------------------------------
rm -rf "$out/stage" "$out/pieces"
mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-fallback" "$stage/models/default" "$stage/photos" \
  "$out/pieces"
for b in facework fw_bench fw_loadgen; do
  cp "$build/$b" "$stage/bin/"
  strip --strip-debug "$stage/bin/$b"
done
cp "$root/.deps/ort/lib/libonnxruntime.so.1" "$stage/lib/"
ln -s libonnxruntime.so.1 "$stage/lib/libonnxruntime.so"
for f in libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so \
         libonnxruntime_providers_tensorrt.so; do
  [ -f "$gpu_lib_dir/$f" ] && cp "$gpu_lib_dir/$f" "$stage/lib/"
done
# Shared libraries of the binaries, except glibc's own (the device has a glibc at least as new).
glibc_re='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libnsl)\.so'
for b in "$stage"/bin/*; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r name path; do
  case "$name" in libonnxruntime.so.1) continue ;; esac
  if [[ $name =~ $glibc_re ]]; then continue; fi
  if [[ $name == libstdc++.so.6 || $name == libgcc_s.so.1 ]]; then
    cp -L "$path" "$stage/lib-fallback/$name"
  else
    cp -L "$path" "$stage/lib/$name"
  fi
done
# The Vulkan loader, for the WebGPU provider (dlopen'd, so ldd does not list it); device.sh
# uses it only where the device has none. The GPU's Vulkan driver (NVIDIA's ICD) must be the
# device's own.
vk_loader=$(ldconfig -p | awk '$1 == "libvulkan.so.1" && $NF ~ /^\// { print $NF; exit }')
if [ -n "$vk_loader" ]; then
  mkdir -p "$stage/lib-vulkan"
  cp -L "$vk_loader" "$stage/lib-vulkan/libvulkan.so.1"
else
  say "no libvulkan.so.1 here (make webgpu-deps): the WebGPU run needs the device's own"
fi
cp "$root/.deps/models/default/"*.onnx "$stage/models/default/"
cp "$root/.deps/photos/"*.jpg "$stage/photos/"
git -C "$root" rev-parse HEAD >"$stage/COMMIT" 2>/dev/null || echo unknown >"$stage/COMMIT"
git -C "$root" status --short >>"$stage/COMMIT" 2>/dev/null || true
(cd "$stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$out/stage/files.sha256"
cp "$out/stage/files.sha256" "$stage/FILES.sha256"
say "bundle: $(du -sh "$stage" | cut -f1) in $(find "$stage" -type f | wc -l) files"

# --- 4. compress and split --------------------------------------------------------------
say "compressing (xz -$xz_level, $(nproc) threads)..."
tar -C "$out/stage" -cf - fw | xz -"$xz_level" -T0 -c >"$out/stage/fw.tar.xz"
(cd "$out/pieces" && split -b "${piece_mib}M" -d -a 2 "$out/stage/fw.tar.xz" fw.tar.xz.)
total_sha=$(sha256sum "$out/stage/fw.tar.xz" | cut -d' ' -f1)
{
  echo "archive_sha256=$total_sha"
  echo "archive_bytes=$(stat -c %s "$out/stage/fw.tar.xz")"
  (cd "$out/pieces" && for p in fw.tar.xz.*; do echo "piece $p $(sha256sum "$p" | cut -d' ' -f1) $(stat -c %s "$p")"; done)
} >"$out/pieces/MANIFEST"
rm -rf "$out/stage/fw.tar.xz" "$stage" # the pieces are what travels
tree_bytes=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
mapfile -t pieces < <(cd "$out/pieces" && ls fw.tar.xz.*)
n=${#pieces[@]}
max_piece=$(stat -c %s "$out/pieces/${pieces[0]}")
limit=$((64 * 1024 * 1024))
if [ $((max_piece + tree_bytes + 4096)) -gt "$limit" ]; then
  die "a piece ($max_piece B) plus the working tree ($tree_bytes B) is over 64 MiB: PIECE_MIB=$((piece_mib - 2))"
fi
say "archive: $(sed -n 's/archive_bytes=//p' "$out/pieces/MANIFEST") bytes in $n pieces; working tree $tree_bytes bytes"

# --- 5. the plan ---------------------------------------------------------------------------
cat <<PLAN

Device plan ($((n)) calls, back to back: the machine stays warm only 30 s between calls, and
/tmp/fwgpu lives only while it is warm). Each call's carry is within 64 MiB with the tree.
PLAN
i=0
for p in "${pieces[@]}"; do
  i=$((i + 1))
  if [ "$i" -lt "$n" ]; then
    printf '\n%d. run(carry=[".gpu/pieces/%s"], timeout_s=120,\n   command="mkdir -p /tmp/fwgpu && cp .gpu/pieces/%s /tmp/fwgpu/ && ls -l /tmp/fwgpu && nvidia-smi -L")\n' \
      "$i" "$p" "$p"
  else
    printf '\n%d. run(carry=[".gpu/pieces/%s", ".gpu/pieces/MANIFEST"], timeout_s=540,\n   command="FW_RUN_BUDGET_S=480 bash scripts/gpu/device.sh")\n' "$i" "$p"
  fi
done
cat <<'PLAN'

The last call joins the pieces (checking the manifest's sha256s), unpacks to /tmp/fwgpu/root,
checks the CUDA libraries, and runs the benchmark; results come back under $OUT
(results.md first). Then give_back. A failed last call can be rerun at once while the
machine is warm (the pieces are still in /tmp/fwgpu). With one piece the plan is one call.
PLAN
