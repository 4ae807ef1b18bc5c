"""The checks that measure: launch-plans (launches per preset), copy-bandwidth (the
roofline's peak) and benchmark (bench's results on the GPU)."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any, Dict, Optional, Tuple

import torch

from laperm_kernels import _extension
from laperm_kernels.ops import dispatch
from laperm_kernels.ops.backends import cuda as cuda_backend
from laperm_kernels.ops.backends.triton import backend as triton_backend
from laperm_kernels.ops.reference import (
    SUPPORTED_DTYPES_BY_NAME,
)

from ..presets import PRESETS
from ..results import run_benchmark
from . import context
from .context import Context, Skip

DTYPES = tuple(SUPPORTED_DTYPES_BY_NAME)


QUICK_PRESETS, QUICK_DTYPES = ["resnet50"], ["float32"]


BENCH_BUDGET_S = 1.0  # timed seconds per benchmark method (bench's --budget)


SM90_SMEM_OPTIN = 227 * 1024  # shared memory per block, opt-in, on sm_90 (H100, H200)


def launch_counts(shapes, dtype: torch.dtype, device: torch.device) -> Dict[str, Optional[int]]:
    """Launches per call of each backend for tensors of ``shapes``: cuda, one per size
    class plus one per large batch; triton, one per block bucket plus one per batch of
    long rows (each a chunk sort and its merge passes). None where the backend cannot
    plan them. Plans depend on shapes and addresses only, so the tensors are left
    uninitialised; on the CPU the cuda plan takes sm_90's largest block tile."""
    ws = [torch.empty(s, dtype=dtype, device=device) for s in shapes]
    ss = [torch.empty_like(w) for w in ws]
    counts: Dict[str, Optional[int]] = {"cuda": None, "triton": None}
    if _extension.is_loaded():
        tile = (
            None
            if device.type == "cuda"
            else torch.ops.laperm.cuda_largest_block_tile(dtype, SM90_SMEM_OPTIN)
        )
        plan = cuda_backend.describe_plan(cuda_backend.plan_for(ws, ss, max_block_tile=tile))
        counts["cuda"] = len(plan["launches"]) + len(plan["large_batches"])
    tk = triton_backend._kernels()
    if tk is not None and dtype in triton_backend._KINDS:
        plan = triton_backend._plan(tk, ws, ss, tk.MAX_BLOCK, tk.CHUNK)
        counts["triton"] = len(plan.launches)
    return counts


def check_launch_plans(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    if not _extension.is_loaded() and triton_backend._kernels() is None:
        raise Skip("neither the C++ extension nor triton is available to plan")
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    details["planned_on"] = (
        "this GPU"
        if device.type == "cuda"
        else "CPU tensors, cuda block tiles as on sm_90 (H100/H200)"
    )
    details["rows"] = []
    for preset in ctx.presets:
        for dtype in ctx.dtypes:
            counts = launch_counts(PRESETS[preset], SUPPORTED_DTYPES_BY_NAME[dtype], device)
            ctx.launches[(preset, dtype)] = counts
            details["rows"].append({"preset": preset, "dtype": dtype, **counts})
    return True, f"{len(details['rows'])} preset x dtype plans ({details['planned_on']})"


def theoretical_peak(props) -> Tuple[Optional[float], str]:
    """Peak memory bandwidth in GB/s from torch's device properties, and how it was found."""
    clock_khz = getattr(props, "memory_clock_rate", 0)  # kHz, as CUDA reports it
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None, (
            f"torch {torch.__version__} does not expose memory_clock_rate and memory_bus_width"
        )
    peak = 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate
    return peak, f"2 x {clock_khz / 1e3:.0f} MHz x {bus_bits}-bit bus"


def check_copy_bandwidth(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = context.need_gpu()
    props = torch.cuda.get_device_properties(device)
    nbytes = min(1 << 30, props.total_memory // 8)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)

    context.cuda_seconds(copy)  # warm-up
    seconds = statistics.median(context.cuda_seconds(copy) for _ in range(10))
    ctx.copy_gb_per_s = 2 * nbytes / seconds / 1e9  # bytes read + bytes written
    ctx.peak_gb_per_s, how = theoretical_peak(props)
    details.update(
        bytes=nbytes,
        median_s=seconds,
        copy_gb_per_s=ctx.copy_gb_per_s,
        peak_gb_per_s=ctx.peak_gb_per_s,
        peak_from=how,
    )
    summary = f"copy {ctx.copy_gb_per_s:.0f} GB/s (read + write, {nbytes >> 20} MiB)"
    if ctx.peak_gb_per_s:
        summary += (
            f", {ctx.copy_gb_per_s / ctx.peak_gb_per_s:.0%} of the theoretical "
            f"{ctx.peak_gb_per_s:.0f} GB/s"
        )
    return True, summary


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a and b else None


def check_benchmark(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = context.need_gpu()
    dispatch.reset()  # backend="auto" holds its trials in this run
    rows, errors = [], []
    for preset in ctx.presets:
        for dtype in ctx.dtypes:
            try:
                results = run_benchmark(
                    preset,
                    dtype,
                    device,
                    torch.get_num_threads(),
                    ctx.repeat,
                    budget_s=BENCH_BUDGET_S,
                )
            except Exception as e:  # one broken combination must not hide the others
                errors.append(f"{preset} {dtype}: {type(e).__name__}: {e}")
                continue
            launches = ctx.launches.get((preset, dtype), {})
            for r in results:
                row = asdict(r)
                chosen = getattr(r, "chosen", None)  # auto: "cuda (trial: ...)"
                row["backend"] = (
                    chosen.split(" ", 1)[0] if chosen else None if r.method == "auto" else r.method
                )
                row["of_copy_bandwidth"] = _ratio(r.effective_gb_per_s, ctx.copy_gb_per_s)
                row["of_peak_bandwidth"] = _ratio(r.effective_gb_per_s, ctx.peak_gb_per_s)
                row["launches"] = launches.get(row["backend"])
                rows.append(row)
    details.update(repeat=ctx.repeat, rows=rows, errors=errors)
    mismatches = [
        f"{r['preset']} {r['dtype']} {r['method']}" for r in rows if r["check"] == "MISMATCH"
    ]
    details["mismatches"] = mismatches
    summary = (
        f"{len(rows)} results, {len(mismatches)} mismatches, {len(errors)} errors "
        f"(median of {ctx.repeat})"
    )
    return not mismatches and not errors, summary
