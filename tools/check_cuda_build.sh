#!/usr/bin/env bash
# check_cuda_build.sh: the GPU build, compiled, linked and loaded on a machine without a GPU. It builds
# libdetailclip.so against the CUDA build of PyTorch (a pip wheel, with the NVIDIA wheels it needs: tools/
# cuda_wheels.sh unpacks them once into .tools/cuda-wheels/), with the kernels for sm_80 and sm_90 and the NCCL
# backend, into native/build-cuda/; then loads that library through Deno FFI and runs the golden step and the op-level
# tests on the CPU (a CUDA libtorch must work without a GPU), trains 10 fp16 steps (autocast, grad scaler) and resumes
# them bit for bit, and checks that asking for a GPU here fails with one line and exit status 2. So the code a lent GPU runs has compiled and loaded before any device time is spent; it has not
# run there (docs/gpu.md says what has).
# Without nvcc or the wheels it says so and exits 0; with them, any failure (NCCL or the kernels not built included)
# exits 1. The last line on success: `cuda build: ok (libtorch X, nccl Y, kernels sm_80 sm_90)`.
# Usage: bash tools/check_cuda_build.sh [deno test files...]   (default: the list below)
# Environment: DC_CUDA_WHEELS (a folder of wheels instead of pip), DC_CUDA_TORCH_VERSION (2.14.1), CUDA_HOME.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
started=$(date +%s)
say() { echo "check_cuda_build: $* (+$(($(date +%s) - started)) s)"; }

# ---- the toolkit and the wheels -------------------------------------------------------------------------------------
cuda_home=${CUDA_HOME:-}
if [[ -z $cuda_home ]]; then
  for candidate in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")"; do
    [[ -z $cuda_home && -x $candidate/bin/nvcc ]] && cuda_home=$candidate
  done
fi
if [[ -z $cuda_home || ! -x $cuda_home/bin/nvcc ]]; then
  echo "check_cuda_build: no CUDA toolkit (nvcc; set CUDA_HOME); the CUDA build is not checked"
  exit 0
fi
status=0
site=$(bash tools/cuda_wheels.sh) || status=$?
if [[ $status -eq 3 ]]; then
  echo "check_cuda_build: the CUDA torch wheel or an NVIDIA wheel it needs is not at hand; the CUDA build is not checked"
  exit 0
elif [[ $status -ne 0 ]]; then
  echo "check_cuda_build: FAILED to unpack the CUDA wheels"
  exit 1
fi
say "libtorch from ${site#$root/}, CUDA toolkit $cuda_home"

# ---- build ----------------------------------------------------------------------------------------------------------
# build_native.sh names the toolkit and, when the toolkit lacks it, the wheel's NVRTC to torch's CMake.
build=$root/native/build-cuda
export TORCH_PREFIX=$site/torch/share/cmake DC_BUILD_DIR=$build DC_CONFIGURE_LOG=$root/native/.cmake-configure-cuda.log
export CUDA_HOME=$cuda_home DC_CMAKE_ARGS=""
command -v ccache >/dev/null && DC_CMAKE_ARGS="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache"
bash tools/build_native.sh || { echo "check_cuda_build: FAILED: the CUDA build does not compile or link"; exit 1; }
library=$build/libdetailclip.so
say "built ${library#$root/}"
# Everything asked for must be in: a build that quietly left out NCCL or the kernels is a failure here.
grep -q '^DC_NCCL_INCLUDE_DIR:PATH=/' "$build/CMakeCache.txt" && grep -q 'detailclip: NCCL backend' "$DC_CONFIGURE_LOG" ||
  { grep 'detailclip:' "$DC_CONFIGURE_LOG"; echo "check_cuda_build: FAILED: NCCL was not built"; exit 1; }
# The kernels' machine code: cuobjdump lists the cubins when the toolkit has it, else nvcc's flags name them.
kernels=$build/libdetailclip_kernels.a
for arch in sm_80 sm_90; do
  if [[ -x $cuda_home/bin/cuobjdump ]]; then
    "$cuda_home/bin/cuobjdump" --list-elf "$kernels" | grep -q "\.$arch\." && continue
  elif [[ -f $kernels ]] && grep -q "code=\[[^]]*$arch" "$build"/CMakeFiles/detailclip_kernels.dir/flags.make; then
    continue
  fi
  echo "check_cuda_build: FAILED: no $arch machine code in the kernels ($kernels)"
  exit 1
done
nccl_header=$(sed -n 's/^DC_NCCL_INCLUDE_DIR:PATH=//p' "$build/CMakeCache.txt")/nccl.h
nccl_version=$(awk '/^#define NCCL_(MAJOR|MINOR|PATCH) /{v = v (v == "" ? "" : ".") $3} END {print v}' "$nccl_header")

# ---- load it and run on the CPU ---------------------------------------------------------------------------------------
# The wheel's RUNPATH finds the NVIDIA libraries; DETAILCLIP_LIBTORCH makes src/torch/lib.ts load this libtorch first.
export DETAILCLIP_LIB=$library DETAILCLIP_LIBTORCH=$site/torch/lib
report=$(deno run --allow-all --unstable-ffi tools/cuda_build_report.ts) ||
  { echo "check_cuda_build: FAILED: the CUDA build does not load through Deno FFI"; exit 1; }
say "loaded: $report"
grep -q '"nccl":true' <<<"$report" || { echo "check_cuda_build: FAILED: the loaded library has no NCCL backend"; exit 1; }
grep -q '"kernels":true' <<<"$report" || { echo "check_cuda_build: FAILED: the loaded library has no kernels"; exit 1; }
torch_version=$(sed -n 's/.*"torch":"\([^"]*\)".*/\1/p' <<<"$report")

deno task golden --ref "${DETAILCLIP_GOLDEN:-tests/fixtures/golden/tiny}" ||
  { echo "check_cuda_build: FAILED: the golden step with the CUDA build (on the CPU)"; exit 1; }
say "golden step passed"
tests=("$@")
if [[ ${#tests[@]} -eq 0 ]]; then
  tests=(tests/ops_test.ts tests/gradcheck_test.ts tests/nn_test.ts tests/losses_test.ts tests/token_selection_test.ts
    tests/kernels_test.ts tests/memory_test.ts tests/rng_state_test.ts tests/cuda_device_test.ts
    tests/nccl_no_gpu_test.ts)
  # The grad scaler's tests, once they exist.
  [[ -f tests/amp_test.ts ]] && tests+=(tests/amp_test.ts)
fi
deno test --allow-all --unstable-ffi "${tests[@]}" ||
  { echo "check_cuda_build: FAILED: op-level tests with the CUDA build (on the CPU)"; exit 1; }
say "op-level tests passed"

# ---- the training loop: fp16 autocast and the grad scaler, checkpoint and resume --------------------------------------
# 10 steps of the demo model on the CPU, then the same run resumed from its step-5 checkpoint (generator states, scaler
# state, optimizer moments): the final weights must be equal bit for bit.
runs=$(mktemp -d)
train_args=(--device cpu --precision fp16 --max-steps 10 --save-freq 5 --eval-size 0 --print-freq 5
  --synthetic-size 512 --batch-size 16 --threads 1)
deno run --quiet --allow-all --unstable-ffi cli/main.ts train "${train_args[@]}" --output-dir "$runs/full" >/dev/null &&
  mkdir -p "$runs/resumed" && cp "$runs/full/checkpoint-00000005.safetensors" "$runs/resumed/" &&
  deno run --quiet --allow-all --unstable-ffi cli/main.ts train "${train_args[@]}" --output-dir "$runs/resumed" \
    --resume auto >/dev/null ||
  { echo "check_cuda_build: FAILED: fp16 training with the CUDA build (on the CPU)"; exit 1; }
comparison=$(python3 bench/compare_checkpoints.py "$runs/full/checkpoint-00000010.safetensors" \
  "$runs/resumed/checkpoint-00000010.safetensors")
rm -rf "$runs"
grep -q '"bitwise": true' <<<"$comparison" ||
  { echo "check_cuda_build: FAILED: the resumed fp16 run differs from the uninterrupted one: $comparison"; exit 1; }
say "fp16 training with the grad scaler: 10 steps, resumed from step 5 bit for bit"

# ---- no GPU: one clear line, exit status 2 ----------------------------------------------------------------------------
set +e
scratch=$(mktemp -d)
# deno run --quiet, not deno task: the task runner's own "Task ..." line is not the command's output.
message=$(deno run --quiet --allow-all --unstable-ffi cli/main.ts train --device cuda --max-steps 1 \
  --output-dir "$scratch/run" 2>&1 >/dev/null)
code=$?
set -e
lines=$(grep -c . <<<"$message" || true)
[[ ! -e $scratch/run ]] || { echo "check_cuda_build: FAILED: train --device cuda wrote $scratch/run before failing"; exit 1; }
rm -rf "$scratch"
if [[ $code -ne 2 || $lines -ne 1 ]]; then
  echo "check_cuda_build: FAILED: \`train --device cuda\` without a GPU should print one line and exit 2; it exited" \
    "$code after $lines lines:"
  echo "$message" | head -20
  exit 1
fi
say "train --device cuda without a GPU: exit 2, '$message'"
echo "cuda build: ok (libtorch $torch_version, nccl $nccl_version, kernels sm_80 sm_90)"
