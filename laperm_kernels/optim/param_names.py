"""How LaPerm's errors and warnings name a parameter: by its name from
``model.named_parameters()`` where the param group lists them (``"param_names"``, which
``laperm_kernels.param_groups`` and ``torch.optim`` given named parameters write), else
by its place in the param groups."""

from __future__ import annotations

from typing import Any, Dict, List

import torch


def label(groups: List[Dict[str, Any]], group_index: int, index: int) -> str:
    """Parameter ``index`` of param group ``group_index``, named."""
    names = groups[group_index].get("param_names")
    if isinstance(names, (list, tuple)) and index < len(names):
        return f"parameter {names[index]!r}"
    return f"parameter {index} of param group {group_index}"


def label_of(groups: List[Dict[str, Any]], p: torch.Tensor) -> str:
    """:func:`label` of parameter ``p``, found by identity."""
    for gi, group in enumerate(groups):
        for j, q in enumerate(group["params"]):
            if q is p:
                return label(groups, gi, j)
    return "a parameter of no param group"


def labels(groups: List[Dict[str, Any]]) -> Dict[int, str]:
    """``{id(parameter): label}`` for every parameter of ``groups``."""
    return {
        id(p): label(groups, gi, j)
        for gi, group in enumerate(groups)
        for j, p in enumerate(group["params"])
    }
