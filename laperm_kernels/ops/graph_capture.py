"""CUDA graph capture: whether a call is being captured, and the rule a captured call obeys.

A captured call is replayed without Python, so everything it reads (launch plans, their
device tables, staging buffers for non-contiguous weights) must exist before the capture
and outlive the graph, and nothing in it may synchronise with the host: no upload from
pageable memory, no read of a device value, no kernel compilation or module load. One
eager call with the same tensors makes all of it; a captured call that finds something
missing raises :class:`NotPreparedForCapture` before any tensor is touched.
"""

from __future__ import annotations

from typing import Iterable

import torch


class NotPreparedForCapture(RuntimeError):
    """A captured call needs something only an eager call with the same tensors makes."""


def capturing(device: torch.device) -> bool:
    """Whether work queued now on ``device``'s current stream is being captured."""
    if device.type != "cuda":
        return False
    if device.index is None or device.index == torch.cuda.current_device():
        return torch.cuda.is_current_stream_capturing()
    with torch.cuda.device(device):  # the query reads the current device's stream
        return torch.cuda.is_current_stream_capturing()


def capturing_any(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether any of ``tensors``' devices is capturing on its current stream: the test
    before anything that reads a value back, polls an event or synchronises. (CUDA's
    default capture mode forbids those while a capture is under way, and a failed call
    invalidates the capture.)"""
    return any(capturing(d) for d in {t.device for t in tensors})


def not_prepared(what: str) -> NotPreparedForCapture:
    """The error for a captured call that would have to make ``what`` first."""
    return NotPreparedForCapture(
        f"rank matching during CUDA graph capture needs {what}, made by an eager call with "
        "the same tensors (same addresses and shapes): run one sync (one rank_match call, "
        "or one LaPerm step that syncs) outside the capture first, as with warm-up "
        "iterations on a side stream. Nothing was modified."
    )
