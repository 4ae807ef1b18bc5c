"""``track_changes``: how many positions of each permuted tensor changed value at a sync
(the paper's permutation tracer), counted on the device.

The counts and the values of the last sync are buffers kept from one sync to the next:
kernels only, no host read, so a captured step replays them (docs/capture.md).
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

import torch


def count(
    locals_: Iterable[Tuple[int, torch.Tensor, torch.Tensor]],
    counts: Dict[int, torch.Tensor],
    last_synced: Dict[torch.Tensor, torch.Tensor],
) -> None:
    """For each ``(index, parameter, its local tensor)``: sets ``counts[index]`` to the
    positions whose value changed since ``last_synced[parameter]`` (all of them the first
    time, or after a change of shape or device) and keeps the values for the next count."""
    for i, p, local in locals_:
        n = counts.get(i)
        if n is None or n.device != local.device:
            n = counts[i] = torch.zeros((), dtype=torch.int64, device=local.device)
        last = last_synced.get(p)
        if last is None or last.shape != local.shape or last.device != local.device:
            n.fill_(local.numel())
            last_synced[p] = local.detach().clone()
        else:
            n.copy_((local != last).sum())
            last.copy_(local)


def read(counts: Dict[int, torch.Tensor]) -> Dict[int, int]:
    """``{index: count}``, read from the device now (one copy to the host)."""
    if not counts:
        return {}
    tensors = list(counts.values())
    device = tensors[0].device
    values = torch.stack([c.to(device) for c in tensors]).tolist()
    return dict(zip(counts, values))
