"""LaPerm's state dict, in torch.optim's layout.

    {"state": {index: {...inner state..., "sorted_init": S}},
     "param_groups": [{...inner group..., "laperm_step": step,
                       "laperm_shapes": [shape of each parameter],
                       "laperm_inner": "torch.optim.adam.Adam"}]}

The inner optimizer's state dict with LaPerm's additions merged in, as timm's Lookahead
keeps its slow weights in its base optimizer's state: every permuted parameter's sorted
initial rows S beside its inner state; in every param group, the step counter (by which
syncs are scheduled), the shapes of its parameters (so that a checkpoint of another
model is refused, whatever its inner state holds) and the inner optimizer's class (so
that a checkpoint of ``LaPerm(Adam)`` is refused by ``LaPerm(SGD)``, whose next step
would miss Adam's state). Group keys, not top-level ones: torch.distributed.checkpoint's
``get_optimizer_state_dict`` keeps only ``state`` and ``param_groups``. So ``torch.save``,
``torch.distributed.checkpoint`` (``get/set_optimizer_state_dict``, ``dcp.save/load``),
Hugging Face and Lightning handle it like any optimizer's. S of a DTensor parameter is a
DTensor on its mesh, in the parameter's whole-row placements (laperm_kernels/optim/layouts.py):
a distributed checkpoint saves every shard and reshards on load, onto another world size
too; an S saved in other placements is redistributed to these on load.

:func:`unpack` checks everything before anything changes, and reads the layout of
earlier versions (``{"inner": ..., "laperm": {...}}``) too. :func:`is_inner_only` tells a
state dict of the inner optimizer alone (a run resumed under LaPerm), which LaPerm loads
into its inner optimizer, taking S from the current weights.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Dict, List, Tuple

import torch

from .layouts import like_param, local_tensor, rows_shape, s_placements
from .param_names import label

SORTED_INIT = "sorted_init"
STEP = "laperm_step"
SHAPES = "laperm_shapes"
INNER = "laperm_inner"
_KEYS = (STEP, SHAPES, INNER)


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def pack(
    inner: Dict[str, Any],
    groups: List[Dict[str, Any]],
    sorted_inits: Dict[torch.Tensor, torch.Tensor],
    step: int,
    inner_class: type,
) -> Dict[str, Any]:
    """``inner`` (the state dict of the inner optimizer, an ``inner_class``, for param
    groups ``groups``) with LaPerm's state merged in. ``inner``'s per-parameter dicts are
    the inner optimizer's own: they are copied, never changed."""
    state = dict(inner["state"])
    for i, p in enumerate(p for g in groups for p in g["params"]):
        if p in sorted_inits:
            state[i] = {**state.get(i, {}), SORTED_INIT: sorted_inits[p]}
    return {
        **inner,
        "state": state,
        "param_groups": [
            {
                **saved,
                STEP: step,
                SHAPES: [list(p.shape) for p in g["params"]],
                INNER: class_name(inner_class),
            }
            for saved, g in zip(inner["param_groups"], groups)
        ],
    }


def is_inner_only(state_dict: Any) -> bool:
    """Whether ``state_dict`` is a torch.optim state dict without any of LaPerm's keys: no
    group holds ``laperm_step``, ``laperm_shapes`` or ``laperm_inner``, no parameter's
    state a ``sorted_init`` (one that holds some of them is a damaged LaPerm one)."""
    if not (
        isinstance(state_dict, dict)
        and isinstance(state_dict.get("state"), dict)
        and isinstance(state_dict.get("param_groups"), list)
    ):
        return False
    ours_in_groups = any(
        isinstance(g, dict) and any(k in g for k in _KEYS) for g in state_dict["param_groups"]
    )
    ours_in_state = any(
        isinstance(e, dict) and SORTED_INIT in e for e in state_dict["state"].values()
    )
    return not (ours_in_groups or ours_in_state)


def unpack(
    state_dict: Any, groups: List[Dict[str, Any]], inner_class: type
) -> Tuple[Dict[str, Any], int, Dict[torch.Tensor, torch.Tensor]]:
    """(the inner optimizer's state dict, the step counter, {parameter: S}) of a state dict
    from :func:`pack` for an optimizer with param groups ``groups`` around an
    ``inner_class``. S comes back as the parameter holds it (device, dtype, DTensor
    placement). Raises ValueError or TypeError, naming what is wrong, for anything that
    does not fit these parameters; checkpoints written before the inner class was
    recorded are not checked for it."""
    if isinstance(state_dict, dict) and set(state_dict) == {"inner", "laperm"}:
        state_dict = _from_earlier_layout(state_dict, groups)
    if not (
        isinstance(state_dict, dict)
        and isinstance(state_dict.get("state"), dict)
        and isinstance(state_dict.get("param_groups"), list)
    ):
        raise ValueError(
            "LaPerm.load_state_dict expects a dict from LaPerm.state_dict(), with "
            "'state' (a dict) and 'param_groups' (a list)"
        )
    saved_groups = state_dict["param_groups"]
    want = class_name(inner_class)
    saved_classes = {str(g[INNER]) for g in saved_groups if isinstance(g, dict) and INNER in g}
    if saved_classes and saved_classes != {want}:
        raise ValueError(
            f"the checkpoint is of LaPerm({', '.join(sorted(saved_classes))}), "
            f"but this LaPerm wraps {want}: the inner optimizers' states do "
            "not fit each other"
        )
    if len(saved_groups) != len(groups):
        raise ValueError(
            f"the checkpoint has {len(saved_groups)} param groups, this optimizer has {len(groups)}"
        )
    for i, (saved, group) in enumerate(zip(saved_groups, groups)):
        if not isinstance(saved, dict) or not isinstance(saved.get("params"), list):
            raise ValueError(f"the checkpoint's param group {i} is not a dict with a 'params' list")
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(
                f"the checkpoint's param group {i} has {len(saved['params'])} "
                f"parameters, this optimizer's has {len(group['params'])}"
            )
        shapes = [list(p.shape) for p in group["params"]]
        saved_shapes = saved.get(SHAPES)
        if not isinstance(saved_shapes, list) or len(saved_shapes) != len(shapes):
            raise ValueError(
                f"the checkpoint's param group {i} has no '{SHAPES}' list of "
                "its parameters' shapes (LaPerm.state_dict() writes it)"
            )
        for j, (a, b) in enumerate(zip(saved_shapes, shapes)):
            if list(a) != b:
                raise ValueError(
                    f"the checkpoint's {label(groups, i, j)} has shape "
                    f"{tuple(a)} but this optimizer's has {tuple(b)}"
                )
    steps = {g.get(STEP) for g in saved_groups}
    step = steps.pop() if len(steps) == 1 else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(
            f"the checkpoint's param groups must each hold the same "
            f"'{STEP}' (an int >= 0; LaPerm.state_dict() writes it); got "
            f"{sorted(map(repr, {g.get(STEP) for g in saved_groups}))}"
        )

    where = {
        key: (p, group, _what(key, groups, gi, j))
        for key, (p, group, gi, j) in zip(
            chain.from_iterable(g["params"] for g in saved_groups),
            ((p, g, gi, j) for gi, g in enumerate(groups) for j, p in enumerate(g["params"])),
        )
    }
    inner_state, sorted_inits = {}, {}
    for key, entry in state_dict["state"].items():
        if key not in where:
            raise ValueError(
                f"the checkpoint has state for parameter {key!r}, which none "
                "of its param groups lists"
            )
        if not isinstance(entry, dict):
            raise ValueError(
                f"the checkpoint's state for parameter {key!r} is a "
                f"{type(entry).__name__}, not a dict"
            )
        entry = dict(entry)
        if SORTED_INIT in entry:
            p, group, what = where[key]
            sorted_inits[p] = _restore(entry.pop(SORTED_INIT), p, group.get("row_dim", 0), what)
        if entry:
            inner_state[key] = entry
    inner = {
        **state_dict,
        "state": inner_state,
        "param_groups": [{k: v for k, v in g.items() if k not in _KEYS} for g in saved_groups],
    }
    return inner, step, sorted_inits


def _what(key, groups, group_index: int, index: int) -> str:
    """How errors name the checkpoint's parameter ``key``: ``parameter 'fc.weight'``
    (a name key, as torch.distributed.checkpoint writes, or a group with
    ``param_names``), else ``parameter 3``."""
    if isinstance(key, str):
        return f"parameter {key!r}"
    if groups[group_index].get("param_names"):
        return label(groups, group_index, index)
    return f"parameter {key!r}"


def _restore(s: Any, p: torch.Tensor, row_dim: int, what: str) -> torch.Tensor:
    """Saved S checked against parameter ``p`` (named ``what``) and made like a fresh one:
    a DTensor parameter's S in its whole-row placements, whatever the placements saved."""
    if not isinstance(s, torch.Tensor):
        raise TypeError(
            f"the checkpoint's sorted_init of {what} is a {type(s).__name__}, not a tensor"
        )
    if not s.is_floating_point():
        raise TypeError(
            f"the checkpoint's sorted_init of {what} has dtype {s.dtype}, not a floating dtype"
        )
    want = rows_shape(tuple(p.shape), row_dim)
    local = local_tensor(p)
    if getattr(p, "placements", None) is None:
        if getattr(s, "placements", None) is not None or tuple(s.shape) != want:
            raise ValueError(
                f"the checkpoint's sorted_init of {what} is a "
                f"{type(s).__name__} of shape {tuple(s.shape)}, but the "
                f"parameter is a tensor whose rows have shape {want}"
            )
        return s.to(device=local.device, dtype=local.dtype).contiguous()
    return _restore_distributed(s, p, row_dim, want, local, what)


def _restore_distributed(s, p, row_dim: int, want, local, what: str) -> torch.Tensor:
    """:func:`_restore` for a DTensor parameter ``p``: S as a DTensor placed
    ``s_placements(p)``, from a DTensor on its mesh in any placements (redistributed),
    a whole tensor (this rank's part taken), or, as the earlier layout saved it, this
    rank's part."""
    from torch.distributed.tensor import distribute_tensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    placements = s_placements(p, row_dim)
    local_want, _ = compute_local_shape_and_global_offset(want, p.device_mesh, placements)
    if getattr(s, "placements", None) is not None:  # a DTensor: its shape is the whole's
        if tuple(s.shape) != want:
            raise ValueError(
                f"the checkpoint's sorted_init of {what} is a DTensor of "
                f"shape {tuple(s.shape)}, but the parameter's rows have "
                f"shape {want}"
            )
        if s.device_mesh != p.device_mesh:
            raise ValueError(
                f"the checkpoint's sorted_init of {what} is a DTensor on "
                f"{s.device_mesh}, but the parameter is on {p.device_mesh}"
            )
        if tuple(s.placements) != placements:
            s = s.redistribute(s.device_mesh, placements)
        rows = s.to_local()
    elif tuple(s.shape) == want:  # a whole S: this rank's part, no communication
        rows = distribute_tensor(
            s.to(device=local.device), p.device_mesh, placements, src_data_rank=None
        ).to_local()
    elif tuple(s.shape) == tuple(local_want):
        rows = s
    else:
        raise ValueError(
            f"the checkpoint's sorted_init of {what} has shape "
            f"{tuple(s.shape)}, but the parameter's rows have shape {want} "
            f"({tuple(local_want)} on this rank)"
        )
    if tuple(rows.shape) != tuple(local_want):  # what this rank's rows must be
        raise ValueError(
            f"the checkpoint's sorted_init of {what} gives this rank rows of "
            f"shape {tuple(rows.shape)}, but its part of the parameter's rows "
            f"has shape {tuple(local_want)}"
        )
    return like_param(rows.to(device=local.device, dtype=local.dtype).contiguous(), p, row_dim)


def _from_earlier_layout(state_dict: Dict[str, Any], groups) -> Dict[str, Any]:
    """``{"inner": ..., "laperm": {"step", "sorted_inits", "param_shapes"}}`` (versions
    before 0.2) in today's layout, after the checks that layout allowed."""
    inner, laperm = state_dict["inner"], state_dict["laperm"]
    if (
        not isinstance(inner, dict)
        or not isinstance(laperm, dict)
        or set(laperm) != {"step", "sorted_inits", "param_shapes"}
        or not isinstance(laperm["sorted_inits"], dict)
        or not isinstance(inner.get("state"), dict)
        or not isinstance(inner.get("param_groups"), list)
    ):
        raise ValueError(
            "LaPerm.load_state_dict: a checkpoint of the earlier layout needs "
            "'inner' (an optimizer state dict) and 'laperm' with keys 'step', "
            "'sorted_inits' and 'param_shapes'"
        )
    params = [p for g in groups for p in g["params"]]
    # that layout recorded each rank's shapes (a DTensor's local tensor)
    shapes = [tuple(p.to_local().shape if hasattr(p, "placements") else p.shape) for p in params]
    saved = [tuple(s) for s in laperm["param_shapes"]]
    if saved != shapes:
        diff = next((i for i, (a, b) in enumerate(zip(saved, shapes)) if a != b), None)
        raise ValueError(
            f"checkpoint is of {len(saved)} parameters, this optimizer has {len(shapes)}"
            if diff is None
            else f"checkpoint's parameter {diff} has shape {saved[diff]} "
            f"but this optimizer's has {shapes[diff]}"
        )
    state = {k: dict(v) if isinstance(v, dict) else v for k, v in inner["state"].items()}
    for i, s in laperm["sorted_inits"].items():
        if not (isinstance(i, int) and 0 <= i < len(params)):
            raise ValueError(
                f"checkpoint has sorted_inits for parameter {i!r}, but the "
                f"optimizer has {len(params)} parameters"
            )
        state.setdefault(i, {})[SORTED_INIT] = s
    groups_shapes = [[list(p.shape) for p in g["params"]] for g in groups]
    return {
        **inner,
        "state": state,
        "param_groups": [
            {**g, STEP: laperm["step"], SHAPES: shapes} if isinstance(g, dict) else g
            for g, shapes in zip(inner["param_groups"], groups_shapes)
        ],
    }
