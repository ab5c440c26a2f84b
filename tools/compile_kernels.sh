#!/usr/bin/env bash
# compile_kernels.sh: compiles every kernels/*.cu with the installed nvcc for sm_80 and sm_90 into a temporary folder
# (CI runs it: nothing executes the kernels there, but they must keep compiling). The kernels need no torch headers.
# Skips with a message and exit 0 when there is no nvcc (PATH, /usr/local/bin or /usr/local/cuda/bin).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nvcc=$(command -v nvcc || true)
for candidate in /usr/local/bin/nvcc /usr/local/cuda/bin/nvcc; do [[ -z $nvcc && -x $candidate ]] && nvcc=$candidate; done
if [[ -z $nvcc ]]; then
  echo "compile_kernels: nvcc not found; kernels/*.cu not compiled (skipped)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
count=0
for source in "$root"/kernels/*.cu; do
  [[ -e $source ]] || continue
  for arch in 80 90; do
    count=$((count + 1))
    if ! "$nvcc" -std=c++17 -arch=sm_$arch -Xcompiler -Wall -c "$source" -o "$tmp/$(basename "$source" .cu).sm_$arch.o"; then
      echo "compile_kernels: FAILED $(basename "$source") for sm_$arch"
      failures=$((failures + 1))
    fi
  done
done
echo "compile_kernels: $((count - failures))/$count compiled with $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
[[ $failures -eq 0 ]]
