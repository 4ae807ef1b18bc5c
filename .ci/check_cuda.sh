#!/usr/bin/env bash
# Compile-checks every CUDA source for sm_80 and sm_90 with nvcc (no GPU needed), warnings
# as errors, and prints ptxas' register/spill report (tools/ptxas_report.py), which fails
# on a spill in any of our kernels. The kernels must build standalone, against the CUDA
# runtime and CUB only (no torch headers). Files compile in parallel ($JOBS, default 2).
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
trap 'rm -rf "$out"' EXIT
start=$SECONDS

compile() {  # one source; its ptxas report and errors go to $out/<name>.log
  local src=$1 name t0=$SECONDS
  name=$(basename "$src")
  if nvcc -c -std=c++17 -O3 -Icsrc \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
      -Xptxas -v -Werror all-warnings -o "$out/$name.o" "$src" > "$out/$name.log" 2>&1; then
    echo "check_cuda: $src compiled in $((SECONDS - t0)) s"
  else
    echo "check_cuda: $src FAILED to compile:"; cat "$out/$name.log"; return 1
  fi
}
export -f compile
export out
printf '%s\n' "${sources[@]}" | xargs -P "${JOBS:-2}" -I{} bash -c 'compile "$@"' _ {}
echo "check_cuda: ${#sources[@]} files compiled for sm_80 and sm_90 in $((SECONDS - start)) s"
python3 tools/ptxas_report.py "$out"/*.log
