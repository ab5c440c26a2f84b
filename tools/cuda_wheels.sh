#!/usr/bin/env bash
# cuda_wheels.sh: unpacks a CUDA PyTorch wheel and the NVIDIA wheels its libraries need into one site-packages-shaped
# folder, .tools/cuda-wheels/torch-<version>/{torch,nvidia}, and prints that folder. Run by tools/check_cuda_build.sh.
# Only what building and loading needs is kept: torch/{include,lib,share}, the NVIDIA headers, and the libraries that
# libtorch_cuda.so and libtorch_cpu.so name (not cuDNN's engine libraries or cuSOLVER, which libtorch opens only when
# a GPU op asks for them). The wheels' RUNPATH ($ORIGIN/../../nvidia/<pkg>/lib) then finds every one of them without
# LD_LIBRARY_PATH. The CUDA runtime comes from its wheel when pip has it, else from the installed toolkit.
# The wheels come from $DC_CUDA_WHEELS (a folder of .whl files), else `pip download` (pip's configured index); the
# versions are the ones torch's own metadata pins. Unpacked once: a .complete stamp makes later runs return at once.
# Exit 3 (with one line) when the wheels are not at hand, 1 on any other failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
torch_version=${DC_CUDA_TORCH_VERSION:-2.14.1}
store=$root/.tools/cuda-wheels
site=$store/torch-$torch_version
if [[ -f $site/.complete ]]; then
  echo "$site"
  exit 0
fi
say() { echo "cuda_wheels: $*" >&2; }
mkdir -p "$store"
# .tools may be shared by several checkouts: one unpacks, the others wait for it and use its result.
exec 9>"$store/.lock"
flock 9
if [[ -f $site/.complete ]]; then
  echo "$site"
  exit 0
fi
download=$(mktemp -d "$store/.download.XXXXXX")
trap 'rm -rf "$download"' EXIT

# fetch <requirement>...: the wheels into $download, from $DC_CUDA_WHEELS or pip. Non-zero when one is not at hand.
fetch() {
  if [[ -n ${DC_CUDA_WHEELS:-} ]]; then
    local requirement name version found
    for requirement in "$@"; do
      name=$(sed -E 's/^([A-Za-z0-9_.-]+).*/\1/' <<<"$requirement")
      version="" # an exact pin narrows the choice; a range (nvjitlink's) takes the newest wheel of the name
      [[ $requirement == *==* ]] && version=${requirement#*==}
      found=$(ls "$DC_CUDA_WHEELS/${name//-/_}-$version"*.whl 2>/dev/null | sort -V | tail -1 || true)
      [[ -n $found ]] || { say "no wheel for $requirement in DC_CUDA_WHEELS=$DC_CUDA_WHEELS"; return 1; }
      ln -sf "$found" "$download/"
    done
  else
    # -qq: no retry warnings when only pip's default index (unreachable offline) lacks a package the local one has.
    pip download -qq --retries 0 --timeout 10 --no-deps --only-binary=:all: --python-version 3.11 -d "$download" "$@" >&2
  fi
}

say "fetching torch==$torch_version (CUDA build)"
fetch "torch==$torch_version" || { say "torch==$torch_version (CUDA) is not at hand"; exit 3; }
torch_wheel=$(ls "$download"/torch-"$torch_version"*.whl | head -1)
# torch pins some NVIDIA wheels itself and the rest through the cuda-toolkit meta-package's extras.
requirements=$(python3 - "$torch_wheel" <<'PY'
import re, sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
for line in metadata.splitlines():
    m = re.match(r"Requires-Dist: (nvidia-[a-z0-9-]+|cuda-toolkit)(\[[^\]]*\])?==([^;\s]+)", line)
    if m and 'platform_system == "Linux"' in line:
        print(f"{m.group(1)}{m.group(2) or ''}=={m.group(3)}")
PY
)
toolkit=$(grep '^cuda-toolkit' <<<"$requirements" || true)
[[ -n $toolkit ]] || { say "torch $torch_version's metadata names no cuda-toolkit: not a CUDA wheel?"; exit 1; }
fetch "cuda-toolkit==${toolkit##*==}" || { say "cuda-toolkit==${toolkit##*==} is not at hand"; exit 3; }
# The extras this build compiles or loads against (not nvtx; cudart may be absent from the index).
toolkit_requirements=$(python3 - "$(ls "$download"/cuda_toolkit-*.whl | head -1)" <<'PY'
import re, sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
wanted = {"cublas", "cufft", "cufile", "cupti", "curand", "cusolver", "cusparse", "nvjitlink", "nvrtc", "cudart"}
pins = {}
for line in metadata.splitlines():
    m = re.match(r"Requires-Dist: (nvidia-[a-z0-9-]+)([=<>,.*0-9]+);.*extra == '([a-z0-9]+)'", line)
    if m and m.group(3) in wanted and "x86_64" in line:
        pins[m.group(1)] = m.group(2).replace(".*", "")
print("\n".join(f"{name}{spec}" for name, spec in sorted(pins.items())))
PY
)
nvidia=$(grep '^nvidia-' <<<"$requirements"; grep -v '^nvidia-cuda-runtime' <<<"$toolkit_requirements")
say "fetching $(echo $nvidia | wc -w) NVIDIA wheels: $(echo $nvidia)"
# shellcheck disable=SC2086 # one requirement per word
fetch $nvidia || { say "an NVIDIA wheel torch $torch_version needs is not at hand"; exit 3; }
runtime=$(grep '^nvidia-cuda-runtime' <<<"$toolkit_requirements" || true)
if [[ -n $runtime ]] && ! fetch "$runtime" 2>/dev/null; then
  say "$runtime not at hand: the CUDA runtime comes from the installed toolkit"
fi

rm -rf "$site" "$site.partial" && mkdir -p "$site.partial"
say "unpacking into ${site#$root/}"
python3 - "$site.partial" "$download"/*.whl <<'PY'
import re, sys, zipfile
target, wheels = sys.argv[1], sys.argv[2:]
# cuDNN's and NVSHMEM's front libraries load their engines and transports themselves, only on a GPU; cuSOLVER is
# needed only by libtorch_cuda_linalg.so, which libtorch opens on the first CUDA linear-algebra call (its headers are
# kept: ATen/cuda/CUDAContextLight.h includes cusolverDn.h).
skip = re.compile(r"nvidia/cudnn/lib/libcudnn_|nvidia/nvshmem/lib/nvshmem_|nvidia/cu13/lib/lib(nvblas|cufftw|cusolver)")
for path in wheels:
    wheel = zipfile.ZipFile(path)
    if path.split("/")[-1].startswith("torch-"):
        keep = [n for n in wheel.namelist() if n.startswith(("torch/include/", "torch/lib/", "torch/share/"))]
    else:
        keep = [n for n in wheel.namelist()
                if n.startswith("nvidia/") and ("/include/" in n or "/lib/" in n) and not skip.match(n)]
    wheel.extractall(target, keep)
PY
lib=$site.partial/nvidia/cu13/lib
mkdir -p "$lib"
if [[ ! -e $lib/libcudart.so.13 ]]; then
  cudart=""
  for candidate in ${CUDA_HOME:-/usr/local/cuda}/lib64 /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -z $cudart && -e $candidate/libcudart.so.13 ]] && cudart=$(readlink -f "$candidate/libcudart.so.13")
  done
  [[ -n $cudart ]] || { say "no libcudart.so.13: neither its wheel nor a CUDA 13 toolkit (CUDA_HOME)"; exit 1; }
  cp "$cudart" "$lib/libcudart.so.13"
fi
# Link-time names (libfoo.so) for the versioned files, as a toolkit has them, so CMake's find_library finds them.
for file in "$site.partial"/nvidia/*/lib/lib*.so.*; do
  base=${file%%.so.*}.so
  [[ -e $base ]] || ln -s "$(basename "$file")" "$base"
done
# Every library libtorch names must resolve from the folder alone (libcuda.so.1 is the driver: present only with a GPU,
# and only libcaffe2_nvrtc.so, which libtorch opens lazily, names it).
unresolved=$(for so in libtorch.so libtorch_cuda.so libtorch_cpu.so libc10_cuda.so; do
  env -u LD_LIBRARY_PATH ldd "$site.partial/torch/lib/$so" | grep 'not found' || true
done | sort -u)
if [[ -n $unresolved ]]; then
  say "libtorch's libraries do not all resolve from the unpacked wheels:"
  echo "$unresolved" >&2
  exit 1
fi
echo "$torch_version" >"$site.partial/.complete"
mv "$site.partial" "$site"
say "done: $(du -sh "$site" | cut -f1) in ${site#$root/}"
echo "$site"
