"""``param_groups(model)``: LaPerm's param groups, with the paper's semantics per layer.

LaPerm permutes each output unit's incoming weights (laperm_kernels/optim/layouts.py says which
dimension holds the units). Tables with one vector per token or position (embeddings,
position tables, class tokens) hold no unit's incoming weights: the paper's semantics
leave them alone, and permuting one as a flat row would move each position's values to
other positions.
"""

from __future__ import annotations

import re
import warnings
from typing import Dict, List

from torch import nn

EMBEDDINGS = ("skip", "per_token")
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)  # units on a known dim
_TABLE_NAME = re.compile(r"token|position|pos_embed|embedding", re.IGNORECASE)
_TABLE_MODULE = re.compile(r"Embeddings?$")


def param_groups(model: nn.Module, *, embeddings: str = "skip") -> List[Dict[str, object]]:
    """LaPerm's param groups for ``model``, with the paper's semantics per layer type:

    * ``nn.Linear``, ``nn.ConvNd``, ``nn.Bilinear`` and any other weight with ndim >= 2:
      permuted, units on dim 0 (``row_dim=0``);
    * ``nn.ConvTransposeNd`` (groups=1) and transformers' ``Conv1D``: permuted,
      ``row_dim=1``. A grouped ConvTranspose weight is skipped with a warning: its dim 1
      mixes the units of all groups;
    * per-token and per-position tables: skipped (``embeddings="skip"``), or each token's
      vector (the last dimension) permuted on its own (``embeddings="per_token"``: row_dim
      ndim - 2). A parameter with ndim >= 2 is such a table when it is

      - the weight of an ``nn.Embedding`` / ``nn.EmbeddingBag`` (GPT-2's ``wte`` and
        ``wpe``, BERT's word, position and token-type embeddings), or
      - held directly by a module that is not a Linear, Bilinear, Conv, ConvTranspose or
        ``Conv1D`` layer, and either shaped ``[1, ..., D]`` with ndim >= 3 (added to a
        batch by broadcasting: ViT's ``position_embeddings`` ``[1, N, D]`` and
        ``cls_token`` ``[1, 1, D]``, ``nn.MultiheadAttention``'s ``bias_k``), or named
        with ``token``, ``position``, ``pos_embed`` or ``embedding`` (timm's ``pos_embed``,
        CLIP's ``positional_embedding``, Swin's ``relative_position_bias_table``), or held
        by a module whose class name ends in ``Embedding`` or ``Embeddings``;
    * 1-D parameters (biases, normalisation): not permuted.

    A parameter that several modules share (GPT-2's ``lm_head``, tied to its token
    embedding) follows the first module that holds it. Returns one group per row_dim in
    use, ascending, then ``{"permute": False}`` (empty ones left out); every group lists
    its parameters' names from ``model.named_parameters()`` as ``"param_names"``
    (torch.optim's key), which LaPerm's errors quote. For the inner optimizer:
    ``LaPerm(torch.optim.Adam(param_groups(model), lr=1e-3))``; a group added later with
    ``add_param_group`` then needs ``"param_names"`` too (torch.optim requires all groups
    or none to have them).
    """
    if embeddings not in EMBEDDINGS:
        raise ValueError(f"embeddings must be one of {EMBEDDINGS}; got {embeddings!r}")
    names = {id(p): n for n, p in model.named_parameters()}
    rule: Dict[int, object] = {}  # id(param) -> row_dim, or None: not permuted
    order: List[nn.Parameter] = []

    def claim(p, value):
        if id(p) not in rule:
            rule[id(p)] = value
            order.append(p)

    def table(p):
        return p.dim() - 2 if embeddings == "per_token" else None

    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                claim(weight, table(weight))
            elif isinstance(module, _CONV_TRANSPOSE):
                if module.groups != 1:
                    warnings.warn(
                        f"laperm_kernels.param_groups: {name} is a ConvTranspose "
                        f"with groups={module.groups}; its weight's dim 1 mixes "
                        "the units of every group, so it is not permuted",
                        stacklevel=2,
                    )
                claim(weight, 1 if module.groups == 1 else None)
            elif _is_transformers_conv1d(module):
                claim(weight, 1)
        layer = isinstance(module, _LAYERS) or _is_transformers_conv1d(module)
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() < 2:
                claim(p, None)
            elif not layer and _is_table(module, pname, p):
                claim(p, table(p))
            else:
                claim(p, 0)

    row_dims = sorted({v for v in rule.values() if v is not None})
    groups = [{"params": [p for p in order if rule[id(p)] == d], "row_dim": d} for d in row_dims]
    groups.append({"params": [p for p in order if rule[id(p)] is None], "permute": False})
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["param_names"] = [names[id(p)] for p in g["params"]]
    return groups


def _is_table(module: nn.Module, name: str, p: nn.Parameter) -> bool:
    """Whether ``p`` (ndim >= 2, held directly by ``module`` as ``name``, not a layer's
    weight) is a per-token or per-position table (the rule in param_groups' docstring)."""
    return (
        (p.dim() >= 3 and p.shape[0] == 1)
        or bool(_TABLE_NAME.search(name))
        or bool(_TABLE_MODULE.search(type(module).__name__))
    )


def _is_transformers_conv1d(module: nn.Module) -> bool:
    cls = type(module)  # matched by name: transformers is not a dependency
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")
