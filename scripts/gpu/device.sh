#!/usr/bin/env bash
# The GPU benchmark, on the lent device machine, in one call (docs/gpu.md). Builds nothing:
# scripts/gpu/pack.sh made the bundle here, earlier calls left its pieces in /tmp/fwgpu, and
# this call carries the last piece and the manifest (.gpu/pieces/). Steps:
#   1. join the pieces (sha256 of each and of the whole checked), unpack to /tmp/fwgpu/root
#      (skipped when that archive is unpacked there already);
#   2. find the CUDA libraries the provider needs (the system paths, /usr/local/cuda, the
#      NVIDIA driver's folder, Python's nvidia-* wheels) and set LD_LIBRARY_PATH; nvidia-smi;
#   3. sample GPU utilisation and memory with nvidia-smi every 250 ms for the whole run;
#   4. correctness: facework analyze of the six photos on the CPU and on CUDA, compared
#      (face counts, boxes within 1 px, embedding cosine >= 0.999);
#   5. the bare-model ceiling on the GPU (fw_bench --ceiling, batches 1-64, 2 streams) and the
#      in-process pipeline's stage split (fw_bench --provider cuda);
#   5b. the WebGPU provider (Dawn on Vulkan) on the same GPU, beside CUDA: the host's
#      Vulkan drivers (ICD files), the six photos compared with the CPU, the bare-model
#      ceiling (fw_bench --ceiling --provider webgpu) and the in-process pipeline; a WebGPU
#      that does not start (no Vulkan driver for the GPU in the image) is reported, and the
#      run goes on (FW_DEVICE_WEBGPU=0 skips it);
#   6. the worker on CUDA and fw_loadgen against it over HTTP/1.1: concurrency 1-256 x
#      1/8/64 images per request on the 1440-px photos (1.4-1.7 MP JPEGs), images/s and
#      p50/p95/p99, worker and client CPU, batch sizes; plus the same requests in-process;
#   7. results.md: every table, GPU utilisation per point, the best figure against the
#      2,000 images/s goal and the ceiling, and which stage bounds it.
# Files in $OUT (at most 8): results.md, sweep.tsv, ceiling.md, pipeline.md, nvsmi.csv,
# worker.log, run.log.
# Settings: FW_RUN_BUDGET_S (480: stop starting sweep points past budget - 45 s),
# FW_DEVICE_PROVIDER (cuda), FW_SWEEP_CONCURRENCY ("1 4 16 64 256"), FW_SWEEP_IMAGES
# ("1 8 64"), FW_SWEEP_MAX_INFLIGHT (2048), FW_SWEEP_DURATION (4), FW_CEILING_SECONDS (3),
# FW_WORKER_ARGS (more worker flags), FW_DEVICE_WEBGPU (1; 0 skips step 5b). A dry run here,
# on the CPU (step 5b then runs WebGPU on lavapipe when make webgpu-deps installed it):
#   OUT=/tmp/fwout FW_DEVICE_PROVIDER=cpu FW_SWEEP_CONCURRENCY="1 4" FW_SWEEP_IMAGES="1 8" \
#     FW_SWEEP_DURATION=2 FW_CEILING_SECONDS=1 bash scripts/gpu/device.sh
set -uo pipefail

t_start=$(date +%s)
repo=$(cd "$(dirname "$0")/../.." && pwd)
budget=${FW_RUN_BUDGET_S:-480}
provider=${FW_DEVICE_PROVIDER:-cuda}
concs=${FW_SWEEP_CONCURRENCY:-1 4 16 64 256}
images=${FW_SWEEP_IMAGES:-1 8 64}
max_inflight=${FW_SWEEP_MAX_INFLIGHT:-2048}
duration=${FW_SWEEP_DURATION:-4}
ceiling_s=${FW_CEILING_SECONDS:-3}
work=${FW_DEVICE_WORK:-/tmp/fwgpu}
root=$work/root
OUT=${OUT:-$work/out}
mkdir -p "$OUT" "$work"
runlog=$OUT/run.log
: >"$runlog"
body=$work/body.md
: >"$body"
phases=$work/phases.tsv
: >"$phases"
ncpu=$(nproc)

elapsed() { echo $(($(date +%s) - t_start)); }
say() { printf '[%4ss] %s\n' "$(elapsed)" "$*" | tee -a "$runlog" >&2; }
die() {
  say "FAILED: $*"
  finish
  exit 1
}
phase_begin() { printf '%s\t%s' "$1" "$(date +%s.%N)" >>"$phases"; }
phase_end() { printf '\t%s\n' "$(date +%s.%N)" >>"$phases"; }
left() { echo $((budget - $(elapsed))); }

sampler_pid=
worker_pid=
finish() {
  if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -TERM "$worker_pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$worker_pid" 2>/dev/null
  fi
  worker_pid=
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; fi
  sampler_pid=
  # results.md: the header, the summary (verdict and tables), then the details
  {
    cat "$work/head.md"
    if command -v python3 >/dev/null 2>&1 && [ -f "$repo/scripts/gpu/summarize.py" ]; then
      python3 "$repo/scripts/gpu/summarize.py" --out "$OUT" --phases "$phases" \
        --provider "$provider" --cores "$ncpu" 2>>"$runlog" ||
        echo "(summarize.py failed: run.log)"
    fi
    cat "$body"
  } >"$OUT/results.md"
  say "done in $(elapsed) s; files: $(cd "$OUT" && echo *)"
}
trap 'die "interrupted"' INT TERM

rm -f "$OUT/results.md"
{
  echo "# facework GPU benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); host: $(uname -srm); $ncpu cores; provider: $provider"
} >"$work/head.md"

# --- 1. join and unpack --------------------------------------------------------------------
manifest=$repo/.gpu/pieces/MANIFEST
[ -f "$manifest" ] || die "no .gpu/pieces/MANIFEST: carry it with the last piece (scripts/gpu/pack.sh prints the plan)"
cp "$manifest" "$work/MANIFEST"
for p in "$repo"/.gpu/pieces/fw.tar.xz.*; do
  [ -f "$p" ] && cp "$p" "$work/"
done
want=$(sed -n 's/^archive_sha256=//p' "$work/MANIFEST")
if [ -f "$work/unpacked.sha256" ] && [ "$(cat "$work/unpacked.sha256")" = "$want" ] && [ -x "$root/bin/facework" ]; then
  say "bundle already unpacked ($want)"
else
  missing=0
  while read -r _ name sha _; do
    if [ ! -f "$work/$name" ]; then
      say "piece $name is missing from $work (an earlier call should have left it there)"
      missing=1
    elif [ "$(sha256sum "$work/$name" | cut -d' ' -f1)" != "$sha" ]; then
      say "piece $name: sha256 mismatch"
      missing=1
    fi
  done < <(grep '^piece ' "$work/MANIFEST")
  [ "$missing" -eq 0 ] || die "pieces missing or damaged: rerun the plan from the first call"
  pieces=$(grep '^piece ' "$work/MANIFEST" | awk '{print $2}' | sort)
  # shellcheck disable=SC2086 # $pieces is a list of file names
  got=$(cd "$work" && cat $pieces | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "joined archive sha256 $got, manifest says $want"
  rm -rf "$root" && mkdir -p "$root"
  # shellcheck disable=SC2086
  (cd "$work" && cat $pieces) | xz -T0 -dc | tar -x -C "$root" --strip-components=1 ||
    die "unpacking failed"
  (cd "$root" && sha256sum --quiet -c FILES.sha256) || die "unpacked files do not match FILES.sha256"
  echo "$want" >"$work/unpacked.sha256"
  say "unpacked $(du -sh "$root" | cut -f1) to $root"
fi
bin=$root/bin
models=$root/models/default
photos=$root/photos
echo "- bundle: $(head -n 1 "$root/COMMIT") (archive sha256 $want)" >>"$work/head.md"

# --- 2. libraries ---------------------------------------------------------------------------
libpath=$root/lib
add_dir() { case ":$libpath:" in *":$1:"*) ;; *) libpath=$libpath:$1 ;; esac; }
cands=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 \
         /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
  [ -d "$d" ] && cands+=("$d")
done
while IFS= read -r d; do cands+=("$d"); done < <(
  find /opt /usr/local /usr/lib /root -maxdepth 8 -type d -path '*site-packages/nvidia/*/lib' \
    2>/dev/null | sort)
find_lib() { # name -> first directory holding it
  local d
  for d in "${cands[@]}"; do
    if compgen -G "$d/$1*" >/dev/null; then echo "$d"; return 0; fi
  done
  return 1
}
export LD_LIBRARY_PATH=$libpath
if ldd "$bin/facework" | grep -q 'not found'; then
  if ldd "$bin/facework" | grep 'not found' | grep -qE 'libstdc\+\+|libgcc_s'; then
    add_dir "$root/lib-fallback"
  fi
fi
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcufft.so.12 \
           libcudnn.so.9 libnvinfer.so.10 libnvidia-ml.so.1 libcuda.so.1; do
  if d=$(find_lib "$lib"); then add_dir "$d"; fi
done
export LD_LIBRARY_PATH=$libpath
{
  echo "- LD_LIBRARY_PATH: \`$LD_LIBRARY_PATH\`"
  nf=$(for f in "$bin"/* "$root"/lib/libonnxruntime_providers_cuda.so; do ldd "$f" 2>/dev/null | grep 'not found'; done | sort -u | tr -s ' \t' ' ')
  echo "- libraries not found: ${nf:-none}"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
  else
    echo "- GPU: nvidia-smi not found"
  fi
  [ -e "$root/lib/libonnxruntime_providers_tensorrt.so" ] &&
    echo "- TensorRT runtime (libnvinfer.so.10): $(find_lib libnvinfer.so.10 >/dev/null && echo found || echo 'not found: the TensorRT provider was not tested')"
  echo
} >>"$work/head.md"
say "libraries: $LD_LIBRARY_PATH"

# --- 3. GPU sampler ---------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,memory.total \
    --format=csv,noheader,nounits -lms 250 >"$OUT/nvsmi.csv" 2>>"$runlog" &
  sampler_pid=$!
fi

# --- 4. correctness: CPU vs GPU ---------------------------------------------------------------
export FACEWORK_MODELS=$models FW_PHOTOS_DIR=$photos FACEWORK_LOG_LEVEL=warn
# `auto` (fw_loadgen --in-process) must not start TensorRT engine builds (minutes) here
export FACEWORK_TRT=${FACEWORK_TRT:-0}
phase_begin correctness
"$bin/facework" analyze --provider cpu --models "$models" "$photos" >"$work/cpu.json" 2>>"$runlog" ||
  die "facework analyze on the CPU failed (run.log)"
if ! "$bin/facework" analyze --provider "$provider" --models "$models" "$photos" \
    >"$work/gpu.json" 2>"$work/gpu.err"; then
  cat "$work/gpu.err" >>"$runlog"
  {
    echo "## $provider did not start"
    echo
    echo '```'
    tail -n 20 "$work/gpu.err"
    echo
    ldd "$root/lib/libonnxruntime_providers_cuda.so" 2>&1 | head -n 30
    echo '```'
  } >>"$body"
  phase_end
  die "facework analyze --provider $provider failed (results.md)"
fi
phase_end
if command -v python3 >/dev/null 2>&1; then
  python3 "$repo/scripts/gpu/summarize.py" --compare "$work/cpu.json" "$work/gpu.json" \
    >>"$body" 2>>"$runlog" || say "CPU/GPU answers differ (results.md)"
fi
say "correctness checked"

# --- 5. ceiling and in-process pipeline ---------------------------------------------------------
phase_begin ceiling
"$bin/fw_bench" --ceiling --provider "$provider" --models "$models" --photos "$photos" \
  --ceiling-batches 1,8,32,64 --streams 2 --seconds "$ceiling_s" >"$OUT/ceiling.md" 2>>"$runlog" ||
  say "fw_bench --ceiling failed (run.log)"
phase_end
say "ceiling: $(sed -n 's/^ceiling_best_img_per_s=//p' "$OUT/ceiling.md") img/s"
phase_begin pipeline
"$bin/fw_bench" --provider "$provider" --models "$models" --photos "$photos" --threads 1 \
  --rounds 3 --repeats 3 >"$OUT/pipeline.md" 2>>"$runlog" || say "fw_bench failed (run.log)"
phase_end
say "pipeline stage split written"

# --- 5b. WebGPU (Vulkan) beside CUDA ----------------------------------------------------------
webgpu_section() {
  local vkd=$work/xdg
  mkdir -p -m 700 "$vkd"
  export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$vkd}
  if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' && [ -d "$root/lib-vulkan" ]; then
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$root/lib-vulkan
  fi
  {
    echo "## WebGPU provider (Dawn on Vulkan) on the same GPU"
    echo
    echo "- Vulkan drivers (ICD files): $(ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | grep json | tr '\n' ' ' || true)"
    echo "- Vulkan loader: $(ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' && echo "the device's" || echo 'the bundle'\''s')"
    echo
  } >>"$body"
  phase_begin webgpu-correctness
  if ! "$bin/facework" analyze --provider webgpu --models "$models" "$photos" \
      >"$work/webgpu.json" 2>"$work/webgpu.err"; then
    phase_end
    cat "$work/webgpu.err" >>"$runlog"
    { echo "WebGPU did not start:"; echo; echo '```'; grep -v '^ts=' "$work/webgpu.err" | tail -n 8
      grep 'provider=webgpu\|webgpu' "$work/webgpu.err" | tail -n 4; echo '```'; echo; } >>"$body"
    say "webgpu did not start (results.md)"
    return 0
  fi
  phase_end
  python3 "$repo/scripts/gpu/summarize.py" --compare "$work/cpu.json" "$work/webgpu.json" \
    --label WebGPU >>"$body" 2>>"$runlog" || say "CPU/WebGPU answers differ (results.md)"
  phase_begin webgpu-ceiling
  { echo "### WebGPU bare-model ceiling (same batches and streams as CUDA's above)"; echo
    "$bin/fw_bench" --ceiling --provider webgpu --models "$models" --photos "$photos" \
      --ceiling-batches 1,8,32,64 --streams 2 --seconds "$ceiling_s" 2>>"$runlog" ||
      echo "fw_bench --ceiling --provider webgpu failed (run.log)"
    echo; } >>"$body"
  phase_end
  phase_begin webgpu-pipeline
  { echo "### WebGPU in-process pipeline"; echo
    "$bin/fw_bench" --provider webgpu --models "$models" --photos "$photos" --threads 1 \
      --rounds 3 --repeats 3 2>>"$runlog" || echo "fw_bench --provider webgpu failed (run.log)"
    echo; } >>"$body"
  phase_end
  say "webgpu: ceiling $(sed -n 's/^ceiling_best_img_per_s=//p' "$body" | tail -n 1) img/s (cuda: $(sed -n 's/^ceiling_best_img_per_s=//p' "$OUT/ceiling.md"))"
}
if [ "${FW_DEVICE_WEBGPU:-1}" != 0 ] && [ "$provider" != webgpu ] && [ "$(left)" -gt 150 ]; then
  webgpu_section
fi

# --- 6. the worker and the sweep -------------------------------------------------------------------
decode_threads=$((ncpu > 4 ? ncpu - 2 : 2))
# shellcheck disable=SC2086 # FW_WORKER_ARGS is a list of flags
"$bin/facework" worker --provider "$provider" --models "$models" --listen 127.0.0.1:0 \
  --port-file "$work/port" --lock-file "$work/worker.lock" --decode-threads "$decode_threads" \
  --http-threads 2 --max-queue 8192 --request-timeout 120s --log-level info \
  ${FW_WORKER_ARGS:-} >"$OUT/worker.log" 2>&1 &
worker_pid=$!
rm -f "$work/port"
for _ in $(seq 1200); do
  [ -s "$work/port" ] && break
  kill -0 "$worker_pid" 2>/dev/null || break
  sleep 0.1
done
[ -s "$work/port" ] || die "the worker did not become ready (worker.log)"
url="http://$(cat "$work/port")"
say "worker ready at $url ($(grep -o 'gpu batching.*' "$OUT/worker.log" | head -n 1))"
curl -s "$url/gpu_info" >"$work/gpu_info.before.json" 2>/dev/null || true

tsv=$OUT/sweep.tsv
: >"$tsv"
loadgen() { # phase-name, loadgen flags...
  local name=$1 line
  shift
  phase_begin "$name"
  line=$("$bin/fw_loadgen" --set 1440 --photos "$photos" --models "$models" --format tsv --header \
    "$@" 2>>"$runlog")
  phase_end
  if [ -z "$line" ]; then say "fw_loadgen $* failed"; return; fi
  [ -s "$tsv" ] || printf 'phase\t%s\n' "$(printf '%s\n' "$line" | head -n 1)" >"$tsv"
  printf '%s\t%s\n' "$name" "$(printf '%s\n' "$line" | tail -n 1)" >>"$tsv"
}
for k in $images; do
  for c in $concs; do
    [ $((c * k)) -le "$max_inflight" ] || continue
    if [ "$(left)" -lt 45 ]; then
      say "budget: skipping c=$c k=$k and later points"
      break 2
    fi
    warm=1
    [ $((c * k)) -ge 512 ] && warm=2
    loadgen "http1-c$c-k$k" --url "$url" --pid "$worker_pid" --http 1 --concurrency "$c" \
      --images-per-request "$k" --warmup "$warm" --duration "$duration" --timeout 120
    kill -0 "$worker_pid" 2>/dev/null || die "the worker died (worker.log)"
    say "c=$c k=$k: $(tail -n 1 "$tsv" | awk -F'\t' 'NR==1{print}' | cut -f13) img/s"
  done
done
curl -s "$url/gpu_info" >"$work/gpu_info.after.json" 2>/dev/null || true
curl -s "$url/metrics" | grep -E '^facework_(gpu|model_run|batch_splits|provider)' >"$work/metrics.txt" 2>/dev/null || true
kill -TERM "$worker_pid" 2>/dev/null
for _ in $(seq 300); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
worker_pid=
# the same requests without HTTP (the worker is stopped: the GPU is the in-process engine's)
if [ "$(left)" -gt 30 ]; then
  loadgen "inproc-c16-k8" --in-process --concurrency 16 --images-per-request 8 --warmup 2 \
    --duration "$duration" --timeout 120 --threads 0
fi
{
  echo "## worker /gpu_info after the sweep"
  echo
  echo '```json'
  cat "$work/gpu_info.after.json" 2>/dev/null
  echo
  echo '```'
  echo
  echo '```'
  cat "$work/metrics.txt" 2>/dev/null
  echo '```'
  echo
} >>"$body"
finish
