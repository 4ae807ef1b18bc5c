#!/usr/bin/env bash
# Compile-checks every CUDA source for sm_80 and sm_90 with nvcc (no GPU needed) and
# prints ptxas' register/spill report. The kernels must build standalone, against the
# CUDA runtime and CUB only (no torch headers).
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
sources=(csrc/cuda/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
  echo "check_cuda: no .cu sources yet (csrc/cuda/*.cu): nothing to compile"
  exit 0
fi
if ! command -v nvcc >/dev/null; then
  echo "check_cuda: nvcc not found: skipping the compile check of ${#sources[@]} files"
  exit 0
fi
out=$(mktemp -d)
for src in "${sources[@]}"; do
  echo "check_cuda: $src"
  nvcc -c -std=c++17 -O3 -Icsrc \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -Xptxas -v -Werror all-warnings -o "$out/$(basename "$src").o" "$src"
done
rm -rf "$out"
