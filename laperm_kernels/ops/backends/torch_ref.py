"""The ``"torch"`` backend: the reference, tensor by tensor. Runs on any device."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch

from ..reference import rank_match_reference_

name = "torch"


def is_available() -> bool:
    return True


def unavailable_reason() -> str:
    return ""


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    return True


def prepare(
    weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]
) -> Callable[[], None]:
    """Nothing to prepare: no plan, nothing compiled (the reference's temporaries are
    allocated tensor by tensor as it runs)."""
    return functools.partial(run, weights, sorted_inits)


def run(weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]) -> None:
    for w, s in zip(weights, sorted_inits):
        rank_match_reference_(w, s)
