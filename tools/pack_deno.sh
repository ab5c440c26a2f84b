#!/usr/bin/env bash
# pack_deno.sh: fills the git-ignored .carry/ folder that bench/device.sh needs on a lent GPU machine, which has no
# internet and no Deno: .carry/deno.xz (xz -9 of this Deno binary), .carry/node_modules.tar.xz (the npm packages
# deno.lock names, zod and esbuild: Deno installs every one of them before running anything, and cannot fetch them
# there), and .carry/debs (Debian bookworm packages of the
# image libraries and pkg-config that the native build needs: the GPU image lacks them; bookworm's glibc 2.36 is older
# than the image's). Then checks that the tree that travels (tracked + untracked-not-ignored files + .carry) fits the
# device tool's 64 MiB. Usage: bash tools/pack_deno.sh [--no-debs]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mkdir -p .carry
deno_bin=$(command -v deno || echo "$root/.tools/node_modules/@deno/linux-x64-glibc/deno")
[[ -x $deno_bin ]] || { echo "pack_deno: no Deno binary (run ./dc setup)" >&2; exit 1; }
if [[ ! -f .carry/deno.xz || $deno_bin -nt .carry/deno.xz ]]; then
  echo "pack_deno: compressing $deno_bin (xz -9, about 90 s)" >&2
  xz -9 -T0 -c "$deno_bin" >.carry/deno.xz.tmp && mv .carry/deno.xz.tmp .carry/deno.xz
fi
rm -rf .carry/golden_tiny # the golden files travel with the checkout now (tests/fixtures/golden/tiny)
# node_modules as Deno lays it out here (nodeModulesDir "auto"); `deno install` fills it from deno.lock when absent.
[[ -d node_modules/zod ]] || "$deno_bin" install >&2
tar -cJf .carry/node_modules.tar.xz.tmp node_modules && mv .carry/node_modules.tar.xz.tmp .carry/node_modules.tar.xz
if [[ ${1:-} != --no-debs ]]; then
  mkdir -p .carry/debs
  (cd .carry/debs && apt-get download -q libturbojpeg0 libturbojpeg0-dev libjpeg62-turbo libpng16-16 libpng-dev \
    zlib1g zlib1g-dev libwebp7 libwebp-dev libwebpdemux2 libwebpmux3 pkgconf pkgconf-bin \
    libpkgconf3 >/dev/null) || echo "pack_deno: apt-get download failed; .carry/debs is incomplete" >&2
  for deb in .carry/debs/*%3a*; do [[ -e $deb ]] && mv "$deb" "${deb//%3a/_}"; done # plain names travel everywhere
fi
bytes=$( (git ls-files -z --cached --others --exclude-standard; find .carry -type f -print0) | du -cb --files0-from=- |
  tail -1 | cut -f1)
limit=$((64 * 1024 * 1024))
echo "pack_deno: .carry is $(du -sh .carry | cut -f1); the tree that travels is $((bytes / 1048576)) MiB of 64 MiB"
[[ $bytes -le $limit ]] || { echo "pack_deno: too large for the device tool" >&2; exit 1; }
