"""What LaPerm checks at its first step, before the inner step writes anything.

S is taken from the weights when LaPerm is built. A permuted weight changed in place
after that and before the first step, without the optimizer, no longer matches S: DDP's
broadcast of rank 0's weights when LaPerm was built before ``DDP(model)`` (every other
rank's S then comes from its own initialisation, and the ranks diverge at the first
sync), a re-initialisation, weights loaded into the model. LaPerm keeps an exact
:func:`fingerprint` of each weight when it takes S, compares it at the first step, and
takes S again from the weights as they are then (with a warning naming them).

Across ranks (when torch.distributed is initialised), one ``all_gather_object`` at the
first step exchanges whether any rank saw such a change (then every rank takes S again,
so that collectives stay paired) and the fingerprints of the plain-tensor weights: ranks
that would start from different weights, hence different S, get a ValueError naming the
parameter instead of a silent divergence. DTensor weights are left out of that
comparison (their shards differ by design). Meta tensors hold no values: they are left
out (:func:`has_values`), as a sync leaves them (sync_plan.py).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

_CHUNK = 1 << 20  # int16 words per step: bounds the transient int64 copies to 16 MiB
_PERIOD = 65521  # position weights cycle through 1..65521 (a prime)


def has_values(t: torch.Tensor) -> bool:
    """Whether ``t`` holds values to compare (a meta tensor has only a shape)."""
    return t.device.type != "meta"


@torch.no_grad()
def fingerprint(t: torch.Tensor) -> torch.Tensor:
    """An exact integer fingerprint of ``t``'s bit patterns, position-weighted (a 0-d
    int64 tensor on ``t``'s device): the sum of every 16-bit word ``k_i`` of the flat
    tensor times ``(i mod 65521) + 1``. Equal tensors give equal fingerprints on every
    thread count; a changed tensor gives another one except by coincidence."""
    flat = t.detach().reshape(-1)
    total = torch.zeros((), dtype=torch.int64, device=t.device)
    if flat.numel() == 0:
        return total
    words = flat.contiguous().view(torch.int16)
    for start in range(0, words.numel(), _CHUNK):
        k = words[start : start + _CHUNK].to(torch.int64)
        w = torch.arange(start, start + k.numel(), dtype=torch.int64, device=t.device)
        total += (k * w.remainder_(_PERIOD).add_(1)).sum()
    return total


def exchange(group, changed: bool, plain_fingerprints: List[int]) -> List[tuple]:
    """Every rank's ``(changed, plain_fingerprints)``, in the group's rank order."""
    import torch.distributed as dist

    gathered: List[Optional[tuple]] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, (changed, plain_fingerprints), group=group)
    return gathered  # type: ignore[return-value]


def first_disagreement(gathered: Sequence[tuple], names: Sequence[str]) -> Optional[str]:
    """Why the ranks' plain-tensor weights differ (None when they agree)."""
    counts = {len(fps) for _, fps in gathered}
    if len(counts) > 1:
        return (
            f"the ranks permute different numbers of plain-tensor parameters "
            f"({[len(fps) for _, fps in gathered]} by rank)"
        )
    for j, name in enumerate(names):
        values = [fps[j] for _, fps in gathered]
        if len(set(values)) > 1:
            other = next(r for r, v in enumerate(values) if v != values[0])
            return f"{name} differs between rank 0 and rank {other} of the process group"
    return None
