"""The checks that run the project's own tests on the GPU: backends, gpu-tests and
sanitizer (compute-sanitizer's memcheck)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import laperm_kernels as lk
from laperm_kernels.ops.backends import BACKENDS

from . import context
from .context import Context, Skip
from .junit import parse_junit

# The GPU tests (files, or a file's one GPU test), and auto's trials (CPU stand-ins,
# cheap); the missing are left out. --quick runs the first two: the cuda and triton
# backends against the reference.
GPU_TEST_FILES = (
    "tests/cuda_backend/test_cuda.py",
    "tests/triton_backend/test_triton.py",
    "tests/cuda_backend/test_graph_capture_gpu.py",
    "tests/cuda_backend/test_streams_gpu.py",
    "tests/reliability/test_memory_limits.py"
    "::test_cuda_large_row_scratch_is_allocated_before_any_launch",
    "tests/dispatch/test_dispatch.py",
)


QUICK_TEST_FILES = GPU_TEST_FILES[:2]


DESELECT = "not test_interpreter"  # test_triton.py's TRITON_INTERPRET=1 cases: CPU tests


# --quick leaves out the Triton GPU cases whose kernels other cases launch too (the MLP,
# ResNet-50 in 16-bit types: the same tiles as the buckets and long rows, in every dtype)
# and whose CPU reference costs most (docs/cuda.md, "first GPU run").
QUICK_DESELECT = DESELECT + " and not (test_gpu_bitwise and (mlp or resnet50 and not float32))"


# Run under compute-sanitizer's memcheck by the "sanitizer" check: the stream-order test (a
# launch that read tables before their upload landed would read out of bounds).
SANITIZED_TEST_FILE = "tests/cuda_backend/test_streams_gpu.py"


def check_backends(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    details["state"] = {
        name: "available" if mod.is_available() else mod.unavailable_reason()
        for name, mod in BACKENDS.items()
    }
    context.need_gpu()
    missing = [
        f"{n}: {details['state'][n]}"
        for n in ("cuda", "triton")
        if details["state"][n] != "available"
    ]
    if missing:
        return False, "; ".join(missing)
    return True, f"on CUDA tensors, available fastest first: {lk.available_backends('cuda')}"


def _test_checkout(ctx: Context) -> Path:
    context.need_gpu()
    root = context.source_checkout()
    if root is None:
        raise Skip("no source checkout (no tests/ beside laperm_kernels/)")
    if not ctx.run_tests:
        raise Skip("--skip-tests")
    return root


def check_gpu_tests(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    root = _test_checkout(ctx)
    files = [
        f
        for f in (QUICK_TEST_FILES if ctx.quick else GPU_TEST_FILES)
        if (root / f.split("::")[0]).is_file()
    ]
    return _run_pytest(ctx, details, "gpu-tests", root, files, [], DESELECT)


def check_sanitizer(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    root = _test_checkout(ctx)
    tool = shutil.which("compute-sanitizer") or shutil.which(
        "compute-sanitizer", path=str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin")
    )
    if tool is None:
        raise Skip("compute-sanitizer not found (on PATH or in $CUDA_HOME/bin)")
    prefix = [tool, "--tool", "memcheck", "--error-exitcode", "1"]
    return _run_pytest(ctx, details, "sanitizer", root, [SANITIZED_TEST_FILE], prefix, DESELECT)


def _run_pytest(
    ctx: Context, details: Dict[str, Any], name: str, root: Path, files, prefix, deselect
) -> Tuple[bool, str]:
    """Check ``name``: pytest on ``files`` (under ``prefix``, a wrapping tool), its JUnit
    report read back; passes when it exits 0 and ran a test."""
    xml, log = ctx.outdir / f"{name}.xml", ctx.outdir / f"{name}.log"
    cmd = [
        *prefix,
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        QUICK_DESELECT if ctx.quick else deselect,
        f"--junitxml={xml}",
        *files,
    ]
    details.update(command=shlex.join(cmd), cwd=str(root), log=log.name, junit=xml.name)
    # Before the check's own cap, so that the log says what ran (a killed pytest writes
    # no JUnit file).
    timeout = max(1.0, context.check_limit(name, ctx.quick) - 5)
    with open(log, "w") as out:
        try:
            rc = subprocess.run(
                cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return False, f"pytest stopped after {timeout:.0f} s (log: {log.name})"
    details["exit_code"] = rc
    result = parse_junit(xml)
    if result is None:
        return False, f"pytest exited {rc} without a readable {xml.name} (log: {log.name})"
    details.update(result)
    summary = (
        f"{result['passed']} passed, {result['failed']} failed, {result['errors']} "
        f"errors, {result['skipped']} skipped (pytest exit {rc})"
    )
    if rc == 0 and result["passed"] == 0:
        return False, summary + ": no GPU test ran"
    return rc == 0 and result["failed"] == result["errors"] == 0, summary
