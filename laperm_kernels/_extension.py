"""Loads the compiled extension (laperm_kernels._C) once, remembering why it failed if so.

Importing it registers the ``torch.ops.laperm`` operators and their CPU (and, in a CUDA
build, CUDA) kernels, and the test-only and inspection operators of
``torch.ops.laperm_testing``; their fake kernels are in ``ops/_meta_registrations.py``.
The package still works without it, on the PyTorch reference.
"""

from __future__ import annotations

import collections
import importlib
from typing import Optional

import torch  # noqa: F401  (first: _C links against libtorch/libc10, which importing torch loads)

_load_error: Optional[str] = None

try:
    # the compiled module laperm_kernels._C: importing it registers torch.ops.laperm.*
    # and torch.ops.laperm_testing.*
    _C = importlib.import_module(f"{__package__}._C")
except ImportError as exc:  # not built, or built against another torch
    _load_error = f"{type(exc).__name__}: {exc}"


def is_loaded() -> bool:
    return _load_error is None


def library_path() -> Optional[str]:
    """The compiled extension's file, or None when it did not load."""
    return _C.__file__ if _load_error is None else None


def load_error() -> Optional[str]:
    """Why the extension is unavailable, or None when it loaded."""
    return _load_error


def named_results(op, type_name: str):
    """``op()``'s results in a named tuple whose fields are the return names in its
    schema: how Python reads the constants the C++ sources define (lists become tuples)."""
    names = [r.name for r in op._schema.returns]
    values = [tuple(v) if isinstance(v, list) else v for v in op()]
    return collections.namedtuple(type_name, names)(*values)
