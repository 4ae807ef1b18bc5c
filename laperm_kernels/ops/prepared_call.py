"""One rank-matching call made again and again with the same tensors: LaPerm's sync.

``PreparedCall(weights, sorted_inits).run(backend, max_abs)`` is the whole call, in one of
two ways, with the same result:

- **natively**, where the ops would send the call to the C++ kernel at once (one group of
  contiguous CPU tensors, ``backend="cpu"`` or ``"auto"`` having decided it for these
  shapes: laperm::check_call_'s rule). The lists are held in C++ (``laperm.SyncCall``,
  csrc/sync_call.h), so a run converts no tensor on the way in; each run checks every
  input rule again, since what a Parameter holds can change between runs (``p.data = ...``),
  and touches nothing where the rule does not hold;
- otherwise through the ops' one runner (:func:`rank_match.rank_match_groups_`):
  validation, grouping by (device, dtype), dispatch.

With ``max_abs=True`` it also gives max |x| of each weight before the call
(:class:`max_abs.MaxAbs` parts), read before any weight is written.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from .. import _extension
from .max_abs import MaxAbs
from .rank_match import CallResult, cpu_kernel_keys, rank_match_groups_


class PreparedCall:
    """The call of ``weights`` and ``sorted_inits`` (lists the caller keeps unchanged)."""

    def __init__(self, weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]):
        self.weights: List[torch.Tensor] = list(weights)
        self.sorted_inits: List[torch.Tensor] = list(sorted_inits)
        self._native = None
        if (
            self.weights
            and _extension.is_loaded()
            and all(
                getattr(t, "placements", None) is None  # not a DTensor
                and t.device.type == "cpu"
                and t.is_contiguous()
                for t in (*self.weights, *self.sorted_inits)
            )
        ):
            self._native = torch.classes.laperm.SyncCall(self.weights, self.sorted_inits)

    def run(self, backend: str = "auto", max_abs: bool = False) -> CallResult:
        """Rank-matches every weight in place; ``CallResult(used, max_abs, native)``."""
        if self._native is not None:
            cpu_keys, cpu_any = cpu_kernel_keys(backend)
            if cpu_keys or cpu_any:
                ran, values = self._native.run(cpu_keys, cpu_any, max_abs)
                if ran:
                    w = self.weights[0]
                    parts = [MaxAbs(w.device, list(range(len(self.weights))), values)]
                    return CallResult(
                        [(w.device, w.dtype, "cpu")], parts if max_abs else None, True
                    )
        return rank_match_groups_(self.weights, self.sorted_inits, backend, max_abs=max_abs)
