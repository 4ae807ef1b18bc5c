"""LaPerm's ``check_finite``: whether a sync met NaN or inf, found without making the host
wait for the GPU.

The check is max |x| of each permuted tensor, which is NaN if the tensor holds a NaN and
inf if it holds an inf. On the CPU, all tensors go through one native call
(``laperm::max_abs``, csrc/max_abs.cpp) and the result is read at once. On CUDA, per
(device, dtype) group, one fused multi-tensor reduction (``torch._foreach_norm(tensors,
inf)``) and one ``stack`` give a vector with a value per tensor, copied asynchronously into
pinned memory, with an event recorded after it: the result is read once the event has completed,
polled without blocking (LaPerm polls at every step), so the warning comes a step or a few
after the sync it is about, and names that sync. A new check starts only when the last
one has been read.

CUDA graph capture: no check starts in a capture, and none is read while a device it
involves is capturing (polling an event there is not permitted and would invalidate the
capture): a check left in flight by the eager steps before the capture is read at the
first eager step after it.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .. import _extension
from ..ops import graph_capture

# (device, labels, host values, event after the copy or None) for each (device, dtype) group
_Part = Tuple[torch.device, List[str], torch.Tensor, Optional["torch.cuda.Event"]]


class FiniteCheck:
    """One check in flight at a time: :meth:`start` queues it, :meth:`result` reads it."""

    def __init__(self) -> None:
        self._pending: Optional[Tuple[int, List[_Part]]] = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def start(self, step: int, tensors: Sequence[torch.Tensor], labels: Sequence[str]) -> None:
        """Queues the check of ``tensors`` (named by ``labels``) at ``step``. Does nothing
        while an earlier check is unread, or during CUDA graph capture. (LaPerm calls it
        under torch.no_grad(), so the reductions record no autograd graph.)"""
        if self._pending is not None or graph_capture.capturing_any(tensors):
            return
        native = _extension.is_loaded()
        if native and tensors and tensors[0].device.type == "cpu":
            try:  # every tensor on the CPU: one native call, no grouping
                values = torch.ops.laperm.max_abs.default(tensors)
            except (RuntimeError, ValueError):  # some are not: group them below
                values = None
            if values is not None:
                self._pending = (step, [(tensors[0].device, list(labels), values, None)])
                return
        groups: Dict[Tuple[torch.device, object], Tuple[list, list]] = {}
        for t, label in zip(tensors, labels):
            if t.numel():  # CPU tensors of every dtype in one native call
                kind = None if native and t.device.type == "cpu" else t.dtype
                ts, ls = groups.setdefault((t.device, kind), ([], []))
                ts.append(t)
                ls.append(label)
        parts: List[_Part] = []
        for (device, kind), (ts, ls) in groups.items():
            if kind is None:
                values = torch.ops.laperm.max_abs.default(ts)
            else:
                values = torch.stack(torch._foreach_norm(ts, float("inf")))
            if device.type == "cuda":
                host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
                host.copy_(values, non_blocking=True)
                event = torch.cuda.Event()  # after the copy, on the stream that ran it
                event.record(torch.cuda.current_stream(device))
                parts.append((device, ls, host, event))
            else:
                parts.append((device, ls, values, None))
        if parts:
            self._pending = (step, parts)

    def record(self, step: int, values: torch.Tensor, labels: Sequence[str]) -> None:
        """:meth:`start` for values computed already: max |x| of each CPU tensor named by
        ``labels`` (LaPerm's native sync computes them, sync_plan.py)."""
        if self._pending is None:
            self._pending = (step, [(values.device, labels, values, None)])

    def result(self) -> Optional[Tuple[int, List[str]]]:
        """``(step, ["<label> (NaN)", "<label> (inf)", ...])`` for the check in flight once
        its values are on the host (an empty list: all finite), then it is done; None while
        there is none, the device has not finished it, or a device it involves is capturing
        a CUDA graph (nothing is polled then: the next eager call reads it)."""
        if self._pending is None:
            return None
        step, parts = self._pending
        if any(graph_capture.capturing(device) for device, *_ in parts):
            return None
        if not all(event is None or event.query() for *_, event in parts):
            return None
        self._pending = None
        bad = []
        for _, labels, host, _ in parts:
            values = host.tolist()
            if math.isfinite(sum(values)):  # no NaN nor inf (the sum has them if any has)
                continue
            for label, value in zip(labels, values):
                if not math.isfinite(value):
                    bad.append(f"{label} ({'NaN' if math.isnan(value) else 'inf'})")
        return step, bad


def warn(step: int, bad) -> None:
    """The warning of a check that found NaN or inf in ``bad`` (a diverged run): the sync
    then proceeded as the contract orders (NaN ranks after every number, inf as an
    ordinary value), so those positions received initial values and the weights are
    finite again."""
    warnings.warn(
        f"LaPerm: at the sync after step {step}, permuted parameters held NaN or inf "
        f"({', '.join(bad)}): the run may have diverged. The sync went on as the "
        "contract orders (NaN ranks after every number), so those positions now hold "
        "initial values. This warning is given once.",
        RuntimeWarning,
        stacklevel=5,
    )
