"""Which dimension of a weight indexes output units, and the rows LaPerm permutes.

LaPerm permutes each output unit's incoming weights. Most layers store a weight with the
units on dim 0 (``nn.Linear`` ``[out, in]``, ``nn.ConvNd`` ``[out, in/groups, *k]``), which
is what the ops' rows ``reshape(shape[0], -1)`` assume. Some do not:
``nn.ConvTransposeNd`` stores ``[in, out/groups, *k]`` and transformers' GPT-2 ``Conv1D``
``[in, out]``; there the units are on dim 1 (``row_dim=1``), and LaPerm permutes the rows
of ``weight.movedim(1, 0)``. Embeddings hold one vector per token, not a unit's incoming
weights: the paper's semantics leave them alone.

:func:`param_groups` builds LaPerm's param groups from a model with these rules.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import torch
from torch import nn

EMBEDDINGS = ("skip", "per_token")


def rows_view(p: torch.Tensor, row_dim: int = 0) -> torch.Tensor:
    """The tensor the ops rank-match for ``p``: this rank's part of it (for a DTensor),
    with the output units on dim 0 (a view: permuting it permutes ``p``)."""
    local = local_tensor(p, row_dim)
    d = row_dim % p.dim()
    return local if d == 0 else local.movedim(d, 0)


def rows_shape(shape: Tuple[int, ...], row_dim: int) -> Tuple[int, ...]:
    """The shape of :func:`rows_view` of a tensor of ``shape`` (whole, not one shard)."""
    d = row_dim % len(shape)
    return (shape[d], *shape[:d], *shape[d + 1:])


def local_tensor(p: torch.Tensor, row_dim: int = 0) -> torch.Tensor:
    """The rows a rank sees. A DTensor sharded on the unit dimension (FSDP2 shards dim 0)
    or replicated holds whole rows: permute the local tensor, no communication needed.
    Any other placement would split rows across ranks, and is refused."""
    placements = getattr(p, "placements", None)
    if placements is None:
        return p
    d = row_dim % p.dim()
    for placement in placements:
        if not (placement.is_replicate() or (placement.is_shard() and placement.dim == d)):
            raise ValueError(
                f"LaPerm permutes whole rows (output units on dim {d}); a DTensor parameter "
                f"placed as {tuple(placements)} splits them across ranks (only Shard({d}) "
                "and Replicate() keep rows whole)")
    return p.to_local()


def like_param(rows: torch.Tensor, p: torch.Tensor, row_dim: int = 0) -> torch.Tensor:
    """``rows`` (shaped like :func:`rows_view` of ``p``) as ``p`` holds it: for a DTensor
    parameter, a DTensor on its mesh sharded like its units, so that distributed
    checkpoints save every shard and reshard it on load."""
    placements = getattr(p, "placements", None)
    if placements is None:
        return rows
    from torch.distributed.tensor import DTensor, Shard

    shape = rows_shape(tuple(p.shape), row_dim)
    stride = tuple(torch.empty(shape, device="meta").stride())
    return DTensor.from_local(rows, p.device_mesh,
                              [Shard(0) if pl.is_shard() else pl for pl in placements],
                              run_check=False, shape=torch.Size(shape), stride=stride)


def param_groups(model: nn.Module, *, embeddings: str = "skip") -> List[Dict[str, object]]:
    """LaPerm's param groups for ``model``, with the paper's semantics per layer type:

    * ``nn.Linear``, ``nn.ConvNd``, ``nn.Bilinear`` and any other weight with ndim >= 2:
      permuted, units on dim 0 (``row_dim=0``);
    * ``nn.ConvTransposeNd`` (groups=1) and transformers' ``Conv1D``: permuted,
      ``row_dim=1``. A grouped ConvTranspose weight is skipped with a warning: its dim 1
      mixes the units of all groups;
    * ``nn.Embedding`` / ``nn.EmbeddingBag``: skipped (``embeddings="skip"``), or each
      token's vector permuted (``embeddings="per_token"``);
    * 1-D parameters (biases, normalisation): not permuted.

    A parameter that several modules share (GPT-2's ``lm_head`` tied to its token
    embedding) follows the first module that holds it. Returns up to three groups,
    ``[{"params": [...], "row_dim": 0}, {"params": [...], "row_dim": 1},
    {"params": [...], "permute": False}]`` (empty ones left out), for the inner optimizer:
    ``LaPerm(torch.optim.Adam(param_groups(model), lr=1e-3))``.
    """
    if embeddings not in EMBEDDINGS:
        raise ValueError(f"embeddings must be one of {EMBEDDINGS}; got {embeddings!r}")
    rule: Dict[int, object] = {}  # id(param) -> row_dim, or None: not permuted
    order: List[nn.Parameter] = []

    def claim(p, value):
        if id(p) not in rule:
            rule[id(p)] = value
            order.append(p)

    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                claim(weight, 0 if embeddings == "per_token" else None)
            elif isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                if module.groups != 1:
                    warnings.warn(f"laperm_kernels.param_groups: {name} is a ConvTranspose "
                                  f"with groups={module.groups}; its weight's dim 1 mixes "
                                  "the units of every group, so it is not permuted",
                                  stacklevel=2)
                claim(weight, 1 if module.groups == 1 else None)
            elif _is_transformers_conv1d(module):
                claim(weight, 1)
        for p in module.parameters(recurse=False):
            claim(p, 0 if p.dim() >= 2 else None)

    groups = [{"params": [p for p in order if rule[id(p)] == 0], "row_dim": 0},
              {"params": [p for p in order if rule[id(p)] == 1], "row_dim": 1},
              {"params": [p for p in order if rule[id(p)] is None], "permute": False}]
    return [g for g in groups if g["params"]]


def _is_transformers_conv1d(module: nn.Module) -> bool:
    cls = type(module)  # matched by name: transformers is not a dependency
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")
