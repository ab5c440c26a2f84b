#!/usr/bin/env bash
# build_native.sh: configures (once) and builds native/ into native/build/libdetailclip.so. A stamp of the sources'
# hash and the configure arguments makes a no-change run return at once. TORCH_PREFIX points CMake at another libtorch
# (e.g. a CUDA PyTorch); DC_BUILD_DIR overrides the build folder (then set DETAILCLIP_LIB to the library inside it);
# DC_CMAKE_ARGS adds arguments to the first configure (one per word); DC_CONFIGURE_LOG moves its log from
# native/.cmake-configure.log.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DC_BUILD_DIR:-$root/native/build}
stamp=$build/.sources.sha256
configure_log=${DC_CONFIGURE_LOG:-$root/native/.cmake-configure.log}
cmake_args=(-S "$root/native" -B "$build" -DCMAKE_BUILD_TYPE=Release)
if [[ -n ${TORCH_PREFIX:-} ]]; then
  cmake_args+=("-DCMAKE_PREFIX_PATH=$TORCH_PREFIX")
  # TorchConfig.cmake finds c10, torch and c10_cuda with plain find_library calls, whose search prefers the system's
  # copies (Debian's libtorch-dev) to the folder beside the libtorch asked for: one process would then load two c10
  # versions. CMAKE_LIBRARY_PATH is searched before the system folders.
  torch_lib=$(cd "$TORCH_PREFIX/../.." 2>/dev/null && pwd)/lib
  [[ -f $torch_lib/libc10.so ]] && cmake_args+=("-DCMAKE_LIBRARY_PATH=$torch_lib")
  if [[ -f $torch_lib/libtorch_cuda.so ]]; then
    # A CUDA PyTorch: its CMake (FindCUDA) derives the toolkit from nvcc's own folder, which a wrapper script on PATH
    # (/usr/local/bin/nvcc -> exec /usr/local/cuda-X/bin/nvcc) hides; name the toolkit. CUDA_HOME wins, then
    # /usr/local/cuda, then the folder above the nvcc found on PATH.
    cuda_home=${CUDA_HOME:-}
    for candidate in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /none/bin/nvcc)")")")"; do
      [[ -z $cuda_home && -x $candidate/bin/nvcc && -f $candidate/include/cuda_runtime.h ]] && cuda_home=$candidate
    done
    if [[ -n $cuda_home ]]; then
      cmake_args+=("-DCMAKE_CUDA_COMPILER=$cuda_home/bin/nvcc" "-DCUDA_TOOLKIT_ROOT_DIR=$cuda_home")
      # A toolkit without NVRTC (a minimal install beside a pip torch, which brings its own in nvidia/*/lib).
      if ! compgen -G "$cuda_home/lib64/libnvrtc.so*" >/dev/null; then
        nvrtc=$(ls "$torch_lib"/../../nvidia/*/lib/libnvrtc.so "$torch_lib"/../../nvidia/*/lib/libnvrtc.so.[0-9]* \
          2>/dev/null | head -1 || true)
        [[ -n $nvrtc ]] && cmake_args+=("-DCUDA_nvrtc_LIBRARY=$(readlink -f "$nvrtc")")
      fi
    fi
    # Torch's CMake compiles nothing here but autodetects (or lists every) GPU architecture otherwise; the kernels'
    # own list is sm_80 and sm_90 (native/CMakeLists.txt).
    cmake_args+=("-DTORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}")
  fi
fi
# shellcheck disable=SC2206 # one argument per word, by contract
[[ -n ${DC_CMAKE_ARGS:-} ]] && cmake_args+=($DC_CMAKE_ARGS)
inputs=()
for path in native/CMakeLists.txt native/include native/src kernels; do [[ -e $root/$path ]] && inputs+=("$path"); done
sources_hash=$(cd "$root" && find "${inputs[@]}" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
sources_hash="$sources_hash ${cmake_args[*]}"
if [[ -f $build/libdetailclip.so && -f $stamp && "$(cat "$stamp")" == "$sources_hash" ]]; then
  exit 0
fi
if [[ ! -f $build/CMakeCache.txt ]]; then
  echo "detailclip: configuring the native library (libtorch via CMake)" >&2
  cmake "${cmake_args[@]}" >"$configure_log" 2>&1 || {
    tail -30 "$configure_log" >&2
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
