#!/usr/bin/env bash
# Builds the extension for this machine's GPU only, fills Triton's cache, then qualifies
# the GPU:
#
#     bash tools/gpu_build_and_check.sh [--quick] [OUTDIR]   # default OUTDIR: $OUT, else gpucheck-report
#
# The whole run fits a budget of 480 s (--quick: 240 s; docs/cuda.md, "first GPU run"):
# the build, the cache fill and every check have a cap, and the checks get what is left
# of the budget (bench.gpucheck --time-budget). --quick runs the cuda and triton
# backends' GPU tests and the ResNet-50 float32 timing only.
#
# For a machine that already has nvcc, a CUDA torch and the Python packages (pytest,
# triton, setuptools, wheel, ninja) and no network: pip runs with --no-index --no-deps
# --no-build-isolation, so it never tries to download anything. PYTHON is the interpreter
# (default python3); TORCH_CUDA_ARCH_LIST, if set, replaces the local GPU's architecture;
# CUDA_HOME, if set, is the toolkit; TRITON_CACHE_DIR, if set, is Triton's cache (default
# OUTDIR/triton-cache, empty on a first run). OUTDIR gets build.log, triton-cache.log,
# gpucheck.log and the check's report.md, report.json and logs. Exits with the check's
# status (1 if a check FAILED).
set -euo pipefail

die() { echo "gpu_build_and_check: error: $*" >&2; exit 1; }
say() { echo "gpu_build_and_check: $*"; }
usage() { echo "usage: bash tools/gpu_build_and_check.sh [--quick] [OUTDIR]" >&2; exit 2; }

quick=""
outarg=""
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) usage ;;
    -*) echo "gpu_build_and_check: unknown option $arg" >&2; usage ;;
    *) [ -z "$outarg" ] || usage; outarg="$arg" ;;
  esac
done
# Seconds: the whole run, then the build's and the cache fill's caps.
if [ -n "$quick" ]; then budget=240; else budget=480; fi
build_cap=150
fill_cap=60
start=$SECONDS

outdir="$(realpath -m "${outarg:-${OUT:-gpucheck-report}}")"  # relative to the caller's directory
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
command -v "$py" >/dev/null || die "no $py on PATH: set PYTHON to the interpreter with torch"
# The interpreter's bin/ first: ninja (and pip's scripts) of an unactivated venv are there.
PATH="$("$py" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PATH
"$py" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null ||
  die "$py has no CUDA build of torch ($("$py" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1))"
command -v ninja >/dev/null || say "warning: ninja not found: torch falls back to a serial build"

# The local GPU's compute capability, e.g. 9.0 (for the build and for Triton's target).
if gpu_cc="$("$py" -c '
import sys, torch
try:
    print("%d.%d" % torch.cuda.get_device_capability())
except Exception as e:
    print(f"{type(e).__name__}: {e}".splitlines()[0])
    sys.exit(1)')"; then
  no_gpu=""
else
  no_gpu="$gpu_cc"
  gpu_cc=""
fi
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  [ -n "$gpu_cc" ] || die "cannot read the GPU's compute capability ($no_gpu); set" \
    "TORCH_CUDA_ARCH_LIST to build anyway"
  TORCH_CUDA_ARCH_LIST="$gpu_cc"
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
    "(log: $outdir/build.log; cap $build_cap s)"
t0=$SECONDS
if ! timeout "$build_cap" "$py" -m pip install -v --no-index --no-deps --no-build-isolation -e . \
    >"$outdir/build.log" 2>&1; then
  tail -n 40 "$outdir/build.log" >&2
  die "the build failed or passed its cap after $((SECONDS - t0)) s (full log: $outdir/build.log)"
fi
build_s=$((SECONDS - t0))
say "built in $build_s s"
"$py" -c 'import sys, torch, laperm_kernels; sys.exit("cuda" not in torch.ops.laperm.compiled_backends())' ||
  die "the built extension has no CUDA kernels (see $outdir/build.log)"

# Triton's cache, filled in parallel processes before the checks: every shipped kernel
# configuration compiled for the local GPU (tools/aot_compile_triton.py). Each compile is
# the one a launch requests (same signature, constants, attributes and options), so the
# checks' launches find their binaries in the cache instead of compiling one at a time.
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$outdir/triton-cache}"
fill_s=0
if [ -n "$gpu_cc" ] && "$py" -c 'import triton' 2>/dev/null; then
  t0=$SECONDS
  say "filling Triton's cache $TRITON_CACHE_DIR for sm_${gpu_cc/./} with $(nproc) processes" \
      "(log: $outdir/triton-cache.log; cap $fill_cap s)"
  if timeout "$fill_cap" "$py" tools/aot_compile_triton.py --arch "${gpu_cc/./}" --jobs "$(nproc)" \
      >"$outdir/triton-cache.log" 2>&1; then
    say "Triton's cache filled in $((SECONDS - t0)) s: $(tail -n 1 "$outdir/triton-cache.log")"
  else
    say "warning: the cache fill failed or passed its cap after $((SECONDS - t0)) s (see" \
        "$outdir/triton-cache.log); the checks compile what is missing"
  fi
  fill_s=$((SECONDS - t0))
else
  say "Triton's cache not filled: ${no_gpu:-triton does not import}"
fi

# What is left of the budget, less 15 s for the interpreter's start and the report.
left=$((budget - (SECONDS - start) - 15))
[ "$left" -gt 0 ] || left=1
export LAPERM_GPUCHECK_BUILD="TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS: $build_s s; Triton cache fill $fill_s s"
# The checks stop themselves within --time-budget; the outer timeout (30 s more) is for a
# call that never returns to Python (a hung kernel), and leaves no report.
if timeout $((left + 30)) "$py" -m bench.gpucheck ${quick:+--quick} \
    --time-budget "$left" "$outdir" 2>&1 | tee "$outdir/gpucheck.log"; then
  rc=0
else
  rc=$?
fi
say "done in $((SECONDS - start)) s of a $budget s budget (build $build_s s, Triton cache" \
    "$fill_s s); report: $outdir/report.md (exit $rc)"
exit "$rc"
