"""One benchmark configuration: the methods to time, the model's weights, and a result row
per method, each checked bit for bit against the PyTorch reference."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from laperm_kernels.ops import decision_store, dispatch
from laperm_kernels.ops.backends import BACKENDS
from laperm_kernels.ops.rank_match import available_backends, rank_match_many_, sort_rows
from laperm_kernels.ops.reference import SUPPORTED_DTYPES_BY_NAME, bitwise_equal

from . import baselines
from .presets import PRESETS
from .timing import time_methods

DTYPES = SUPPORTED_DTYPES_BY_NAME


@dataclass
class Result:
    preset: str
    dtype: str
    device: str
    threads: int
    method: str
    elements: int
    median_s: Optional[float]
    elements_per_s: Optional[float]
    effective_gb_per_s: Optional[float]  # read W, read S, write W: 3 x itemsize a element
    speedup_vs_torch: Optional[float]
    check: str  # "bit-identical", "not checked (sort only)" or "MISMATCH"
    runs: int = 0  # timed runs behind the median
    first_call_s: Optional[float] = None  # auto: its first call (the trial, if one ran)
    chosen: Optional[str] = None  # auto: the backend it chose, and how


def make_model(shapes, dtype, device, seed=0):
    """He-normal 'trained' weights and the sorted rows of an independent initialisation."""
    g = torch.Generator().manual_seed(seed)
    weights, sorted_inits = [], []
    for shape in shapes:
        std = math.sqrt(2.0 / (math.prod(shape[1:]) or 1))
        weights.append((torch.randn(shape, generator=g) * std).to(dtype).to(device))
        init = (torch.randn(shape, generator=g) * std).to(dtype).to(device)
        sorted_inits.append(sort_rows(init))
    return weights, sorted_inits


def methods_for(device: torch.device, dtype: torch.dtype, backends: Optional[List[str]]):
    """(name, fn, checked) for every backend available here, then the naive baselines."""
    out = []
    names = [n for n in available_backends(device) if BACKENDS[n].supports(device, dtype)]
    names = ["torch"] + [n for n in names if n != "torch"]  # the reference first
    for name in names + ["auto"]:
        if backends is None or name in backends:
            out.append((name, lambda ws, ss, n=name: rank_match_many_(ws, ss, backend=n), True))
    for name, (fn, checked, dtypes) in baselines.BASELINES.items():
        if backends is not None and name not in backends:
            continue
        if dtype in dtypes and (device.type == "cpu" or not name.startswith("numpy")):
            out.append((name, fn, checked))
    return out


def run_benchmark(
    preset: str,
    dtype_name: str,
    device: torch.device,
    threads: int,
    repeat: int,
    backends: Optional[List[str]] = None,
    progress: Optional[Callable[[str], None]] = None,
    budget_s: float = math.inf,
) -> List[Result]:
    """Times every method on ``preset``'s weights; ``progress(method)`` after each run."""
    dtype = DTYPES[dtype_name]
    torch.set_num_threads(threads)
    pristine, sorted_inits = make_model(PRESETS[preset], dtype, device)
    elements = sum(w.numel() for w in pristine)
    expected = [w.clone() for w in pristine]
    rank_match_many_(expected, sorted_inits, backend="torch")  # also torch's warm-up
    if device.type == "cpu":  # the NumPy baselines run on CPU tensors only
        baselines.prepare_sort_keys(pristine)

    methods = methods_for(device, dtype, backends)
    warm_up = [name != "torch" and name not in baselines.BASELINES for name, _, _ in methods]
    timed = time_methods(
        [fn for _, fn, _ in methods],
        warm_up,
        pristine,
        sorted_inits,
        repeat,
        budget_s,
        None if progress is None else lambda i: progress(methods[i][0]),
    )
    results, torch_time = [], None
    for (name, _, checked), t in zip(methods, timed):
        common = dict(runs=t.runs)
        if name == "auto":
            common.update(first_call_s=t.first_call_s, chosen=_auto_choice(pristine))
        row = functools.partial(Result, preset, dtype_name, str(device), threads, name, elements)
        if checked and not all(bitwise_equal(a, b) for a, b in zip(t.output, expected)):
            results.append(row(None, None, None, None, "MISMATCH", **common))
            continue
        if name == "torch":
            torch_time = t.median_s
        seconds = t.median_s
        results.append(
            row(
                seconds,
                elements / seconds,
                elements * 3 * pristine[0].element_size() / seconds / 1e9,
                torch_time / seconds if torch_time else None,
                "bit-identical" if checked else "not checked (sort only)",
                **common,
            )
        )
    return results


def _auto_choice(weights: List[torch.Tensor]) -> str:
    """What auto chose for these tensors, how, and the trial's verdicts, in one line."""
    shapes = [list(w.shape) for w in weights]
    threads = torch.get_num_threads()
    for d in reversed(dispatch.report()):
        sig = d["signature"]
        if (
            sig["shapes"] == shapes
            and sig.get("threads", threads) == threads
            and sig["device"] == str(weights[0].device)
        ):
            verdicts = "; ".join(decision_store.Verdict(**c).text() for c in d["candidates"])
            return f"{d['backend']} ({d['source']}: {verdicts})"
    return available_backends(weights[0].device)[0] + " (only candidate or LAPERM_AUTOTUNE=0)"
