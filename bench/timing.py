"""The benchmark's timing loop: every method on the same weights, round by round in a
shuffled order, each run on weights restored from a pristine copy, within a time budget.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from laperm_kernels.ops.timing import DeviceTimer, synchronize


@dataclass
class Timing:
    median_s: float
    runs: int
    output: List[torch.Tensor]
    first_call_s: Optional[float]  # the warm-up run, if the method had one


def time_methods(
    fns: List[Callable],
    warm_up: List[bool],
    pristine: List[torch.Tensor],
    sorted_inits: List[torch.Tensor],
    repeat: int,
    budget_s: float = math.inf,
    progress: Optional[Callable[[int], None]] = None,
) -> List[Timing]:
    """Times every method in ``fns`` on the same weights.

    Methods with ``warm_up[i]`` first run once outside the median (their first call, in
    which kernels compile or allocate and ``auto`` holds its trial; its time is returned
    as ``first_call_s``). Then the timed runs go round by round, each round in a new
    (seeded) random order, so that neither a drift of the machine's speed nor the method
    run just before favours one method; a method whose timed runs add up to ``budget_s``
    sits out the remaining rounds (every method gets at least one). Every run works on the
    same buffers, restored from ``pristine`` before it (untimed): where a tensor lies in
    memory moved the C++ kernel's time by ~4% between two copies of the same weights, more
    than the differences to be measured.
    The output checked is that of each method's first timed run. ``progress(i)`` is
    called after each run of method ``i``."""
    device = pristine[0].device
    timer = DeviceTimer(device)
    work = [p.clone() for p in pristine]
    first: List[Optional[float]] = [None] * len(fns)
    times: List[List[float]] = [[] for _ in fns]
    outputs: List[List[torch.Tensor]] = [[] for _ in fns]

    def run(i: int) -> float:
        for w, p in zip(work, pristine):
            w.copy_(p)
        synchronize(device)
        timer.start()
        fns[i](work, sorted_inits)
        seconds = timer.stop()
        if progress is not None:
            progress(i)
        return seconds

    for i in range(len(fns)):
        if warm_up[i]:
            first[i] = run(i)
    shuffle = random.Random(0).shuffle
    for r in range(repeat):
        order = list(range(len(fns)))
        shuffle(order)
        for i in order:
            if r > 0 and sum(times[i]) >= budget_s:
                continue
            times[i].append(run(i))
            if r == 0:
                outputs[i] = [w.clone() for w in work]
    return [
        Timing(statistics.median(t), len(t), out, f) for t, out, f in zip(times, outputs, first)
    ]
