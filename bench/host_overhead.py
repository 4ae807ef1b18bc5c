"""The host's fixed cost of a sync, measured: the benchmark's "host overhead" line.

On tiny tensors the kernels take next to nothing, so what a call costs is the host's work
(validation, grouping, dispatch, the launch or native call). Four things are timed in
the same rounds, their order shuffled each round: the native op alone
(``torch.ops.laperm.rank_match_many_``, CPU tensors), ``rank_match_many_`` with
``backend="auto"``, an SGD step (lr 0) over the same tensors as parameters, and a
LaPerm(SGD) step that syncs every step. A sync's cost above the inner step is the
difference of the last two. Each figure is the median over rounds of the mean of
``calls`` back-to-back calls (on CUDA, closed by a synchronisation).
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Callable, Dict

import torch

from laperm_kernels.ops.rank_match import rank_match_many_, sort_rows
from laperm_kernels.ops.timing import synchronize
from laperm_kernels.optim.laperm import LaPerm

TENSORS, SHAPE = 54, (2, 3)  # ResNet-50's count of permuted tensors, each tiny


def measure(
    device: torch.device, rounds: int = 15, calls: int = 200, seed: int = 0
) -> Dict[str, float]:
    """Microseconds per call: ``op`` (CPU only), ``rank_match_many_``, ``inner_step``,
    ``laperm_step``, and ``sync_above_inner_step`` (their difference)."""
    gen = torch.Generator().manual_seed(seed)
    ws = [torch.randn(SHAPE, generator=gen).to(device) for _ in range(TENSORS)]
    ss = [sort_rows(w) for w in ws]
    params = [[torch.nn.Parameter(w.clone()) for w in ws] for _ in range(2)]
    for group in params:
        for p in group:
            p.grad = torch.zeros_like(p)
    inner = torch.optim.SGD(params[0], lr=0.0)
    laperm = LaPerm(torch.optim.SGD(params[1], lr=0.0), sync_period=1, permute=True)
    methods: Dict[str, Callable[[], object]] = {
        "rank_match_many_": lambda: rank_match_many_(ws, ss),
        "inner_step": inner.step,
        "laperm_step": laperm.step,
    }
    if device.type == "cpu" and hasattr(torch.ops.laperm, "rank_match_many_"):
        methods["op"] = lambda: torch.ops.laperm.rank_match_many_.default(ws, ss)
    for fn in methods.values():  # warm-up: auto's trial, plans, caches
        for _ in range(3):
            fn()
    samples: Dict[str, list] = {name: [] for name in methods}
    order = list(methods)
    shuffle = random.Random(seed)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for name in order:
            fn = methods[name]
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - t0) / calls * 1e6)
    out = {name: statistics.median(s) for name, s in samples.items()}
    out["sync_above_inner_step"] = out["laperm_step"] - out["inner_step"]
    return out


def line(us: Dict[str, float], device: torch.device) -> str:
    """The benchmark's line for :func:`measure`'s figures."""
    op = f" (the native op alone {us['op']:.1f} us)" if "op" in us else ""
    return (
        f"host overhead, {TENSORS} tensors of {SHAPE[0]}x{SHAPE[1]} on {device}, "
        f"{torch.get_num_threads()} thread(s): rank_match_many_ "
        f"{us['rank_match_many_']:.1f} us a call{op}; a LaPerm(SGD) step that syncs "
        f"{us['laperm_step']:.1f} us against SGD's {us['inner_step']:.1f} us: a sync "
        f"costs {us['sync_above_inner_step']:.1f} us above the inner step"
    )
