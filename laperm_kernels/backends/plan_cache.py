"""An LRU of launch plans for the GPU backends.

A plan (row tables, launch list) depends only on the tensors' addresses and row shapes
and on the backend's settings, so an optimizer syncing the same parameters every k steps
builds it once. Keys hold addresses, never tensors: the cache keeps nothing alive, and a
plan found for reused addresses of the same shapes is exactly the plan they need.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Sequence, TypeVar

import torch

from ..reference import rows_and_length

T = TypeVar("T")


class PlanCache(Generic[T]):
    def __init__(self, size: int = 16):
        self.size = size
        self._plans: "OrderedDict[tuple, T]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, settings: tuple, weights: Sequence[torch.Tensor],
            sorted_inits: Sequence[torch.Tensor], build: Callable[[], T]) -> T:
        """The plan for these tensors and settings, built by ``build()`` on a miss."""
        key = (*settings, tuple((w.data_ptr(), s.data_ptr(), *rows_and_length(w))
                                for w, s in zip(weights, sorted_inits)))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = build()
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan
