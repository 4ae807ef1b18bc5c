"""Backends: one small module each, answering the same three questions.

* ``is_available()`` / ``unavailable_reason()``: can it run in this process at all?
* ``supports(device, dtype)``: can it run tensors of this kind?
* ``run(weights, sorted_inits)``: rank-match a validated group (contiguous tensors of one
  device and dtype, no aliasing) in place.

A backend that launches from cached plans also has ``prepare(weights, sorted_inits)``:
everything ``run`` would do before its first write (plan, size limits, compilation),
reading no values. ``ops`` prepares every group of a call before running any, so a call
fails before touching anything; during CUDA graph capture ``prepare`` only looks up and
raises ``graph_capture.NotPreparedForCapture`` on a miss.

Backends never validate and never know about each other; ``laperm_kernels.ops`` does both.
A new backend is a module here and one line in ``BACKENDS`` and ``AUTO_ORDER``.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from . import cpu, torch_ref
from . import cuda as cuda_backend
from . import triton as triton_backend

BACKENDS: Dict[str, object] = {
    "torch": torch_ref,
    "cpu": cpu,
    "triton": triton_backend,
    "cuda": cuda_backend,
}

# What backend="auto" tries, fastest first, for each device type.
AUTO_ORDER: Dict[str, List[str]] = {
    "cpu": ["cpu", "torch"],
    "cuda": ["cuda", "triton", "torch"],
}


def prepare(name: str, weights: Sequence[torch.Tensor],
            sorted_inits: Sequence[torch.Tensor]) -> None:
    """Backend ``name``'s ``prepare`` for a validated group, where it has one."""
    prepare_group = getattr(BACKENDS[name], "prepare", None)
    if prepare_group is not None:
        prepare_group(weights, sorted_inits)
