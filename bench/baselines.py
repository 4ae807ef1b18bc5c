"""Naive ways to rank-match, for the benchmark to measure the kernels against.

Each takes lists of contiguous tensors (rows = reshape(shape[0], -1)) and works layer by
layer, as a user without this package would. The "torch" backend itself (one stable sort
and one scatter per tensor) is the reference baseline.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch

from laperm_kernels.ops.reference import as_rows, order_keys

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


def numpy_sort_int64(weights: List[torch.Tensor], sorted_inits: List[torch.Tensor]) -> None:
    """Not rank matching: np.sort of the rows pre-packed as int64 keys, the order key
    (reference.order_keys) above the column, so one sort gives the stable order. A SIMD
    sort alone, no scatter: a floor for any sort-based method; nothing is checked."""
    for keys in _packed_keys(weights, "int64"):
        np.sort(keys, axis=1)


def numpy_sort_int32(weights: List[torch.Tensor], sorted_inits: List[torch.Tensor]) -> None:
    """Not rank matching: np.sort of the rows' int32 order keys alone (ties unbroken, so
    not the stable order). The lower floor: a sort of 4-byte keys, no scatter."""
    for keys in _packed_keys(weights, "int32"):
        np.sort(keys, axis=1)


_PACKED_CACHE: Dict[tuple, "np.ndarray"] = {}


def _packed_keys(weights: List[torch.Tensor], kind: str):
    # Built once per tensor and excluded from the timing: only the sort is measured.
    for w in weights:
        key = (id(w), kind)
        if key not in _PACKED_CACHE:
            order = order_keys(as_rows(w).float()).numpy()  # int32, float order
            if kind == "int32":
                _PACKED_CACHE[key] = order.copy()
            else:
                columns = np.arange(order.shape[1], dtype=np.int64)
                _PACKED_CACHE[key] = (order.astype(np.int64) << 32) | columns
        yield _PACKED_CACHE[key]


def prepare_sort_keys(weights: List[torch.Tensor]) -> None:
    """Packs the keys of the numpy-sort-* floors ahead of timing."""
    _PACKED_CACHE.clear()
    for kind in ("int64", "int32"):
        for _ in _packed_keys(weights, kind):
            pass


# name -> (function, whether it yields a rank-matching result, which must then equal the
# reference, and the dtypes it handles: NumPy has no bfloat16)
BASELINES: Dict[str, "tuple[Baseline, bool, tuple]"] = {
    "tf-two-argsorts": (
        tf_two_argsorts,
        True,
        (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    ),
}
if np is not None:
    BASELINES["numpy-argsort"] = (
        numpy_argsort,
        True,
        (torch.float32, torch.float64, torch.float16),
    )
    # The floors: sorts alone, of the same rows' keys (the table also gives them as ratios).
    BASELINES["numpy-sort-int64"] = (numpy_sort_int64, False, (torch.float32,))
    BASELINES["numpy-sort-int32"] = (numpy_sort_int32, False, (torch.float32,))


# The floors the benchmark prints the kernels against.
FLOORS = ("numpy-sort-int64", "numpy-sort-int32")


def numpy_version() -> Optional[str]:
    return None if np is None else np.__version__
