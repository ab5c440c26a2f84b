#!/usr/bin/env bash
# build_native.sh: configures (once) and builds native/ into native/build/libdetailclip.so. A stamp of the sources'
# hash makes a no-change run return at once. TORCH_PREFIX points CMake at another libtorch (e.g. a CUDA PyTorch);
# DC_BUILD_DIR overrides the build folder (then set DETAILCLIP_LIB to the library inside it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DC_BUILD_DIR:-$root/native/build}
stamp=$build/.sources.sha256
inputs=()
for path in native/CMakeLists.txt native/include native/src kernels; do [[ -e $root/$path ]] && inputs+=("$path"); done
sources_hash=$(cd "$root" && find "${inputs[@]}" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
sources_hash="$sources_hash ${TORCH_PREFIX:-system}"
if [[ -f $build/libdetailclip.so && -f $stamp && "$(cat "$stamp")" == "$sources_hash" ]]; then
  exit 0
fi
cmake_args=(-S "$root/native" -B "$build" -DCMAKE_BUILD_TYPE=Release)
if [[ -n ${TORCH_PREFIX:-} ]]; then
  cmake_args+=("-DCMAKE_PREFIX_PATH=$TORCH_PREFIX")
  # TorchConfig.cmake finds c10, torch and c10_cuda with plain find_library calls, whose search prefers the system's
  # copies (Debian's libtorch-dev) to the folder beside the libtorch asked for: one process would then load two c10
  # versions. CMAKE_LIBRARY_PATH is searched before the system folders.
  torch_lib=$(cd "$TORCH_PREFIX/../.." 2>/dev/null && pwd)/lib
  [[ -f $torch_lib/libc10.so ]] && cmake_args+=("-DCMAKE_LIBRARY_PATH=$torch_lib")
fi
if [[ ! -f $build/CMakeCache.txt ]]; then
  echo "detailclip: configuring the native library (libtorch via CMake)" >&2
  cmake "${cmake_args[@]}" >"$root/native/.cmake-configure.log" 2>&1 || {
    tail -30 "$root/native/.cmake-configure.log" >&2
    echo "detailclip: CMake could not configure native/ (is libtorch-dev installed?)" >&2
    exit 1
  }
fi
echo "detailclip: building the native library (${build#$root/}/libdetailclip.so)" >&2
# The build's own status, not the filter's: grep finding nothing to print is not a failure, and under pipefail a
# trailing `|| true` would replace PIPESTATUS with its own 0 and hide a failed build.
status=0
cmake --build "$build" -j"$(nproc)" 2>&1 | { grep -Ev '^\[ *[0-9]+%\] (Building|Linking)|^-- ' >&2 || true; } ||
  status=$?
if [[ $status -ne 0 || ! -f $build/libdetailclip.so ]]; then
  rm -f "$stamp"
  echo "detailclip: native build failed (see the compiler messages above)" >&2
  exit 1
fi
echo "$sources_hash" >"$stamp"
