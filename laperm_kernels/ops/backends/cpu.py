"""The ``"cpu"`` backend: the C++ kernel (csrc/cpu), one native call for a whole group."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch

from ... import _extension
from ..reference import SUPPORTED_DTYPES

name = "cpu"


def is_available() -> bool:
    return _extension.is_loaded()


def unavailable_reason() -> str:
    err = _extension.load_error()
    return (
        ""
        if err is None
        else (
            f"the C++ extension laperm_kernels._C did not load ({err}); "
            "build it with `pip install --no-build-isolation -e .`"
        )
    )


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype in SUPPORTED_DTYPES


def prepare(
    weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]
) -> Callable[[], None]:
    """Nothing to prepare: one native call does all (no plan, nothing compiled; it
    allocates its scratch before it writes, csrc/scratch.h)."""
    return functools.partial(run, weights, sorted_inits)


def run(weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]) -> None:
    torch.ops.laperm.rank_match_many_(list(weights), list(sorted_inits))


@functools.lru_cache(maxsize=None)
def kernel_limits():
    """The C++ kernel's constants as the extension exports them (csrc/cpu/row_kernel.h,
    ``laperm_testing::cpu_kernel_limits``): ``max_row_length`` and ``scratch_bytes_per_element``
    (per element of the longest row a thread gets)."""
    return _extension.named_results(
        torch.ops.laperm_testing.cpu_kernel_limits.default, "CpuKernelLimits"
    )


def kernel_isa() -> str:
    """Which build of the kernel runs here: 'avx512', 'avx2' or 'generic'."""
    return torch.ops.laperm.cpu_kernel_isa() if is_available() else "unavailable"
