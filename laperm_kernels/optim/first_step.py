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

import warnings
from typing import List, Optional, Sequence

import torch

from .layouts import local_tensor

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


def check(params, pending, names, check_ranks) -> bool:
    """LaPerm's first-step check of ``params`` against ``pending`` (their fingerprints
    when S was taken; ``names``: by id): warns of those changed in place, raises
    ValueError where the ranks of ``check_ranks``'s group (:func:`rank_group`) disagree;
    returns whether S is to be taken again (on every rank alike)."""
    now = [int(fingerprint(local_tensor(p))) for p in params]
    changed = [p for p, f in zip(params, now) if f != int(pending[p])]
    retake = bool(changed)
    group = rank_group(check_ranks)
    if group is not None:
        plain = [(p, f) for p, f in zip(params, now) if getattr(p, "placements", None) is None]
        gathered = exchange(group, retake, [f for _, f in plain])
        why = first_disagreement(gathered, [names[id(p)] for p, _ in plain])
        if why is not None:
            raise ValueError(
                f"LaPerm: at the first step, {why}: the ranks would permute different "
                "initial values and diverge. Give every rank the same weights before "
                "LaPerm's first step (the same seed, or DDP(model), which broadcasts "
                "rank 0's weights); if the ranks hold different models on purpose "
                "(pipeline stages), pass check_ranks=False"
            )
        retake = any(c for c, _ in gathered)
    if changed:
        shown = ", ".join(names[id(p)] for p in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        warnings.warn(
            f"LaPerm: {shown}{more} changed in place after LaPerm was built and before "
            "its first step (DDP's broadcast of rank 0's weights, a re-initialisation, "
            "weights loaded into the model or cast): their sorted initial rows are taken again "
            "now, from the current weights. Build LaPerm after DDP(model) and after "
            "initialising, or call reset_sorted_init_() after changing the weights.",
            UserWarning,
            stacklevel=5,
        )
    return retake


def rank_group(check_ranks):
    """The process group the first-step check compares ranks over, or None."""
    if check_ranks is False:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = dist.group.WORLD if check_ranks is True else check_ranks
    return group if dist.get_world_size(group) > 1 else None
