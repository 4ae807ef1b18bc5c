"""The public operators: validation once, then dispatch to one backend per group.

Everything a call could reject is checked before any tensor is touched, so an error
never leaves a model half-permuted. Then tensors are grouped by (device, dtype) and each
group goes to one backend in a single call (one native call for the C++ kernel): the one
asked for, or under ``backend="auto"`` the one ``laperm_kernels.ops.dispatch`` has proven
fastest and bit-identical on such a group (its first call holds the trial).

Non-contiguous weights (say channels_last convolutions) are handled exactly: the rows are
always the logical ``reshape(shape[0], -1)`` rows, rank-matched in a contiguous buffer
(laperm_kernels/ops/staging.py) that is then copied back. Weights whose elements overlap one
another (``expand``) cannot be permuted in place and are refused, as are weights sharing
memory with any other tensor of the call.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Hashable, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .. import _extension
from . import backends as _backends
from . import dispatch as _dispatch
from .max_abs import MaxAbs, max_abs_of
from .memory_spans import first_shared
from .reference import SUPPORTED_DTYPES, SUPPORTED_DTYPES_TEXT, sort_rows_reference
from .staging import contiguous_buffer


def available_backends(device: "torch.device | str | None" = None) -> List[str]:
    """Backends usable in this process (for ``device``'s type, if given), fastest first."""
    if device is None:
        names = list(dict.fromkeys(n for order in _backends.AUTO_ORDER.values() for n in order))
        return [n for n in names if _backends.BACKENDS[n].is_available()]
    dev = torch.device(device)
    return [
        n
        for n in _backends.AUTO_ORDER.get(dev.type, ["torch"])
        if _backends.BACKENDS[n].is_available()
    ]


def rank_match_(
    weight: torch.Tensor, sorted_init: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Permutes ``weight`` in place so that each row holds ``sorted_init``'s row, in the
    order of ``weight``'s ranks: ``W[r, order(W[r])[i]] = S[r, i]``. Returns ``weight``.

    Rows are ``weight.reshape(weight.shape[0], -1)`` (a 1-D tensor is one row), ordered
    ascending, ties by column, NaN last, -0.0 == +0.0 (docs/contract.md). ``sorted_init`` has
    ``weight``'s shape, dtype and device; make it with :func:`sort_rows`.
    """
    rank_match_many_([weight], [sorted_init], backend=backend, _names=("weight", "sorted_init"))
    return weight


@torch.compiler.disable  # validation reads addresses and strides: run eagerly, never traced
def rank_match_many_(
    weights: Sequence[torch.Tensor],
    sorted_inits: Sequence[torch.Tensor],
    *,
    backend: str = "auto",
    _names: Tuple[str, str] = ("weights", "sorted_inits"),
) -> None:
    """:func:`rank_match_` for a whole model's tensors in one call, in place.

    Tensors are grouped by (device, dtype); each group is one backend call (one parallel
    native call over all rows of all its tensors for the C++ backend).
    """
    rank_match_groups_(weights, sorted_inits, backend, _names)


class CallResult(NamedTuple):
    """What a call did."""

    # the backend that ran each (device, dtype) group, in order of first appearance
    # (under "auto": the one chosen for the next calls, also after a trial)
    used: List[Tuple[torch.device, torch.dtype, str]]
    # with max_abs=True: max |x| of every weight before the call, per group; else None
    max_abs: Optional[List[MaxAbs]]
    # whether it ran in one native call (prepared_call.PreparedCall's C++ path)
    native: bool = False


def rank_match_groups_(
    weights,
    sorted_inits,
    backend: str = "auto",
    _names: Tuple[str, str] = ("weights", "sorted_inits"),
    *,
    max_abs: bool = False,
) -> CallResult:
    """The one runner of a call: :func:`rank_match_many_`, saying what it did
    (:class:`CallResult`); with ``max_abs``, max |x| of each weight is taken before any is
    written. For callers already outside torch.compile's tracing (LaPerm's sync through
    prepared_call.py, tests, tools): it has no ``torch.compiler.disable`` boundary of its
    own."""
    check_backend_name(backend)
    with torch.no_grad():
        # the native check may run the C++ kernel at once: not when max |x| comes first
        ran, groups = _checked_groups(
            weights, sorted_inits, *_names, backend=None if max_abs else backend
        )
        if ran:  # the native check ran the C++ kernel: the CPU fast path
            return CallResult([(groups[0].device, groups[0].dtype, "cpu")], None)
        plan = [
            (
                g,
                _dispatch.decided(g.device, g.dtype, g.weights, g.shapes_key)
                if backend == "auto"
                else _check_explicit(backend, g.device, g.dtype),
            )
            for g in groups
        ]  # may raise: still nothing touched

        # Everything that can fail before a kernel runs (max |x|, staging buffers, launch
        # plans and their size limits, compilation, the kernels' device scratch; during CUDA
        # graph capture, anything an eager call should have made) is done for every group
        # before the first one is touched.
        parts = (
            [MaxAbs(g.device, g.positions, max_abs_of(g.weights)) for g in groups]
            if max_abs
            else None
        )
        staged = []
        for g, name in plan:
            if g.contiguous:
                work, inits = g.weights, g.sorted_inits
            else:
                work = [contiguous_buffer(w) for w in g.weights]
                inits = [contiguous_buffer(s) for s in g.sorted_inits]
            launch = None if name is None else _backends.prepare(name, work, inits)
            staged.append((g, name, work, inits, launch))

        used = []
        for g, name, work, inits, launch in staged:
            if not g.contiguous:
                for t, buffer in (*zip(g.weights, work), *zip(g.sorted_inits, inits)):
                    if buffer is not t:
                        buffer.copy_(t)
            if name is None:  # auto, first time for this signature
                name = _dispatch.trial(g.device, g.dtype, work, inits, g.shapes_key)
            else:
                launch()
            if not g.contiguous:
                for w, buffer in zip(g.weights, work):
                    if buffer is not w:
                        w.copy_(buffer)
            used.append((g.device, g.dtype, name))
    return CallResult(used, parts)


class _Group(NamedTuple):
    """The tensors of one (device, dtype) of a call, validated."""

    device: torch.device
    dtype: torch.dtype
    weights: List[torch.Tensor]
    sorted_inits: List[torch.Tensor]
    shapes_key: Hashable  # the weights' shapes, for dispatch.decided
    contiguous: bool  # every tensor of the call is: no staging needed
    positions: List[int]  # the pairs' places in the call's lists


def cpu_kernel_keys(backend: Optional[str]) -> Tuple[List[int], bool]:
    """``(cpu_keys, cpu_any)`` of the native calls that run the C++ kernel at once
    (laperm::check_call_, laperm.SyncCall): the shapes keys ``"auto"`` has decided for it,
    or any key when ``backend="cpu"`` was asked for (and can run); none for the others."""
    if backend == "auto":
        return list(_dispatch.cpu_keys()), False
    return [], backend == "cpu" and _backends.BACKENDS["cpu"].is_available()


def _native_check(weights, sorted_inits, cpu_keys=(), cpu_any=False):
    return torch.ops.laperm.check_call_.default(weights, sorted_inits, cpu_keys, cpu_any)


def _checked_groups(
    weights, sorted_inits, w_name: str, s_name: str, backend: Optional[str] = None
) -> Tuple[bool, List[_Group]]:
    """Whether the call already ran, and its groups in order of first appearance, once
    every input rule holds.

    One native call (laperm::check_call_, csrc/call_check.cpp) checks the rules and groups
    the tensors; when it finds the call invalid, or the extension is missing, the Python
    checks below run and raise the error that names the argument. A valid call that is one
    group of contiguous CPU tensors bound for the C++ kernel (``backend="cpu"``, or
    ``"auto"`` having decided it for these shapes) is run by that same native call."""
    if (
        _extension.is_loaded()
        and isinstance(weights, (list, tuple))
        and isinstance(sorted_inits, (list, tuple))
    ):
        try:
            valid, group_of, keys, contiguous, ran = _native_check(
                weights, sorted_inits, *cpu_kernel_keys(backend)
            )
        except torch.OutOfMemoryError:  # the fast path's scratch: nothing was written
            raise
        except (RuntimeError, TypeError, ValueError):
            # an element that is not a tensor, or the C++ kernel refused the call before
            # writing (row length): the path below raises the precise error
            valid = False
        if valid:
            if len(keys) == 1:
                ws, ss = list(weights), list(sorted_inits)
                everyone = list(range(len(ws)))
                return ran, [
                    _Group(ws[0].device, ws[0].dtype, ws, ss, keys[0], contiguous, everyone)
                ]
            members: List[Tuple[list, list, list]] = [([], [], []) for _ in keys]
            for i, (g, w, s) in enumerate(zip(group_of, weights, sorted_inits)):
                members[g][0].append(w)
                members[g][1].append(s)
                members[g][2].append(i)
            return False, [
                _Group(ws[0].device, ws[0].dtype, ws, ss, key, contiguous, at)
                for (ws, ss, at), key in zip(members, keys)
            ]

    weights, sorted_inits = _check_lists(weights, sorted_inits, w_name, s_name)
    labels = _labels(len(weights), w_name, s_name)
    for i, (w, s) in enumerate(zip(weights, sorted_inits)):
        _check_pair(w, s, *labels[i])
    _check_no_shared_memory(weights, sorted_inits, labels)
    by_kind: Dict[Tuple[torch.device, torch.dtype], Tuple[list, list, list]] = defaultdict(
        lambda: ([], [], [])
    )
    for i, (w, s) in enumerate(zip(weights, sorted_inits)):
        ws, ss, at = by_kind[(w.device, w.dtype)]
        ws.append(w)
        ss.append(s)
        at.append(i)
    return False, [
        _Group(device, dtype, ws, ss, tuple(tuple(w.shape) for w in ws), False, at)
        for (device, dtype), (ws, ss, at) in by_kind.items()
    ]


@torch.compiler.disable
def sort_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The ``sorted_init`` LaPerm keeps: every row of ``tensor`` ascending (same rules as
    :func:`rank_match_`), as a new contiguous tensor of ``tensor``'s shape."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"sort_rows: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    _check_dtype(tensor, "tensor")
    if tensor.dim() == 0:
        raise ValueError(
            "sort_rows: tensor is 0-d; rank matching needs ndim >= 1 "
            "(rows are reshape(shape[0], -1), a 1-D tensor is one row)"
        )
    with torch.no_grad():
        return sort_rows_reference(tensor.detach())


# --- validation -------------------------------------------------------------------------


def _check_lists(weights, sorted_inits, w_name, s_name):
    for value, name in ((weights, w_name), (sorted_inits, s_name)):
        if isinstance(value, torch.Tensor) or not isinstance(value, (list, tuple)):
            raise TypeError(
                f"rank_match_many_: {name} must be a list or tuple of tensors, "
                f"got {type(value).__name__}"
            )
    if len(weights) != len(sorted_inits):
        raise ValueError(
            f"rank_match_many_: got {len(weights)} {w_name} but "
            f"{len(sorted_inits)} {s_name}; they pair up one to one"
        )
    return list(weights), list(sorted_inits)


def _labels(n: int, w_name: str, s_name: str) -> List[Tuple[str, str]]:
    if w_name == "weight":  # the single-tensor API names its arguments plainly
        return [(w_name, s_name)]
    return [(f"{w_name}[{i}]", f"{s_name}[{i}]") for i in range(n)]


def _check_dtype(t: torch.Tensor, name: str) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} has dtype {t.dtype}; rank matching needs a floating dtype "
            f"({SUPPORTED_DTYPES_TEXT})"
        )


def _check_pair(w, s, w_name: str, s_name: str) -> None:
    for t, name in ((w, w_name), (s, s_name)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    _check_dtype(w, w_name)
    if s.dtype != w.dtype:
        raise TypeError(f"{s_name} has dtype {s.dtype} but {w_name} has {w.dtype}; they must match")
    if w.dim() == 0:
        raise ValueError(
            f"{w_name} is 0-d; rank matching needs ndim >= 1 "
            "(rows are reshape(shape[0], -1), a 1-D tensor is one row)"
        )
    if s.shape != w.shape:
        raise ValueError(
            f"{s_name} has shape {tuple(s.shape)} but {w_name} has "
            f"{tuple(w.shape)}; make it with laperm_kernels.sort_rows({w_name})"
        )
    if s.device != w.device:
        raise ValueError(
            f"{s_name} is on {s.device} but {w_name} is on {w.device}; "
            "they must be on the same device"
        )
    if _elements_overlap(w):
        raise ValueError(
            f"{w_name} has elements that share memory (e.g. made by expand()); "
            "it cannot be permuted in place: pass a tensor that owns its elements"
        )


def _elements_overlap(t: torch.Tensor) -> bool:
    """Whether two elements of ``t`` may share memory (the standard sufficient test:
    each stride, by increasing size, must step past everything the smaller ones span)."""
    if t.numel() == 0:
        return False
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1)
    span = 0
    for stride, size in dims:
        if stride <= span:
            return True
        span += stride * (size - 1)
    return False


def _check_no_shared_memory(weights, sorted_inits, labels) -> None:
    """No weight may share memory with any other tensor of the call (a duplicate weight
    would be permuted twice; a sorted_init aliasing a weight would be overwritten while
    it is read). sorted_inits may share memory with each other: they are only read."""
    shared = first_shared(
        (t, labels[i][k], k == 0)
        for i, pair in enumerate(zip(weights, sorted_inits))
        for k, t in enumerate(pair)
    )
    if shared is not None:
        raise ValueError(
            f"{shared[0]} and {shared[1]} share memory; every weight must be a "
            "distinct tensor that no other argument aliases"
        )


def check_backend_name(backend) -> None:
    """Raises unless ``backend`` is "auto" or the name of a backend (available or not)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend != "auto" and backend not in _backends.BACKENDS:
        raise ValueError(
            f"unknown backend {backend!r}; choose 'auto' or one of "
            f"{sorted(_backends.BACKENDS)} (available here: {available_backends()})"
        )


def _check_explicit(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """``backend`` if it can run this group; else an error saying why and what can."""
    impl = _backends.BACKENDS[backend]
    if impl.is_available() and impl.supports(device, dtype):
        return backend
    if not impl.is_available():
        raise RuntimeError(
            f"backend {backend!r} is not available: {impl.unavailable_reason()} "
            f"(available here: {available_backends()})"
        )
    raise ValueError(
        f"backend {backend!r} does not support {dtype} tensors on {device}; "
        f"backends for {device.type}: {available_backends(device)}"
    )
