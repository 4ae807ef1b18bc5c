"""Fixtures, hooks and the suite's process-wide set-up; pytest imports it before any test.

The shared helpers (backends, exact comparison, the reference, inputs) are plain functions
in tests/helpers.py: test modules import them from there (``from tests.helpers import ...``).
"""

from __future__ import annotations

import os
import tempfile

# backend="auto" remembers its decisions on disk: the suite uses a cache of its own, never
# the user's (subprocesses inherit it). Set before laperm_kernels is first imported.
os.environ["LAPERM_CACHE_DIR"] = tempfile.mkdtemp(prefix="laperm-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

import laperm_kernels as lk  # noqa: E402
from tests.helpers import BACKEND_NAMES, num_threads  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Runs a module on one intra-op thread. Two spinning OpenMP threads sharing one free
    core with a busy neighbour slow tiny workloads ~30x; results never depend on it."""
    with num_threads(1):
        yield


def pytest_report_header(config):
    isa = torch.ops.laperm.cpu_kernel_isa() if lk._extension.is_loaded() else "not loaded"
    return f"laperm backends (cpu): {BACKEND_NAMES}; C++ kernel ISA: {isa}"
