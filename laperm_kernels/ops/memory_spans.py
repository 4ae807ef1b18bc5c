"""Which tensors may share memory: the byte spans they may touch, compared.

One helper for the ops (no weight may alias another argument of the call) and for LaPerm
(no two permuted parameters may share memory).
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch


def byte_span(t: torch.Tensor) -> Tuple[int, int, int]:
    """(storage address, first byte, one past the last byte) that ``t`` may touch."""
    item = t.element_size()
    start = t.storage_offset()
    extent = sum(st * (sz - 1) for st, sz in zip(t.stride(), t.shape))
    return t.untyped_storage().data_ptr(), start * item, (start + extent + 1) * item


def first_shared(tensors: Iterable[Tuple[torch.Tensor, str, bool]]) -> Optional[Tuple[str, str]]:
    """The names of the first two of ``(tensor, name, written)`` whose spans overlap, where
    at least one of the two is written (tensors only read may share memory); None if no
    such pair. Empty and meta tensors touch no memory."""
    spans = sorted(
        (*byte_span(t), written, name)
        for t, name, written in tensors
        if t.numel() and t.device.type != "meta"
    )
    for k, (storage, _, end, written, name) in enumerate(spans):
        for storage2, start2, _, written2, name2 in spans[k + 1 :]:
            if storage2 != storage or start2 >= end:
                break
            if written or written2:
                return name, name2
    return None
