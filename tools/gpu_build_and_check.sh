#!/usr/bin/env bash
# Builds the extension for this machine's GPU only, then qualifies the GPU:
#
#     bash tools/gpu_build_and_check.sh [OUTDIR]      # default OUTDIR: $OUT, else gpucheck-report
#
# For a machine that already has nvcc, a CUDA torch and the Python packages (pytest,
# triton, setuptools, wheel, ninja) and no network: pip runs with --no-index --no-deps
# --no-build-isolation, so it never tries to download anything. PYTHON is the interpreter
# (default python3); TORCH_CUDA_ARCH_LIST, if set, replaces the local GPU's architecture;
# CUDA_HOME, if set, is the toolkit. OUTDIR gets build.log, gpucheck.log and the check's
# report.md, report.json and logs. Exits with the check's status (1 if a check FAILED).
set -euo pipefail

die() { echo "gpu_build_and_check: error: $*" >&2; exit 1; }
say() { echo "gpu_build_and_check: $*"; }

outdir="$(realpath -m "${1:-${OUT:-gpucheck-report}}")"  # relative to the caller's directory
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
command -v "$py" >/dev/null || die "no $py on PATH: set PYTHON to the interpreter with torch"
# The interpreter's bin/ first: ninja (and pip's scripts) of an unactivated venv are there.
PATH="$("$py" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PATH
"$py" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null ||
  die "$py has no CUDA build of torch ($("$py" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1))"
command -v ninja >/dev/null || say "warning: ninja not found: torch falls back to a serial build"

if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST="$("$py" -c '
import sys, torch
try:
    print("%d.%d" % torch.cuda.get_device_capability())
except Exception as e:
    sys.exit(f"{type(e).__name__}: {e}")')" ||
    die "cannot read the GPU's compute capability; set TORCH_CUDA_ARCH_LIST to build anyway"
fi
export TORCH_CUDA_ARCH_LIST

# The toolkit's root, as .ci/cuda_build.sh finds it: the first candidate holding the
# runtime's header and library (nvcc's grandparent may be a directory of wrapper scripts).
if [ -z "${CUDA_HOME:-}" ]; then
  nvcc_root=""
  if command -v nvcc >/dev/null; then
    nvcc_root="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  fi
  for root in $nvcc_root /usr/local/cuda /usr/local/cuda-*; do
    if [ -f "$root/include/cuda_runtime.h" ] && [ -e "$root/lib64/libcudart.so" ]; then
      export CUDA_HOME="$root"
      break
    fi
  done
fi
[ -n "${CUDA_HOME:-}" ] || die "no CUDA toolkit with include/cuda_runtime.h found: set CUDA_HOME"
[ -x "$CUDA_HOME/bin/nvcc" ] || die "no nvcc in CUDA_HOME=$CUDA_HOME"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

mkdir -p "$outdir"
say "building for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST with MAX_JOBS=$MAX_JOBS," \
    "CUDA_HOME=$CUDA_HOME, $("$py" -c 'import torch; print("torch", torch.__version__)')" \
    "(log: $outdir/build.log)"
start=$SECONDS
"$py" -m pip install -v --no-index --no-deps --no-build-isolation -e . >"$outdir/build.log" 2>&1 || {
  tail -n 40 "$outdir/build.log" >&2
  die "the build failed after $((SECONDS - start)) s (full log: $outdir/build.log)"
}
build_s=$((SECONDS - start))
say "built in $build_s s"
"$py" -c 'import sys, torch, laperm_kernels; sys.exit("cuda" not in torch.ops.laperm.compiled_backends())' ||
  die "the built extension has no CUDA kernels (see $outdir/build.log)"

export LAPERM_GPUCHECK_BUILD="TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS: $build_s s"
if "$py" -m laperm_kernels.gpucheck "$outdir" 2>&1 | tee "$outdir/gpucheck.log"; then
  rc=0
else
  rc=$?
fi
say "done in $((SECONDS - start)) s; report: $outdir/report.md (exit $rc)"
exit "$rc"
