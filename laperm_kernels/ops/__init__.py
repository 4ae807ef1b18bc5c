"""The operators: the public rank-matching ops and everything under them.

- ``rank_match``: ``rank_match_``, ``rank_match_many_``, ``sort_rows``,
  ``available_backends``; validation and grouping by (device, dtype); the one runner
- ``prepared_call``: a call made again and again with the same tensors (LaPerm's sync):
  the native CPU fast path, else the runner; ``max_abs``: max |x| before a call
- ``reference``: the PyTorch reference (the contract's definition), dtypes
- ``_meta_registrations``: the fake (meta) kernels of ``torch.ops.laperm`` (named by
  csrc/laperm.cpp's ``set_python_module``)
- ``staging``: contiguous buffers for non-contiguous weights
- ``graph_capture``: what a CUDA graph capture needs prepared eagerly
- ``timing``: device timers
- ``dispatch``: ``backend="auto"``'s trial and ban policy; ``decision_store``: its
  decisions on disk
- ``backends/``: one module per backend (protocol, cpu, cuda, torch_ref, plan_cache,
  triton/ with its layout planner and kernels)

Nothing here imports ``laperm_kernels.optim``.
"""

from . import _meta_registrations  # noqa: F401  (the ops' fake kernels)
from .rank_match import (
    available_backends,
    rank_match_,
    rank_match_groups_,
    rank_match_many_,
    sort_rows,
)

__all__ = [
    "available_backends",
    "rank_match_",
    "rank_match_groups_",
    "rank_match_many_",
    "sort_rows",
]
