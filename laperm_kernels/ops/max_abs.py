"""max |x| of each weight of a call, read before the call rank-matches it: what LaPerm's
``check_finite`` looks at (NaN where a weight holds a NaN, inf where it holds an inf).

One value per weight, per (device, dtype) group of the call, left on the device: CPU
tensors in one native call (``laperm::max_abs``, csrc/max_abs.cpp, float64), others in one
fused multi-tensor reduction (``torch._foreach_norm(tensors, inf)``) and one ``stack``.
Reading the values back is the caller's affair (optim/finite_check.py does it without
making the host wait for a GPU).
"""

from __future__ import annotations

from typing import List, NamedTuple, Sequence

import torch

from .. import _extension


class MaxAbs(NamedTuple):
    """max |x| of the weights at ``positions`` of a call (their places in its lists)."""

    device: torch.device
    positions: List[int]
    values: torch.Tensor  # one value per position, on ``device``


def max_abs_of(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """max |x| of each of ``tensors`` (one device, one dtype), on their device; 0 for an
    empty tensor."""
    if tensors[0].device.type == "cpu" and _extension.is_loaded():
        return torch.ops.laperm.max_abs.default(list(tensors))
    return torch.stack(torch._foreach_norm(list(tensors), float("inf")))
