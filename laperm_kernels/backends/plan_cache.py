"""An LRU of launch plans for the GPU backends.

A plan (row tables, launch list) depends only on the tensors' addresses and row shapes
and on the backend's settings, so an optimizer syncing the same parameters every k steps
builds it once. Keys hold addresses, never tensors: the cache keeps no weight alive, and a
plan found for reused addresses of the same shapes is exactly the plan they need.

A plan's device tables must outlive every launch that reads them, also once the LRU has
dropped the plan:

* a launch queued on some stream: each time a plan is handed out, its tables are marked
  as used by the current stream (``Tensor.record_stream``), so the caching allocator does
  not reuse their memory before the work queued there has run;
* a CUDA graph: a plan handed out during capture is read again at every replay, and
  nothing says when the graph is freed, so such plans are kept for the life of the
  cache (a graph is captured once; their number is the number of captures).

One lock makes ``get`` safe from several threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Iterable, Sequence, TypeVar

import torch

from ..reference import rows_and_length

T = TypeVar("T")


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


class PlanCache(Generic[T]):
    def __init__(self, size: int = 16):
        self.size = size
        self._plans: "OrderedDict[tuple, T]" = OrderedDict()
        self._captured: "dict[tuple, T]" = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._plans.keys() | self._captured.keys())

    def get(self, settings: tuple, weights: Sequence[torch.Tensor],
            sorted_inits: Sequence[torch.Tensor], build: Callable[[], T],
            device_tables: Callable[[T], Iterable[torch.Tensor]] = lambda plan: ()) -> T:
        """The plan for these tensors and settings, built by ``build()`` on a miss.
        ``device_tables(plan)`` lists the device tensors its launches read."""
        key = (*settings, tuple((w.data_ptr(), s.data_ptr(), *rows_and_length(w))
                                for w, s in zip(weights, sorted_inits)))
        capturing = _capturing(weights[0].device)
        with self._lock:
            plan = self._captured.get(key)
            if plan is None:
                plan = self._plans.get(key)
            if plan is None:
                plan = self._plans[key] = build()
                while len(self._plans) > self.size:
                    self._plans.popitem(last=False)
            elif key in self._plans:
                self._plans.move_to_end(key)
            if capturing:
                self._captured[key] = plan
        if not capturing:  # record_stream is not for use inside a capture
            for table in device_tables(plan):
                if table.is_cuda:
                    table.record_stream(torch.cuda.current_stream(table.device))
        return plan
