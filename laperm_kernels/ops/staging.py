"""Contiguous buffers for non-contiguous weights: where their rows are rank-matched.

The backends take contiguous rows. A non-contiguous weight (a ``channels_last``
convolution, the ``row_dim=1`` view of a GPT-2 ``Conv1D`` or ``ConvTranspose`` weight) is
copied into a contiguous buffer, rank-matched there and copied back.

The buffer is kept per tensor (its device, dtype, address, shape and strides), so that
its own address, which the GPU backends' launch plans hold, is the same from one call to
the next: the plan is found again instead of rebuilt, and a CUDA graph captured after an
eager call finds the buffer and the plan that call made (graph_capture.py); on the CPU
it saves an allocation (and its page faults) per call. The cost is one buffer per
non-contiguous tensor, in an LRU of ``MAX_BUFFERS``; contiguous tensors need none.
"""

from __future__ import annotations

import torch

from .backends.plan_cache import PlanCache

MAX_BUFFERS = 256


def new_buffer_cache() -> "PlanCache[torch.Tensor]":
    """The cache of staging buffers. One captured graph needs a buffer per non-contiguous
    weight (GPT-2 medium: 96 Conv1D weights), so those kept for graphs are not bounded by
    count (plan_cache.py)."""
    return PlanCache(
        MAX_BUFFERS,
        max_captured=None,
        what="staging buffer for a non-contiguous weight",
        whats="staging buffers for non-contiguous weights",
    )


_buffers = new_buffer_cache()


def contiguous_buffer(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if contiguous, else a contiguous tensor of its shape to copy it into
    (not yet holding its values). Raises ``graph_capture.NotPreparedForCapture`` during
    capture when no eager call made the buffer."""
    if t.is_contiguous():
        return t
    if t.device.type == "meta":  # no addresses to key on, and nothing to run
        return torch.empty(t.shape, dtype=t.dtype, device=t.device)
    key = (t.device, t.dtype, t.data_ptr(), tuple(t.shape), tuple(t.stride()))
    return _buffers.lookup(
        key,
        frozenset([t.data_ptr()]),
        t.device,
        lambda: torch.empty(t.shape, dtype=t.dtype, device=t.device),
        device_tables=lambda buffer: (buffer,),
    )
