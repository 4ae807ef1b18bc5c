"""Backends: one small module each, implementing the same interface (protocol.py,
``Backend``): ``is_available()`` / ``unavailable_reason()``, ``supports(device, dtype)``,
``prepare(weights, sorted_inits)`` (which returns the launch) and
``run(weights, sorted_inits)``.

Backends never validate and never know about each other; ``laperm_kernels.ops`` does both.
A new backend is a module here and one line in ``BACKENDS`` and ``AUTO_ORDER``.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Sequence

import torch

from . import cpu, torch_ref
from . import cuda as cuda_backend
from .protocol import Backend
from .triton import backend as triton_backend

BACKENDS: Dict[str, Backend] = {
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


def prepare(
    name: str, weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]
) -> Callable[[], None]:
    """Backend ``name``'s ``prepare`` for a validated group: its launch (for a stand-in
    without one, as tests register, its ``run`` of the group)."""
    backend = BACKENDS[name]
    prepare_group = getattr(backend, "prepare", None)
    if prepare_group is None:
        return functools.partial(backend.run, weights, sorted_inits)
    return prepare_group(weights, sorted_inits)
