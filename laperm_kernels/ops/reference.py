"""The contract (docs/contract.md), executable: rank matching in plain PyTorch.

For every row r of ``W.reshape(W.shape[0], -1)`` (a 1-D tensor is one row)::

    W[r, order(W[r])[i]] = S[r, i]

where ``order`` is the ascending *stable* order: ties keep column order, NaN sorts after
every number and all NaNs tie, -0.0 and +0.0 tie, infinities are ordinary values
(docs/contract.md). The reference is one stable sort and one scatter (of S's bit
patterns, so NaN payloads in S survive). Every backend is tested bit for bit against it.

It sorts integer order keys, not the floats: the same transform as the kernels'
(csrc/common/order_key.h), so the rules above hold by construction on every device.
Floating-point ``torch.sort`` does not keep them everywhere: CUDA's radix path puts
negative-sign NaNs before every number (pytorch/pytorch#190781).
"""

from __future__ import annotations

from typing import Tuple

import torch

# The dtypes rank matching takes (docs/contract.md), the one list of them: every backend
# supports a subset, the public API refuses any other dtype.
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# The same by name ("float32", ...), for command lines and reports, and as a message says it.
SUPPORTED_DTYPES_BY_NAME = {str(d).removeprefix("torch."): d for d in SUPPORTED_DTYPES}
_NAMES = list(SUPPORTED_DTYPES_BY_NAME)
SUPPORTED_DTYPES_TEXT = f"{', '.join(_NAMES[:-1])} or {_NAMES[-1]}"  # "float32, ... or bfloat16"

_SAME_WIDTH_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def same_width_int(dtype: torch.dtype) -> torch.dtype:
    """The signed integer dtype as wide as ``dtype``: a view as it exposes bit patterns."""
    return _SAME_WIDTH_INT[dtype.itemsize]


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bit patterns (NaN payloads and signed zeros included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    ints = same_width_int(a.dtype)
    return torch.equal(a.detach().contiguous().view(ints), b.detach().contiguous().view(ints))


def rows_and_length(t: torch.Tensor) -> Tuple[int, int]:
    """Rows as LaPerm permutes them: ``reshape(shape[0], -1)``; a 1-D tensor is one row."""
    if t.dim() == 1:
        return 1, t.numel()
    rows = t.shape[0]
    return rows, (t.numel() // rows if rows else 0)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """A 2-D view of ``t``'s rows (``t`` must be contiguous)."""
    return t.view(rows_and_length(t))


def order_keys(rows: torch.Tensor) -> torch.Tensor:
    """Signed integers whose order is the contract's value order: every NaN becomes the
    largest key (after +inf), -0.0 the key of +0.0, and negative values have their
    magnitude bits flipped so that integer order is float order. Ties are left to the
    stable sort (column order)."""
    ints = same_width_int(rows.dtype)
    bits = rows.view(ints)
    top = torch.iinfo(ints).max
    canonical = torch.where(rows.isnan(), top, torch.where(rows == 0, 0, bits))
    return canonical ^ ((canonical >> (8 * rows.element_size() - 1)) & top)


def stable_order(rows: torch.Tensor) -> torch.Tensor:
    """Each row's ascending stable order under the contract (int64 column indices)."""
    return torch.sort(order_keys(rows), dim=1, stable=True).indices


@torch.no_grad()
def rank_match_reference_(weight: torch.Tensor, sorted_init: torch.Tensor) -> torch.Tensor:
    """Rank-matches one contiguous tensor in place: one stable sort, one scatter."""
    w = as_rows(weight)
    if w.numel():
        order = stable_order(w)
        # Scatter the bit patterns, not the values: a float scatter_ may rewrite NaN
        # payloads (CPU bf16 NaNs all become 0xffff), and S must land in W bit for bit.
        ints = same_width_int(w.dtype)
        w.view(ints).scatter_(1, order, as_rows(sorted_init).view(ints))
    return weight


@torch.no_grad()
def sort_rows_reference(t: torch.Tensor) -> torch.Tensor:
    """Each row ascending under the same ordering rules; same shape as ``t``."""
    rows = as_rows(t.contiguous())
    if not rows.numel():
        return rows.clone().reshape(t.shape)
    ints = same_width_int(rows.dtype)  # gather bit patterns: NaN payloads survive
    return rows.view(ints).gather(1, stable_order(rows)).view(rows.dtype).reshape(t.shape)
