"""LaPerm's argument checks: the wrapper's arguments, its param groups and their
parameters, each refused before anything changes, with the parameter named."""

from __future__ import annotations

from typing import Any, Dict

import torch

from ..ops.memory_spans import first_shared
from .layouts import check_placements, local_tensor
from .param_names import label, label_of


def is_period(k) -> bool:
    return isinstance(k, int) and not isinstance(k, bool) and k >= 1


def check_sync_period(value, name: str) -> None:
    if not (callable(value) or is_period(value)):
        raise ValueError(f"{name} must be an int >= 1 or a callable step -> k; got {value!r}")


def check_permute(value, name: str) -> None:
    if callable(value) or isinstance(value, bool) or value == "auto":
        return
    raise ValueError(
        f"{name} must be 'auto', True, False or a callable param -> bool; got {value!r}"
    )


def check_ranks_arg(value) -> None:
    if isinstance(value, bool):
        return
    import torch.distributed as dist

    if dist.is_available() and isinstance(value, dist.ProcessGroup):
        return
    raise TypeError(
        f"check_ranks must be True, False or a torch.distributed ProcessGroup; got {value!r}"
    )


def tensors(params) -> list:
    """The tensors of a param group's ``params`` (``(name, tensor)`` pairs allowed)."""
    return [q[1] if isinstance(q, tuple) and len(q) == 2 else q for q in params]


def listed(group: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a group for ``add_param_group``'s checks: ``params`` as a list of
    tensors and names from ``(name, tensor)`` pairs, as torch.optim will read them."""
    params = group["params"]
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    named = [q for q in params if isinstance(q, tuple) and len(q) == 2]
    out = {**group, "params": tensors(params)}
    if named and len(named) == len(params):
        out["param_names"] = [n for n, _ in named]
    return out


def check_group(group: Dict[str, Any], index: int, groups, wanted: Dict[int, bool]) -> None:
    """Refuses bad ``sync_period`` and ``permute`` keys, and a permuted parameter listed
    twice (a sync would rank-match it twice; torch.optim only warns of a parameter listed
    twice, and steps it twice: that one is left to it)."""
    if "sync_period" in group:
        check_sync_period(group["sync_period"], "param group 'sync_period'")
    if "permute" in group:
        check_permute(group["permute"], "param group 'permute'")
    first: Dict[int, int] = {}
    for j, p in enumerate(tensors(group["params"])):
        if id(p) in first and wanted.get(id(p)):
            raise ValueError(
                f"LaPerm: param group {index} lists "
                f"{label(groups, index, first[id(p)])} twice (at {first[id(p)]} "
                f"and {j}); list every permuted parameter once"
            )
        first.setdefault(id(p), j)


def check_groups(groups, wanted, first: int = 0) -> None:
    """:func:`check_group` and :func:`check_params` for ``groups[first:]``, then no
    overlap between the permuted parameters of all ``groups``."""
    for i in range(first, len(groups)):
        check_group(groups[i], i, groups, wanted)
        check_params(groups[i], i, groups, wanted)
    check_no_overlap(groups, wanted)


def check_params(group, index: int, groups, wanted) -> None:
    """Refuses, before anything changes, permuted parameters that ``row_dim`` does not
    fit or that are DTensors placed other than sharded or replicated."""
    row_dim = group.get("row_dim", 0)
    for j, p in enumerate(tensors(group["params"])):
        if wanted.get(id(p)):
            if not -p.dim() <= row_dim < p.dim():
                raise ValueError(
                    f"param group 'row_dim' is {row_dim}, but "
                    f"{label(groups, index, j)} has shape {tuple(p.shape)}"
                )
            check_placements(p, label(groups, index, j))


def check_no_overlap(groups, wanted) -> None:
    """Refuses permuted parameters whose memory overlaps another's (a sync would
    permute it twice), naming both."""
    shared = first_shared(
        (local_tensor(p), label(groups, gi, j), True)
        for gi, g in enumerate(groups)
        for j, p in enumerate(tensors(g["params"]))
        if wanted.get(id(p))
    )
    if shared is not None:
        raise ValueError(
            f"LaPerm: {shared[0]} and {shared[1]} share memory; permuted "
            "parameters must be distinct tensors"
        )


def check_layout(pairs, sorted_inits, groups) -> None:
    """Refuses, before anything changes, parameters cast or moved after S was taken
    (``model.half()``, ``model.to(device)``): S no longer fits them."""
    for p, _ in pairs:
        s = sorted_inits[p]
        if s.dtype != p.dtype or s.device != p.device:
            raise ValueError(
                f"LaPerm: {label_of(groups, p)} is now {p.dtype} on "
                f"{p.device}, but its "
                f"sorted initial rows are {s.dtype} on {s.device}: the model was cast "
                "or moved after LaPerm was built. Cast or move the model before "
                "building the optimizer, or call opt.load_state_dict(opt.state_dict()) "
                "to bring LaPerm's and the inner optimizer's state to the parameters' "
                "dtype and device"
            )


def period(rule, step: int) -> int:
    """k at ``step`` for a ``sync_period`` rule (an int or a callable ``step -> k``)."""
    k = rule(step) if callable(rule) else rule
    if not is_period(k):
        raise ValueError(f"sync_period must give an int >= 1; got {k!r} at step {step}")
    return k


def wants(p: torch.Tensor, rule) -> bool:
    """Whether the ``permute`` rule permutes ``p``."""
    if callable(rule):
        return bool(rule(p))
    if rule == "auto":
        return p.dim() >= 2
    return bool(rule) and p.dim() >= 1
