#!/usr/bin/env bash
# The Triton kernels under Triton releases other than .venv's (triton 3.8.0):
#
#     bash .ci/triton_versions.sh [VERSION...]      # default 3.6.0, the GPU machine's; needs .venv
#
# For each VERSION, triton==VERSION goes into .venv-triton-VERSION (pip install --target,
# no dependencies: triton has none at run time), ahead of .venv's site-packages on
# PYTHONPATH, beside .venv's CPU torch. Then, under it: the Triton tests
# (tests/triton_backend: the interpreter cases run in worker subprocesses, which inherit
# PYTHONPATH), the check that the cache fill's compiles are the ones a launch requests
# (tests/tools/test_aot_compile_triton.py), and the AOT compile of every shipped
# configuration (tools/aot_compile_triton.py) for TRITON_ARCHS (default 90: the GPU
# machine's sm_90; .venv's triton 3.8 compiles for sm_80 and sm_90 in .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || { echo "triton_versions: no .venv (make setup)" >&2; exit 1; }
[ $# -gt 0 ] || set -- 3.6.0

for version in "$@"; do
  start=$SECONDS
  say() { echo "triton_versions[triton $version]: $*"; }
  target="$(realpath -m ".venv-triton-$version")"
  if ! PYTHONPATH="$target" "$py" -c "import sys, triton; sys.exit(triton.__version__ != '$version')" 2>/dev/null; then
    rm -rf "$target"
    "$py" -m pip install -q --no-deps --target "$target" "triton==$version"
  fi
  export PYTHONPATH="$target"
  say "$("$py" -c 'import torch, triton; print("triton", triton.__version__, "from", triton.__file__, "| torch", torch.__version__)')"
  t0=$SECONDS
  "$py" -m pytest -q -p no:cacheprovider tests/triton_backend tests/tools/test_aot_compile_triton.py
  say "tests took $((SECONDS - t0)) s"
  t0=$SECONDS
  # shellcheck disable=SC2086  # TRITON_ARCHS is a list
  "$py" tools/aot_compile_triton.py --arch ${TRITON_ARCHS:-90} --jobs "${JOBS:-2}"
  say "AOT compile took $((SECONDS - t0)) s; done in $((SECONDS - start)) s"
  unset PYTHONPATH
done
