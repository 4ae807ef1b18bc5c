"""LaPerm's ``check_finite``: whether a sync met NaN or inf, found without making the host
wait for the GPU.

The check is max |x| of each permuted tensor before the sync, which is NaN if the tensor
holds a NaN and inf if it holds an inf: the sync's call of the ops computes it, on the
tensors' devices, before it writes any weight (ops/max_abs.py). CPU values are read at
once. CUDA values are copied asynchronously into pinned memory, with an event recorded
after the copy: they are read once the event has completed, polled without blocking
(LaPerm polls at every step), so the warning comes a step or a few after the sync it is
about, and names that sync. A new check starts only when the last one has been read.

CUDA graph capture: no check starts in a capture, and none is read while a device it
involves is capturing (polling an event there is not permitted and would invalidate the
capture): a check left in flight by the eager steps before the capture is read at the
first eager step after it.
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence, Tuple

import torch

from ..ops import graph_capture
from ..ops.max_abs import MaxAbs

# (device, labels, host values, event after the copy or None) for each (device, dtype) group
_Part = Tuple[torch.device, List[str], torch.Tensor, Optional["torch.cuda.Event"]]


class FiniteCheck:
    """One check in flight at a time: :meth:`record` queues it, :meth:`result` reads it."""

    def __init__(self) -> None:
        self._pending: Optional[Tuple[int, List[_Part]]] = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def ready(self, tensors: Sequence[torch.Tensor]) -> bool:
        """Whether a check of ``tensors`` can start now: none is unread, and none of their
        devices is capturing a CUDA graph."""
        return self._pending is None and not graph_capture.capturing_any(tensors)

    def record(self, step: int, parts: Optional[Sequence[MaxAbs]], labels: Sequence[str]) -> None:
        """Queues the check of the sync after ``step``: ``parts`` (max |x| of each weight
        before it, per group, as the ops return them: ops/max_abs.py) of the weights named by
        ``labels``; CUDA values are copied to pinned memory without waiting. Does nothing
        without parts or while an earlier check is unread."""
        if not parts or self._pending is not None:
            return
        queued: List[_Part] = []
        for device, positions, values in parts:
            named = [labels[i] for i in positions]
            if device.type == "cuda":
                host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
                host.copy_(values, non_blocking=True)
                event = torch.cuda.Event()  # after the copy, on the stream that ran it
                event.record(torch.cuda.current_stream(device))
                queued.append((device, named, host, event))
            else:
                queued.append((device, named, values, None))
        self._pending = (step, queued)

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
