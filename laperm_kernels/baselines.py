"""Naive ways to rank-match, for the benchmark to measure the kernels against.

Each takes lists of contiguous tensors (rows = reshape(shape[0], -1)) and works layer by
layer, as a user without this package would. The "torch" backend itself (one stable sort
and one scatter per tensor) is the reference baseline.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch

from .reference import as_rows

try:
    import numpy as np
except ImportError:  # numpy baselines are optional
    np = None

Baseline = Callable[[List[torch.Tensor], List[torch.Tensor]], None]


@torch.no_grad()
def tf_two_argsorts(weights: List[torch.Tensor], sorted_inits: List[torch.Tensor]) -> None:
    """The official TensorFlow algorithm, ported: W = gather(S, argsort(argsort(W)))."""
    for w, s in zip(weights, sorted_inits):
        rows = as_rows(w)
        ranks = rows.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
        rows.copy_(as_rows(s).gather(1, ranks))


def numpy_argsort(weights: List[torch.Tensor], sorted_inits: List[torch.Tensor]) -> None:
    """NumPy: a stable argsort (the contract's tie rule) and put_along_axis. CPU only."""
    for w, s in zip(weights, sorted_inits):
        rows = as_rows(w).numpy()
        order = np.argsort(rows, axis=1, kind="stable")
        np.put_along_axis(rows, order, as_rows(s).numpy(), axis=1)


def numpy_sort_keys(weights: List[torch.Tensor], sorted_inits: List[torch.Tensor]) -> None:
    """Not rank matching: np.sort of the rows pre-packed as int64 (bits << 32 | column)
    keys, a SIMD sort alone. A floor for any sort-based method; nothing is checked."""
    for keys in _packed_keys(weights):
        np.sort(keys, axis=1)


_PACKED_CACHE: Dict[int, "np.ndarray"] = {}


def _packed_keys(weights: List[torch.Tensor]):
    # Built once per tensor and excluded from the timing: only the sort is measured.
    for w in weights:
        key = id(w)
        if key not in _PACKED_CACHE:
            rows = as_rows(w).float().numpy()
            bits = rows.view(np.int32).astype(np.int64)
            _PACKED_CACHE[key] = (bits << 32) | np.arange(rows.shape[1], dtype=np.int64)
        yield _PACKED_CACHE[key]


def prepare_sort_keys(weights: List[torch.Tensor]) -> None:
    """Packs the keys for numpy_sort_keys ahead of timing."""
    _PACKED_CACHE.clear()
    for _ in _packed_keys(weights):
        pass


# name -> (function, whether it yields a rank-matching result, which must then equal the
# reference, and the dtypes it handles: NumPy has no bfloat16)
BASELINES: Dict[str, "tuple[Baseline, bool, tuple]"] = {
    "tf-two-argsorts": (tf_two_argsorts, True, (torch.float32, torch.float64, torch.float16,
                                                torch.bfloat16)),
}
if np is not None:
    BASELINES["numpy-argsort"] = (numpy_argsort, True,
                                  (torch.float32, torch.float64, torch.float16))
    BASELINES["numpy-sort-keys"] = (numpy_sort_keys, False, (torch.float32,))


def numpy_version() -> Optional[str]:
    return None if np is None else np.__version__
