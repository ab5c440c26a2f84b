#!/usr/bin/env bash
# check_torch_wheel.sh: builds the native library against a libtorch 2.x and runs the golden step and the op-level
# tests on it, so code for the GPU machines' PyTorch 2.x (bench/device.sh) is compiled and exercised before any
# device time is spent. The libtorch comes from a CPU torch wheel (a zip with include/, lib/ and share/cmake/):
# $DC_TORCH_WHEEL, else the newest torch-2.*+cpu wheel in pip's find-links folder (/opt/wheels here). Without one it
# says so and exits 0. Unpacked once into .tools/torch-wheel/<name>/, built into native/build-torch2/.
# Usage: bash tools/check_torch_wheel.sh [deno test files...]   (default: the list below)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
wheel=${DC_TORCH_WHEEL:-$(ls /opt/wheels/torch-2.*+cpu-*.whl 2>/dev/null | sort -V | tail -1 || true)}
if [[ -z $wheel || ! -f $wheel ]]; then
  echo "check_torch_wheel: no CPU torch 2.x wheel (set DC_TORCH_WHEEL); libtorch 2.x not checked"
  exit 0
fi
name=$(basename "$wheel" .whl)
dir=$root/.tools/torch-wheel/$name
if [[ ! -f $dir/torch/share/cmake/Torch/TorchConfig.cmake ]]; then
  rm -rf "$dir" && mkdir -p "$dir"
  python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith(("torch/include/", "torch/lib/", "torch/share/"))])' \
    "$wheel" "$dir"
fi
echo "check_torch_wheel: libtorch from $name"
export TORCH_PREFIX=$dir/torch/share/cmake DC_BUILD_DIR=$root/native/build-torch2
export DETAILCLIP_LIB=$DC_BUILD_DIR/libdetailclip.so DETAILCLIP_LIBTORCH=$dir/torch/lib
bash tools/build_native.sh
deno task golden --ref "${DETAILCLIP_GOLDEN:-tests/fixtures/golden/tiny}"
tests=("$@")
[[ ${#tests[@]} -gt 0 ]] || tests=(tests/ops_test.ts tests/gradcheck_test.ts tests/nn_test.ts tests/losses_test.ts
  tests/token_selection_test.ts tests/memory_test.ts tests/official_checkpoint_test.ts tests/eval_test.ts)
deno test --allow-all --unstable-ffi "${tests[@]}"
