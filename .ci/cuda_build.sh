#!/usr/bin/env bash
# The full CUDA build of the extension against one CUDA torch wheel, on a machine without a
# GPU:
#
#     bash .ci/cuda_build.sh [TORCH_VERSION]          # default 2.14.1
#
# A venv of its own with torch==TORCH_VERSION (the CUDA wheel from the registry; torch pins
# its triton), the extension built in a copy of the source tree (its own build/, so no
# object compiled against another torch is reused), then checks that it imports, that it
# contains the CUDA kernels, that "cuda" is reported unavailable (not an import error)
# without a device, and runs tests: LAPERM_CUDA_TESTS=host (default) runs the CUDA
# backend's host-dispatch tests (the GPU tests skip), LAPERM_CUDA_TESTS=suite the whole
# suite. TORCH_CUDA_ARCH_LIST (default "8.0;9.0") picks the architectures; LAPERM_CUDA_VENV
# the venv (default .venv-cuda-TORCH_VERSION, reused while it holds that torch).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
torch_version="${1:-2.14.1}"
tests="${LAPERM_CUDA_TESTS:-host}"
arch="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
case "$tests" in host|suite) ;; *) echo "cuda_build: LAPERM_CUDA_TESTS is host or suite, not $tests" >&2; exit 2;; esac
say() { echo "cuda_build[torch $torch_version]: $*"; }

if ! command -v nvcc >/dev/null; then
  say "nvcc not found: skipping the CUDA build"
  exit 0
fi
# The toolkit's root: the first candidate with the runtime's header and library. torch's
# auto-detection takes nvcc's grandparent, which is /usr/local where /usr/local/bin/nvcc is
# a wrapper script, and there cuda_runtime.h and -lcudart are not found.
if [ -z "${CUDA_HOME:-}" ]; then
  for root in "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")" \
              /usr/local/cuda /usr/local/cuda-*; do
    if [ -f "$root/include/cuda_runtime.h" ] && [ -e "$root/lib64/libcudart.so" ]; then
      export CUDA_HOME="$root"
      break
    fi
  done
fi
if [ -z "${CUDA_HOME:-}" ]; then
  echo "cuda_build: no CUDA toolkit with include/cuda_runtime.h found: set CUDA_HOME" >&2
  exit 1
fi
say "CUDA_HOME=$CUDA_HOME, TORCH_CUDA_ARCH_LIST=$arch, tests: $tests"
venv="$(realpath -m "${LAPERM_CUDA_VENV:-.venv-cuda-$torch_version}")"
src=$(mktemp -d)
# The build's editable install points into $src: uninstall it with the copy, so the venv
# is left with torch only, not with a package whose files are gone.
trap '"$venv/bin/pip" uninstall -q -y laperm-kernels >/dev/null 2>&1 || true; rm -rf "$src"' EXIT

has_torch() {  # the venv holds the CUDA build of torch==$torch_version
  "$venv/bin/python" -c "import sys, torch
sys.exit(not (torch.version.cuda and torch.__version__.split('+')[0] == '$torch_version'))" 2>/dev/null
}
if [ ! -x "$venv/bin/python" ] || ! has_torch; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "torch==$torch_version" numpy setuptools wheel ninja pytest \
      hypothesis pytest-benchmark tqdm matplotlib
  has_torch || { echo "cuda_build: $venv did not get a CUDA torch==$torch_version" >&2; exit 1; }
fi
say "venv ready after $((SECONDS - start)) s ($("$venv/bin/python" -c 'import torch, importlib.metadata as m
print("torch", torch.__version__, "CUDA", torch.version.cuda, "triton", m.version("triton"))'))"

git ls-files -co --exclude-standard | grep -v '^\.venv' | tar cf - -T - | tar xf - -C "$src"
t0=$SECONDS
(cd "$src" && TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-2}" \
   "$venv/bin/pip" install -q --no-build-isolation --no-deps -e .)
say "built in $((SECONDS - t0)) s (MAX_JOBS=${MAX_JOBS:-2})"

(cd "$src" && "$venv/bin/python" - <<'PY'
import torch
import laperm_kernels as lk
from laperm_kernels.ops.backends import cuda

assert torch.version.cuda, "expected a CUDA torch"
assert "cuda" in torch.ops.laperm.compiled_backends(), torch.ops.laperm.compiled_backends()
print("cuda_build: compiled backends", torch.ops.laperm.compiled_backends(),
      "| cuda available:", cuda.is_available(), "|", cuda.unavailable_reason() or "ok",
      "| available backends:", lk.available_backends())
if not torch.cuda.is_available():
    assert not cuda.is_available() and "no CUDA device" in cuda.unavailable_reason()
    assert "cuda" not in lk.available_backends()
PY
)
t0=$SECONDS
if [ "$tests" = suite ]; then
  (cd "$src" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests)
else
  (cd "$src" && "$venv/bin/python" -m pytest -q -p no:cacheprovider \
     tests/cuda_backend/test_cuda_plan.py tests/cuda_backend/test_cuda.py tests/ops/test_rank_match.py)
fi
say "tests ($tests) took $((SECONDS - t0)) s; done in $((SECONDS - start)) s"
