"""The rows a sync rank-matches, for parameters of any placement.

Where a parameter holds whole rows on this rank (a plain tensor; a DTensor replicated or
sharded on its unit dimension, as FSDP2 shards a Linear), the rows are a view of its local
tensor, permuted in place: no communication, as cheap as for a plain tensor. A DTensor
whose placements split its rows (tensor parallelism's ``RowwiseParallel`` places a Linear
weight ``Shard(1)``; FSDP2 shards GPT-2's ``Conv1D`` ``[in, out]`` on dim 0, across its
units' rows) is moved by ``DTensor.redistribute`` to ``layouts.whole_row_placements``
(every split dimension becomes a shard of the unit dimension: each rank then holds whole
rows, about as many elements as before), rank-matched there, and redistributed back into its
local tensor in place: the parameter object and its storage stay the same, since FSDP2
holds references to both. Collectives run in parameter order, the same on every rank.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch

from ..ops import graph_capture
from .layouts import local_tensor, rows_view, whole_row_placements


@torch.no_grad()
def whole_rows(p: torch.Tensor, row_dim: int = 0) -> torch.Tensor:
    """This rank's rows of ``p`` in its whole-row placements, units on dim 0: a view of
    its local tensor where that holds whole rows, else a new tensor (a collective)."""
    target = whole_row_placements(p, row_dim)
    if target is None:
        return rows_view(p, row_dim)
    local = p.redistribute(p.device_mesh, target).to_local()
    # contiguous: the ops then permute it in place, with no copy back
    return local.movedim(row_dim % p.dim(), 0).contiguous()


def sync_rows(
    params: Sequence[Tuple[torch.Tensor, int]],
) -> Tuple[List[torch.Tensor], Callable[[], None]]:
    """(the rows to rank-match for every ``(parameter, row_dim)``, ``write_back``). Call
    ``write_back()`` once the rows are permuted: it puts redistributed rows back into
    their parameters (all collectives first, then the copies). Nothing is written to a
    parameter before it, so a sync refused by the ops' validation changes nothing."""
    targets = [whole_row_placements(p, row_dim) for p, row_dim in params]
    split = [p for (p, _), target in zip(params, targets) if target is not None]
    if split and graph_capture.capturing_any(split):
        raise graph_capture.NotPreparedForCapture(
            f"a sync of {len(split)} DTensor weight(s) whose placements split their rows "
            "across ranks: each sync moves their rows whole by collectives into new tensors, "
            "which a CUDA graph cannot keep. Sync them outside the graph (capture steps "
            "that do not sync, and sync eagerly), or place them on their unit dimension. "
            "Nothing was modified."
        )
    rows, moved = [], []
    for (p, row_dim), target in zip(params, targets):
        if target is None:
            rows.append(rows_view(p, row_dim))
        else:
            rows.append(whole_rows(p, row_dim))
            moved.append((p, row_dim, target, rows[-1]))

    @torch.no_grad()
    def write_back() -> None:
        if not moved:
            return
        from torch.distributed.tensor import DTensor

        back = []
        for p, row_dim, target, r in moved:
            whole = DTensor.from_local(
                r.movedim(0, row_dim % p.dim()).contiguous(),
                p.device_mesh,
                target,
                run_check=False,
                shape=p.shape,
                stride=p.stride(),
            )
            back.append(whole.redistribute(p.device_mesh, p.placements).to_local())
        for (p, _, _, _), b in zip(moved, back):
            local_tensor(p).copy_(b)

    return rows, write_back
