#!/usr/bin/env bash
# bench/device.sh: the GPU check, for a lent H100/H200 (device tool: no internet, CUDA PyTorch in python3, nvcc).
# 1. unpacks Deno from .carry/deno.xz (tools/pack_deno.sh makes it; a Deno on PATH also works) and, when pkg-config
#    cannot find them, the image libraries from .carry/debs;
# 2. builds libdetailclip against python3's CUDA PyTorch (kernels for sm_80/sm_90) in /tmp/dc_build_device;
# 3. CUDA tests: tests/kernels_test.ts (kernels vs the CPU reference), tests/token_selection_test.ts, and the golden
#    step on CUDA in fp32 with TF32 off (`deno task golden --device cuda`, ref tests/fixtures/golden/tiny);
# 4. benchmarks the ViT-B/16 DetailCLIP training step, bf16, batch 128 and 256: ours (bench/device_step.ts) and PyTorch
#    eager (bench/device_step_baseline.py) on the same card in the same run: ms/step, images/s, peak memory, MFU.
# Writes $OUT/device.log (everything), $OUT/summary.json (all results) and the JSON lines of each benchmark.
# Without a GPU it prints one line and exits 2. Exit 1 when a test fails; the benchmarks run regardless.
# Environment: OUT (default output/device), DC_STEPS (20), DC_WARMUP (5), DC_BATCHES ("128 256").
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

reason=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
  reason="nvidia-smi not found"
elif ! nvidia-smi -L >/dev/null 2>&1; then
  reason="nvidia-smi lists no GPU"
fi
if [[ -z $reason ]] && ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  reason="torch.cuda.is_available() is False"
fi
if [[ -n $reason ]]; then
  echo "bench/device.sh: no CUDA device ($reason); nothing to run" >&2
  exit 2
fi

OUT=${OUT:-$root/output/device}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device.log") 2>&1
steps=${DC_STEPS:-20}
warmup=${DC_WARMUP:-5}
batches=${DC_BATCHES:-128 256}
started=$(date +%s)
say() { echo "[device.sh +$(($(date +%s) - started))s] $*"; }
failures=()

# ---- 1. tools ------------------------------------------------------------------------------------------------------
if [[ -f .carry/deno.xz ]]; then
  mkdir -p /tmp/dc_deno && xz -dc .carry/deno.xz >/tmp/dc_deno/deno && chmod +x /tmp/dc_deno/deno
  export PATH=/tmp/dc_deno:$PATH
fi
command -v deno >/dev/null || { say "no Deno: run tools/pack_deno.sh here and carry .carry"; exit 1; }
if ! pkg-config --exists libturbojpeg libpng libwebp zlib 2>/dev/null && compgen -G ".carry/debs/*.deb" >/dev/null; then
  sysroot=/tmp/dc_sysroot
  mkdir -p $sysroot && for deb in .carry/debs/*.deb; do dpkg -x "$deb" $sysroot; done
  # Development symlinks such as libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13 are absolute: point them into the
  # sysroot, or the linker follows them to the image's own (absent or other-version) files.
  find $sysroot -type l -lname '/*' | while read -r link; do ln -sfn "$sysroot$(readlink "$link")" "$link"; done
  libdir=$sysroot/usr/lib/x86_64-linux-gnu
  export LD_LIBRARY_PATH=$libdir:$sysroot/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PKG_CONFIG=$sysroot/usr/bin/pkgconf PKG_CONFIG_SYSROOT_DIR=$sysroot
  export PKG_CONFIG_PATH=$libdir/pkgconfig:$sysroot/usr/share/pkgconfig PKG_CONFIG_LIBDIR=$libdir/pkgconfig
  export PATH=$PATH:$sysroot/usr/bin
  say "image libraries from .carry/debs unpacked into $sysroot"
fi
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
torch_version=$(python3 -c 'import torch; print(torch.__version__)')
say "GPU: $gpu; torch $torch_version; $(deno --version | head -1); nvcc $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')"

# ---- 2. build --------------------------------------------------------------------------------------------------------
export TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
export DC_BUILD_DIR=/tmp/dc_build_device DETAILCLIP_LIB=/tmp/dc_build_device/libdetailclip.so
[[ -n ${CUDACXX:-} ]] || export CUDACXX=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
say "building libdetailclip against $TORCH_PREFIX"
if ! bash tools/build_native.sh; then
  cat native/.cmake-configure.log 2>/dev/null | tail -40
  say "native build FAILED"
  echo "{\"gpu\": \"$gpu\", \"torch\": \"$torch_version\", \"error\": \"native build failed\"}" >"$OUT/summary.json"
  exit 1
fi
grep -E "detailclip:" native/.cmake-configure.log 2>/dev/null

# ---- 3. CUDA tests ----------------------------------------------------------------------------------------------------
say "tests: kernels vs CPU reference, token selection"
timeout 600 deno test --allow-all --unstable-ffi tests/kernels_test.ts tests/token_selection_test.ts ||
  failures+=("kernel/token-selection tests")
ref=tests/fixtures/golden/tiny
say "golden step on CUDA (fp32, TF32 off) against $ref"
timeout 300 deno task golden --ref "$ref" --device cuda || failures+=("golden on cuda")

# ---- 4. benchmarks ----------------------------------------------------------------------------------------------------
for batch in $batches; do
  say "benchmark batch $batch: ours"
  timeout 300 deno run --allow-all --unstable-ffi bench/device_step.ts --batch "$batch" --steps "$steps" \
    --warmup "$warmup" | tee "$OUT/ours_b$batch.json" || say "ours at batch $batch FAILED"
  say "benchmark batch $batch: PyTorch eager"
  timeout 300 python3 bench/device_step_baseline.py --batch "$batch" --steps "$steps" --warmup "$warmup" |
    tee "$OUT/eager_b$batch.json" || say "eager at batch $batch FAILED"
done

failed_list=$(IFS=';' && echo "${failures[*]:-}")
python3 - "$OUT" "$gpu" "$torch_version" "$failed_list" <<'PY'
import glob, json, os, sys
out, gpu, torch_version, failures = sys.argv[1:5]
runs = []
for path in sorted(glob.glob(os.path.join(out, "*_b*.json"))):
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            runs.append(json.loads(line))
speedups = {}
for r in runs:
    if r["impl"].startswith("detailclip"):
        base = [e for e in runs if e["impl"] == "pytorch eager (removed)" and e["batch"] == r["batch"]]
        if base:
            speedups[str(r["batch"])] = base[0]["ms_per_step"] / r["ms_per_step"]
summary = dict(gpu=gpu, torch=torch_version, failures=[f for f in failures.split(";") if f], runs=runs,
               speedup_vs_eager=speedups)
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(dict(gpu=gpu, speedup_vs_eager=speedups, failures=summary["failures"])))
PY
if [[ ${#failures[@]} -gt 0 ]]; then
  say "FAILED: ${failures[*]}"
  exit 1
fi
say "all CUDA tests passed"
