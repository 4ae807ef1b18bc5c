"""The ``"triton"`` backend: the Triton kernels of laperm_kernels/triton_kernels on CUDA
tensors (and on CPU tensors under ``TRITON_INTERPRET=1``, for tests).

Triton is optional: it is imported only when this backend is asked whether it is
available or is run, so ``import laperm_kernels`` never needs it.

A validated group (contiguous tensors, one device and dtype) becomes few launches:
rows of all tensors are bucketed by the power-of-two block that holds them, each bucket a
table of row descriptors (W address, S address, length) and one launch of
``rank_match_block_kernel``; rows longer than MAX_BLOCK go, all tensors together, through
the chunked kernels in batches whose scratch stays under SCRATCH_KEYS keys. The tables
depend only on addresses and shapes, so they are cached: an optimizer syncing the same
parameters every k steps pays no host work beyond the launches.

float64 is not supported (its 64-bit order key leaves no room for the column in an int64
sort key); ``backend="auto"`` sends float64 CUDA tensors to the ``"torch"`` backend.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from ..reference import rows_and_length
from .plan_cache import PlanCache

name = "triton"

_KINDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # triton_kernels/keys.py
MIN_BLOCK = 64
SCRATCH_KEYS = 1 << 23           # 64 MiB of int64 keys per batch of long rows

_import_error: Optional[str] = None
_imported = False


class Plan(NamedTuple):
    launches: List[Callable[[int], None]]   # each takes the dtype's KIND
    tables: List[torch.Tensor]              # every device table the launches read


_plans: "PlanCache[Plan]" = PlanCache(16)


def _kernels():
    """laperm_kernels.triton_kernels, imported on first use (None if triton is missing)."""
    global _imported, _import_error
    if not _imported:
        _imported = True
        try:
            from .. import triton_kernels  # noqa: F401  (imports triton)
        except Exception as e:  # ImportError, or a broken triton install
            _import_error = f"{type(e).__name__}: {e}"
    if _import_error is not None:
        return None
    from .. import triton_kernels
    return triton_kernels


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def is_available() -> bool:
    return _kernels() is not None and (_interpreting() or torch.cuda.is_available())


def unavailable_reason() -> str:
    if _kernels() is None:
        return (f"triton is not installed or failed to import ({_import_error}); "
                "install it with `pip install triton`")
    if not (_interpreting() or torch.cuda.is_available()):
        return ("no CUDA device (torch.cuda.is_available() is False); set TRITON_INTERPRET=1 "
                "before importing triton to run the kernels on CPU tensors (slow; for tests)")
    return ""


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    on_device = device.type == "cuda" or (device.type == "cpu" and _interpreting())
    return on_device and dtype in _KINDS


def run(weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]) -> None:
    run_rows(weights, sorted_inits)


def run_rows(weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor], *,
             max_block: Optional[int] = None, chunk: Optional[int] = None) -> None:
    """Rank-matches contiguous tensors of one device and a supported dtype, in place.

    ``max_block`` (longest row done in one block) and ``chunk`` (keys per chunk of longer
    rows) default to the shipped configuration; tests make them small so the chunked path
    runs cheaply under the interpreter.
    """
    tk = _kernels()
    if tk is None:
        raise RuntimeError(unavailable_reason())
    if not weights:
        return
    max_block = tk.MAX_BLOCK if max_block is None else max_block
    chunk = tk.CHUNK if chunk is None else chunk
    dtype, device = weights[0].dtype, weights[0].device
    kind = _KINDS[dtype]
    plan = _plan(tk, weights, sorted_inits, max_block, chunk)
    guard = torch.cuda.device(device) if device.type == "cuda" else _NoGuard()
    with guard:
        for launch in plan.launches:
            launch(kind)
    for w in weights:  # raw-pointer writes: tell autograd W changed, like any in-place op
        torch.autograd.graph.increment_version(w)


class _NoGuard:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- planning: row-descriptor tables, cached by addresses and shapes ---------------------

def _plan(tk, weights, sorted_inits, max_block: int, chunk: int) -> Plan:
    return _plans.get((weights[0].device, weights[0].dtype, max_block, chunk), weights,
                      sorted_inits,
                      lambda: _build_plan(tk, weights, sorted_inits, max_block, chunk),
                      device_tables=lambda plan: plan.tables)


# A piece is (W address, S address, rows, n, bytes per row): consecutive rows of a tensor.
Piece = Tuple[int, int, int, int, int]


def _row_table(pieces: List[Piece], device) -> Tuple[torch.Tensor, ...]:
    """(W address, S address, length) of every row of ``pieces``, on ``device``."""
    w_addr, s_addr, lengths = [], [], []
    for wa, sa, rows, n, row_bytes in pieces:
        step = torch.arange(rows, dtype=torch.int64) * row_bytes
        w_addr.append(wa + step)
        s_addr.append(sa + step)
        lengths.append(torch.full((rows,), n, dtype=torch.int32))
    return tuple(torch.cat(t).to(device) for t in (w_addr, s_addr, lengths))


def _build_plan(tk, weights, sorted_inits, max_block: int, chunk: int) -> Plan:
    device = weights[0].device
    buckets: Dict[int, list] = {}
    long_rows: list = []
    for w, s in zip(weights, sorted_inits):
        rows, n = rows_and_length(w)
        if rows == 0 or n == 0:
            continue
        if n >= 1 << 31:
            raise ValueError(f"rows of {n} elements are too long for the triton backend "
                             "(columns are packed in 32 bits)")
        piece = (w.data_ptr(), s.data_ptr(), rows, n, n * w.element_size())
        if n <= max_block:
            block = max(MIN_BLOCK, 1 << (n - 1).bit_length())
            buckets.setdefault(block, []).append(piece)
        else:
            long_rows.append(piece)

    plan = Plan([], [])
    for block, pieces in sorted(buckets.items()):
        tables = _row_table(pieces, device)
        plan.launches.append(_block_launch(tk, block, *tables))
        plan.tables.extend(tables)
    if long_rows:
        _chunked_launches(tk, long_rows, chunk, device, plan)
    return plan


def _block_launch(tk, block: int, w_tab, s_tab, lengths):
    rows_per_program, warps = tk.BLOCK_CONFIGS[block]
    num_rows = lengths.numel()
    grid = (-(-num_rows // rows_per_program),)

    def launch(kind: int) -> None:
        tk.rank_match_block_kernel[grid](w_tab, s_tab, lengths, num_rows, KIND=kind,
                                         BLOCK=block, ROWS=rows_per_program, num_warps=warps)
    return launch


def _chunked_launches(tk, pieces, chunk: int, device, plan: Plan) -> None:
    """Long rows in batches of at most SCRATCH_KEYS keys of scratch (at least one row),
    added to ``plan``."""
    batches, batch, keys = [], [], 0
    for wa, sa, rows, n, row_bytes in pieces:
        padded = -(-n // chunk) * chunk
        for r in range(rows):  # split tensors by rows: one row never straddles batches
            if batch and keys + padded > SCRATCH_KEYS:
                batches.append((batch, keys))
                batch, keys = [], 0
            batch.append((wa + r * row_bytes, sa + r * row_bytes, 1, n, row_bytes))
            keys += padded
    batches.append((batch, keys))

    scratch_size = max(k for _, k in batches)
    warps = tk.BLOCK_CONFIGS.get(chunk, (1, tk.SORT_WARPS))[1]
    for rows, keys in batches:
        rows = _merge_rows(rows)
        w_tab, s_tab, lengths = _row_table(rows, device)
        padded = [-(-n // chunk) * chunk for _, _, r, n, _ in rows for _ in range(r)]
        offsets = torch.tensor([0] + padded[:-1], dtype=torch.int64).cumsum(0).to(device)
        grid = (lengths.numel(), max(padded) // chunk)

        def launch(kind, w_tab=w_tab, s_tab=s_tab, lengths=lengths, offsets=offsets,
                   grid=grid):
            scratch = torch.empty(scratch_size, dtype=torch.int64, device=device)
            tk.sort_chunks_kernel[grid](w_tab, lengths, offsets, scratch, KIND=kind,
                                        CHUNK=chunk, num_warps=warps)
            tk.rank_scatter_kernel[grid](w_tab, s_tab, lengths, offsets, scratch, KIND=kind,
                                         CHUNK=chunk, LOG2_CHUNK=chunk.bit_length() - 1,
                                         num_warps=tk.RANK_WARPS)
        plan.launches.append(launch)
        plan.tables.extend((w_tab, s_tab, lengths, offsets))


def _merge_rows(rows):
    """Consecutive single rows of one tensor back into multi-row pieces."""
    merged: List[Piece] = []
    for wa, sa, _, n, row_bytes in rows:
        if merged:
            pwa, psa, pr, pn, pb = merged[-1]
            if pn == n and pwa + pr * pb == wa and psa + pr * pb == sa:
                merged[-1] = (pwa, psa, pr + 1, pn, pb)
                continue
        merged.append((wa, sa, 1, n, row_bytes))
    return merged
