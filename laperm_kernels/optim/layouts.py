"""Which dimension of a weight indexes output units, and the rows LaPerm permutes.

LaPerm permutes each output unit's incoming weights. Most layers store a weight with the
units on dim 0 (``nn.Linear`` ``[out, in]``, ``nn.ConvNd`` ``[out, in/groups, *k]``), which
is what the ops' rows ``reshape(shape[0], -1)`` assume. Some do not:
``nn.ConvTransposeNd`` stores ``[in, out/groups, *k]`` and transformers' GPT-2 ``Conv1D``
``[in, out]``; there the units are on dim 1 (``row_dim=1``), and LaPerm permutes the rows
of ``weight.movedim(1, 0)``.

A DTensor parameter keeps its rows whole on every rank when each of its placements is
``Replicate()`` or shards the unit dimension (``Shard(d)``, FSDP2's ``_StridedShard(d)``):
each rank permutes its local tensor. Any other ``Shard`` splits rows across ranks; a sync
then moves the rows whole first (laperm_kernels/optim/sharded_rows.py), to
:func:`whole_row_placements`. S, the sorted initial rows, is a DTensor in the whole-row
placements (:func:`like_param`), so it never moves.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch


def rows_view(p: torch.Tensor, row_dim: int = 0) -> torch.Tensor:
    """The tensor the ops rank-match for ``p``, with the output units on dim 0 (a view:
    permuting it permutes ``p``): ``p`` itself, or a DTensor's local tensor. Only for
    placements that keep rows whole (:func:`whole_row_placements` returns None)."""
    local = local_tensor(p)
    d = row_dim % p.dim()
    return local if d == 0 else local.movedim(d, 0)


def rows_shape(shape: Tuple[int, ...], row_dim: int) -> Tuple[int, ...]:
    """The shape of :func:`rows_view` of a tensor of ``shape`` (whole, not one shard)."""
    d = row_dim % len(shape)
    return (shape[d], *shape[:d], *shape[d + 1 :])


def local_tensor(p: torch.Tensor, row_dim: int = 0) -> torch.Tensor:
    """What this rank holds of ``p``: a DTensor's local tensor (its storage, whatever the
    placements), else ``p``. ``row_dim`` is accepted for the callers that pass it."""
    return p.to_local() if getattr(p, "placements", None) is not None else p


def _strided_shard_type():
    try:
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:  # no strided sharding in this torch
        return ()
    return _StridedShard


def shards_dim(placement, d: int) -> bool:
    """Whether ``placement`` shards tensor dimension ``d`` (``Shard(d)`` or FSDP2's
    ``_StridedShard(d)``, whose ``is_shard()`` is False in torch 2.13)."""
    return (
        placement.is_shard() or isinstance(placement, _strided_shard_type())
    ) and placement.dim == d


def check_placements(p: torch.Tensor, what: str) -> None:
    """Refuses a DTensor parameter placed ``Partial`` (pending sums, not values) or in a
    way that is neither replication nor sharding; ``what`` names the parameter."""
    for placement in getattr(p, "placements", None) or ():
        if not (
            placement.is_replicate()
            or placement.is_shard()
            or isinstance(placement, _strided_shard_type())
        ):
            raise ValueError(
                f"LaPerm: {what} is a DTensor placed as {tuple(p.placements)}; "
                f"LaPerm permutes values held as Shard or Replicate, not "
                f"{placement}"
            )


def whole_row_placements(p: torch.Tensor, row_dim: int = 0) -> Optional[Tuple]:
    """None when ``p`` (a plain tensor, or a DTensor whose placements all replicate or
    shard the unit dimension) holds whole rows on every rank; else ``p``'s placements with
    every ``Shard`` of another dimension replaced by ``Shard`` of the unit dimension: the
    placements a sync redistributes ``p`` to (same mesh; each rank holds about as many
    elements as before: the same shards, along the unit dimension, up to rounding)."""
    placements = getattr(p, "placements", None)
    if placements is None:
        return None
    d = row_dim % p.dim()
    if all(pl.is_replicate() or shards_dim(pl, d) for pl in placements):
        return None
    from torch.distributed.tensor import Shard

    return tuple(pl if pl.is_replicate() or shards_dim(pl, d) else Shard(d) for pl in placements)


def rows_placements(placements: Sequence, d: int) -> Tuple:
    """Whole-row ``placements`` of a parameter (unit dimension ``d``) as placements of its
    rows (:func:`rows_view`, units on dim 0)."""
    from torch.distributed.tensor import Shard

    strided = _strided_shard_type()
    out = []
    for pl in placements:
        if isinstance(pl, strided):
            out.append(type(pl)(0, split_factor=pl.split_factor))
        elif pl.is_shard():
            out.append(Shard(0))
        else:
            out.append(pl)
    return tuple(out)


def s_placements(p: torch.Tensor, row_dim: int = 0) -> Tuple:
    """The placements of a DTensor parameter's S: its whole-row placements, as rows."""
    d = row_dim % p.dim()
    return rows_placements(whole_row_placements(p, row_dim) or p.placements, d)


def like_param(rows: torch.Tensor, p: torch.Tensor, row_dim: int = 0) -> torch.Tensor:
    """``rows`` (this rank's rows of ``p`` in its whole-row placements, units first) as
    LaPerm keeps S for ``p``: for a DTensor parameter, a DTensor on its mesh placed
    :func:`s_placements`, so that distributed checkpoints save every shard and reshard
    it on load."""
    if getattr(p, "placements", None) is None:
        return rows
    from torch.distributed.tensor import DTensor

    shape = rows_shape(tuple(p.shape), row_dim)
    stride = tuple(torch.empty(shape, device="meta").stride())
    return DTensor.from_local(
        rows,
        p.device_mesh,
        s_placements(p, row_dim),
        run_check=False,
        shape=torch.Size(shape),
        stride=stride,
    )


def row_dim_of(p: torch.Tensor, groups) -> int:
    """The ``row_dim`` of the param group (of ``groups``) that holds ``p``."""
    return next(g.get("row_dim", 0) for g in groups if any(q is p for q in g["params"]))
