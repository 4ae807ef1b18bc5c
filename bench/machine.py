"""The machine a run measured, in one dict: the benchmark prints and saves it, and
``laperm-gpucheck`` adds its own fields to it (bench/gpucheck/report.py)."""

from __future__ import annotations

import os
import platform
from typing import Dict

import torch

from laperm_kernels.ops import signature

from . import baselines


def machine_info() -> Dict[str, str]:
    """Versions (torch, numpy, python), the CPU (``signature.cpu_model()``, the name
    backend="auto" keys its decisions by) and the C++ kernel's instruction set, the intra-op
    thread count, any cap on either's SIMD set in the environment, and the GPU, if any."""
    from laperm_kernels.ops.backends import cpu

    info = {
        "torch": torch.__version__,
        "numpy": str(baselines.numpy_version()),
        "python": platform.python_version(),
        "cpu": signature.cpu_model(),
        "cpu_kernel_isa": cpu.kernel_isa(),
        "logical_cpus": str(torch.get_num_threads()),
    }
    for name in ("LAPERM_CPU_ISA", "NPY_DISABLE_CPU_FEATURES"):  # caps on either's SIMD
        if os.environ.get(name):
            info[name] = os.environ[name]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = str(torch.version.cuda)
    return info
