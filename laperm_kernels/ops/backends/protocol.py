"""What a backend is: the interface every module in ``BACKENDS`` implements.

A backend is a module (cpu.py, cuda.py, torch_ref.py, the triton package) whose functions answer
the same questions; a module satisfies a ``typing.Protocol`` by having them, so no class
is instantiated. ``laperm_kernels.ops`` validates and groups a call, then asks the
backends; backends never validate and never know about each other.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch


class Backend(Protocol):
    name: str  # its key in BACKENDS, and the ``backend=`` argument that picks it

    def is_available(self) -> bool:
        """Whether it can run in this process at all."""
        ...

    def unavailable_reason(self) -> str:
        """Why not, and how to fix it ("" when available)."""
        ...

    def supports(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether it can run tensors of this kind."""
        ...

    def prepare(
        self, weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]
    ) -> Callable[[], None]:
        """Everything ``run`` would do before its first write (plan, size limits,
        compilation, the device scratch the launches use), reading no values; returns the
        launch, which then runs the group. ``ops`` prepares every group of a call before
        launching any, so a call that fails, for want of memory too, touches nothing;
        during CUDA graph capture it only looks up, and raises
        ``graph_capture.NotPreparedForCapture`` on a miss."""
        ...

    def run(self, weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]) -> None:
        """Rank-matches a validated group (contiguous tensors of one device and dtype, no
        aliasing) in place: ``prepare(weights, sorted_inits)()``."""
        ...
