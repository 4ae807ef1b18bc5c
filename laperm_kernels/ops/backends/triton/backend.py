"""The ``"triton"`` backend: the Triton kernels of this package on CUDA
tensors (and on CPU tensors under ``TRITON_INTERPRET=1``, for tests).

Triton is optional: it is imported only when this backend is asked whether it is
available or is run, so ``import laperm_kernels`` never needs it.

A validated group (contiguous tensors, one device and dtype) becomes few launches:
rows of all tensors are bucketed by the power-of-two block that holds them, each bucket a
table of row descriptors (W address, S address, length) and one launch of
``rank_match_block_kernel``; rows longer than MAX_BLOCK go, all tensors together and
longest first, through a merge sort in scratch (``sort_chunks_kernel``, then
``merge_runs_kernel`` once per pass) in batches of at most SCRATCH_KEYS keys. The tables
depend only on addresses and shapes, so they are cached: an optimizer syncing the same
parameters every k steps pays no host work beyond the launches. Tables go up by
asynchronous copies from pinned memory, and every kernel is compiled once per (dtype,
block): row counts and run lengths are not specialised on (``do_not_specialize``).

CUDA graph capture: ``prepare`` builds the plan and compiles and loads every kernel it
launches; during capture it only finds them, raising ``NotPreparedForCapture`` if an
eager call did not make them first (plan_cache.py).

All or nothing: everything that can fail before the kernels run does so before the first
launch. ``plan_layout`` (layout.py: what to launch, from row descriptions alone)
checks the size limits (docs/triton.md) and raises ValueError; the
call's one scratch allocation (both merge buffers of its largest batch) is made by
:func:`prepare`, which the ops call for every group before launching any, and if it fails
the call raises ``torch.OutOfMemoryError`` saying how much it needed, with every weight
unchanged. Plans hold row tables only, never scratch, so nothing stays allocated between
calls.

float64 is not supported (its 64-bit order key leaves no room for the column in an int64
sort key); ``backend="auto"`` sends float64 CUDA tensors to the ``"torch"`` backend.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch

from ... import graph_capture
from ...reference import rows_and_length
from ..plan_cache import PlanCache
from . import launches
from .layout import plan_layout

name = "triton"

_KINDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # keys.py
SCRATCH_KEYS = 1 << 23  # keys of long rows per batch: 2 x 64 MiB of int64 scratch (ping-pong)

_import_error: Optional[str] = None
_imported = False


class Plan(NamedTuple):
    # launch(KIND, scratch, warmup=False); warmup=True (scratch None) compiles and loads
    # its kernels, launching none
    launches: List[Callable[..., None]]
    tables: List[torch.Tensor]  # every device table the launches read
    scratch_keys: int  # int64 scratch the launches need (0: none)
    long_rows: int  # rows that take the merge sort, for error messages
    longest_row: int
    compiled: List[bool]  # [True] once every kernel of the plan was compiled


_plans: "PlanCache[Plan]" = PlanCache(16, what="launch plan of the triton backend")


def _kernels():
    """The kernels (triton/kernels.py), imported on first use (None if triton is missing)."""
    global _imported, _import_error
    if not _imported:
        _imported = True
        try:
            from . import kernels  # noqa: F401  (imports triton)
        except Exception as e:  # ImportError, or a broken triton install
            _import_error = f"{type(e).__name__}: {e}"
    if _import_error is not None:
        return None
    from . import kernels

    return kernels


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def is_available() -> bool:
    return _kernels() is not None and (_interpreting() or torch.cuda.is_available())


def unavailable_reason() -> str:
    if _kernels() is None:
        return (
            f"triton is not installed or failed to import ({_import_error}); "
            "install it with `pip install triton`"
        )
    if not (_interpreting() or torch.cuda.is_available()):
        return (
            "no CUDA device (torch.cuda.is_available() is False); set TRITON_INTERPRET=1 "
            "before importing triton to run the kernels on CPU tensors (slow; for tests)"
        )
    return ""


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    on_device = device.type == "cuda" or (device.type == "cpu" and _interpreting())
    return on_device and dtype in _KINDS


def prepare(
    weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]
) -> Callable[[], None]:
    """The group's plan, its size limits checked, its kernels compiled and loaded, and its
    scratch allocated; returns the launch."""
    return prepare_rows(weights, sorted_inits)


def run(weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]) -> None:
    run_rows(weights, sorted_inits)


def _available_kernels():
    tk = _kernels()
    if tk is None:
        raise RuntimeError(unavailable_reason())
    return tk


def run_rows(
    weights: Sequence[torch.Tensor],
    sorted_inits: Sequence[torch.Tensor],
    *,
    max_block: Optional[int] = None,
    chunk: Optional[int] = None,
) -> None:
    """Rank-matches contiguous tensors of one device and a supported dtype, in place.

    ``max_block`` (longest row done in one block) and ``chunk`` (keys per chunk of longer
    rows, and per program of their merge passes) default to the shipped configuration;
    tests make them small so the long-row path runs cheaply under the interpreter.
    """
    prepare_rows(weights, sorted_inits, max_block=max_block, chunk=chunk)()


def prepare_rows(
    weights: Sequence[torch.Tensor],
    sorted_inits: Sequence[torch.Tensor],
    *,
    max_block: Optional[int] = None,
    chunk: Optional[int] = None,
) -> Callable[[], None]:
    """:func:`run_rows` up to its first write: the plan (ValueError for a size limit), its
    kernels compiled and loaded, its scratch allocated (``torch.OutOfMemoryError``).
    Returns the launch, which allocates and compiles nothing."""
    tk = _available_kernels()
    if not weights:
        return _nothing
    plan = _ready_plan(tk, weights, sorted_inits, max_block, chunk)
    kind, device = _KINDS[weights[0].dtype], weights[0].device
    with _on(device):
        scratch = _scratch(plan, weights, max_block or tk.MAX_BLOCK)

    def launch() -> None:
        with _on(device):
            for launch_one in plan.launches:
                launch_one(kind, scratch)
        for w in weights:  # raw-pointer writes: tell autograd W changed, like any in-place op
            torch.autograd.graph.increment_version(w)

    return launch


def _nothing() -> None:
    pass


# --- scratch: one allocation per call, before any launch --------------------------------


def _empty_scratch(keys: int, device: torch.device) -> torch.Tensor:
    """The call's int64 scratch (its only device allocation; tests make it fail)."""
    return torch.empty(keys, dtype=torch.int64, device=device)


def _scratch(plan: Plan, weights: Sequence[torch.Tensor], max_block: int) -> Optional[torch.Tensor]:
    if plan.scratch_keys == 0:
        return None
    device = weights[0].device
    try:
        return _empty_scratch(plan.scratch_keys, device)
    except torch.OutOfMemoryError as e:
        raise torch.OutOfMemoryError(
            f"rank_match (triton backend): out of memory allocating "
            f"{_bytes(plan.scratch_keys * 8)} of scratch on {device} for {plan.long_rows} "
            f"row(s) longer than {max_block} elements (the longest has "
            f"{plan.longest_row:,}): int64 sort keys of up to {SCRATCH_KEYS:,} elements of "
            f"such rows at a time (or of one longer row), in two buffers. Nothing was "
            f"modified in this group ({len(weights)} {weights[0].dtype} tensor(s)). Free "
            f"that much GPU memory (drop references, torch.cuda.empty_cache()) "
            f"and call again, or run these tensors with backend='cuda' or backend='torch', or "
            f"lower laperm_kernels.ops.backends.triton.backend.SCRATCH_KEYS "
            f"(fewer rows per batch). "
            f"The allocator said: {e}"
        ) from e


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024


# --- plans: the layout's tables on the device and its launches, cached -----------------


def _on(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _ready_plan(tk, weights, sorted_inits, max_block: Optional[int], chunk: Optional[int]) -> Plan:
    """The plan (built on a miss), with every kernel it launches compiled and loaded."""
    max_block = tk.MAX_BLOCK if max_block is None else max_block
    chunk = tk.CHUNK if chunk is None else chunk
    device, dtype = weights[0].device, weights[0].dtype
    plan = _plan(tk, weights, sorted_inits, max_block, chunk)
    if not plan.compiled:
        if graph_capture.capturing(device):  # compiling or loading would synchronise
            raise graph_capture.not_prepared("the triton backend's compiled kernels")
        with _on(device):
            for launch in plan.launches:
                launch(_KINDS[dtype], None, warmup=True)
        plan.compiled.append(True)
    return plan


def _plan(tk, weights, sorted_inits, max_block: int, chunk: int) -> Plan:
    """The plan from the cache, built on a miss (its kernels not necessarily compiled)."""
    settings = (weights[0].device, weights[0].dtype, max_block, chunk, SCRATCH_KEYS)
    return _plans.get(
        settings,
        weights,
        sorted_inits,
        lambda: _build_plan(tk, weights, sorted_inits, max_block, chunk),
        device_tables=lambda plan: plan.tables,
    )


def _check_settings(tk, max_block: int, chunk: int) -> None:
    if chunk < 2 or chunk & (chunk - 1) or chunk > max_block:
        raise ValueError(
            f"chunk must be a power of two, at least 2 and at most max_block "
            f"({max_block}), got {chunk}"
        )
    if max_block > tk.MAX_BLOCK:
        raise ValueError(f"max_block must be at most {tk.MAX_BLOCK}, got {max_block}")


def _build_plan(tk, weights, sorted_inits, max_block: int, chunk: int) -> Plan:
    _check_settings(tk, max_block, chunk)
    device = weights[0].device
    pieces = []
    for w, s in zip(weights, sorted_inits):
        rows, n = rows_and_length(w)
        pieces.append((w.data_ptr(), s.data_ptr(), rows, n, n * w.element_size()))
    layout = plan_layout(
        pieces,
        max_block,
        chunk,
        {b: rows for b, (rows, _) in tk.BLOCK_CONFIGS.items()},
        SCRATCH_KEYS,
    )

    plan = Plan(
        [],
        [],
        layout.scratch_keys,
        sum(p[2] for b in layout.batches for p in b.pieces),
        max((b.pieces[0][3] for b in layout.batches), default=0),
        [],
    )
    for launch in layout.blocks:
        tables = launches.row_table(launch.pieces, device)
        plan.launches.append(launches.block_launch(tk, launch.block, *tables))
        plan.tables.extend(tables)
    for batch in layout.batches:
        plan.launches.append(launches.merge_sort_launch(tk, batch, chunk, device, plan.tables))
    return plan
