"""The paper's initialisations, applied before LaPerm takes its sorted initial weights.

LaPerm can only move values, so whatever the weights start with is what they keep:
    random_prune_(model, 0.5)         # Section 5.4: sparse init, half the weights zero
    agnosticize_(model, 0.05, p=0.5)  # Section 5.5: weights in {0, 0.05}
    opt = LaPerm(torch.optim.Adam(model.parameters()), sync_period=20)

Both act in place on the tensors LaPerm permutes by default (ndim >= 2: Linear and Conv
weights) when given a module, or on exactly the tensors given.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Union

import torch
from torch import nn

Params = Union[nn.Module, Iterable[torch.Tensor]]


def permutable_tensors(module_or_params: Params) -> List[torch.Tensor]:
    """A module's weights LaPerm permutes by default (ndim >= 2), or the tensors given."""
    if isinstance(module_or_params, nn.Module):
        return [p for p in module_or_params.parameters() if p.dim() >= 2]
    # A tensor is iterable (over its rows): take it whole.
    if isinstance(module_or_params, torch.Tensor):
        return [module_or_params]
    tensors = list(module_or_params)
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return tensors


def _check_fraction(p, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1]; got {p!r}")
    return float(p)


@torch.no_grad()
def _zero_fraction_(t: torch.Tensor, p: float, generator: Optional[torch.Generator]) -> None:
    """Zeroes exactly round(p * numel) elements of ``t``, chosen uniformly at random."""
    k = round(p * t.numel())
    if k:
        mask = torch.zeros(t.numel(), dtype=torch.bool)
        mask[torch.randperm(t.numel(), generator=generator)[:k]] = True
        t.masked_fill_(mask.view(t.shape).to(t.device), 0)


@torch.no_grad()
def random_prune_(
    module_or_params: Params, p: float, generator: Optional[torch.Generator] = None
) -> List[torch.Tensor]:
    """Sets exactly ``round(p * numel)`` weights of each tensor, chosen uniformly at
    random, to zero (the paper's sparse initialisation). Returns the tensors."""
    p = _check_fraction(p, "p")
    tensors = permutable_tensors(module_or_params)
    for t in tensors:
        _zero_fraction_(t, p, generator)
    return tensors


@torch.no_grad()
def agnosticize_(
    module_or_params: Params,
    value: Union[float, Callable[[torch.Tensor], float]],
    p: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> List[torch.Tensor]:
    """Weight-agnostic initialisation: every weight of each tensor becomes one shared
    ``value`` (a float, or ``tensor -> float`` for a per-layer scale), then a fraction
    ``p`` of them, chosen at random, becomes zero: each tensor holds only {0, value}.
    Returns the tensors."""
    p = _check_fraction(p, "p")
    tensors = permutable_tensors(module_or_params)
    for t in tensors:
        v = value(t) if callable(value) else value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"value must be a number or a callable returning one; got {v!r}")
        t.fill_(float(v))
        _zero_fraction_(t, p, generator)
    return tensors
