"""``lk.param_groups``: a 2-D ``[1, D]`` parameter held directly by a module is one unit's
incoming weights (a scoring vector, a one-output projection), permuted on dim 0 like any
weight; only ``[1, ..., D]`` shapes with ndim >= 3 (added to a batch by broadcasting) are
tables. (Tables of every kind: test_param_groups_tables.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import laperm_kernels as lk

pytestmark = pytest.mark.usefixtures("one_thread")


class AttentionPool(nn.Module):
    """Pools a sequence [B, N, D] by the softmax of ``x @ score.T``; adds ``offset``."""

    def __init__(self, d: int = 8, n: int = 5):
        super().__init__()
        self.score = nn.Parameter(torch.randn(1, d))  # one unit's weights
        self.offset = nn.Parameter(torch.zeros(1, n, d))  # broadcast over the batch: a table

    def forward(self, x):
        x = x + self.offset
        return (torch.softmax(x @ self.score.t(), dim=1) * x).sum(dim=1)


def _row_dims(model):
    """{name: row_dim, or None where not permuted} by lk.param_groups."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        names[id(p)]: None if g.get("permute", True) is False else g["row_dim"]
        for g in lk.param_groups(model)
        for p in g["params"]
    }


def test_a_one_row_matrix_is_a_units_weights_and_a_broadcast_table_is_not():
    assert _row_dims(AttentionPool()) == {"score": 0, "offset": None}


def test_a_one_row_matrix_is_permuted_by_laperm_over_param_groups():
    model = AttentionPool()
    opt = lk.LaPerm(torch.optim.SGD(lk.param_groups(model), lr=0.1), sync_period=1)
    assert set(opt.sorted_inits) == {model.score}
