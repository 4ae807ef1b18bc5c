"""Backends: one small module each, answering the same three questions.

* ``is_available()`` / ``unavailable_reason()``: can it run in this process at all?
* ``supports(device, dtype)``: can it run tensors of this kind?
* ``run(weights, sorted_inits)``: rank-match a validated group (contiguous tensors of one
  device and dtype, no aliasing) in place.

Backends never validate and never know about each other; ``laperm_kernels.ops`` does both.
A new backend is a module here and one line in ``BACKENDS`` and ``AUTO_ORDER``.
"""

from __future__ import annotations

from typing import Dict, List

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
