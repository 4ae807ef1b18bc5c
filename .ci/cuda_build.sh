#!/usr/bin/env bash
# The full CUDA build of the extension, on a machine without a GPU: a second venv with the
# CUDA torch wheel, the extension built for sm_80 and sm_90 in a copy of the source tree
# (its own build/, so no object compiled against the CPU torch is reused), then checks
# that it imports, that it contains the CUDA kernels, that "cuda" is reported unavailable
# (not an import error) without a device, and runs the CUDA backend's tests (the
# host-dispatch tests run; the GPU tests skip).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

if ! command -v nvcc >/dev/null; then
  echo "cuda_build: nvcc not found: skipping the CUDA build"
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
echo "cuda_build: CUDA_HOME=$CUDA_HOME"
venv="$(realpath -m "${LAPERM_CUDA_VENV:-.venv-cuda}")"
src=$(mktemp -d)
# The build's editable install points into $src: uninstall it with the copy, so the venv
# is left with torch only, not with a package whose files are gone.
trap '"$venv/bin/pip" uninstall -q -y laperm-kernels >/dev/null 2>&1 || true; rm -rf "$src"' EXIT

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch; assert torch.version.cuda" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.14.1 numpy setuptools wheel ninja pytest hypothesis
fi
echo "cuda_build: venv ready after $((SECONDS - start)) s ($("$venv/bin/python" -c 'import torch; print(torch.__version__)'))"

git ls-files -co --exclude-standard | grep -v '^\.venv' | tar cf - -T - | tar xf - -C "$src"
(cd "$src" && TORCH_CUDA_ARCH_LIST="8.0;9.0" MAX_JOBS="${MAX_JOBS:-2}" \
   "$venv/bin/pip" install -q --no-build-isolation --no-deps -e .)
echo "cuda_build: built after $((SECONDS - start)) s"

(cd "$src" && "$venv/bin/python" - <<'PY'
import torch
import laperm_kernels as lk
from laperm_kernels.backends import cuda

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
(cd "$src" && "$venv/bin/python" -m pytest -q -p no:cacheprovider \
   tests/cuda_backend/test_cuda_plan.py tests/cuda_backend/test_cuda.py tests/ops/test_rank_match.py)
echo "cuda_build: done in $((SECONDS - start)) s"
