"""LaPerm's cached sync plan follows a change of a group's rules that leaves S's dict
version alone: a new ``row_dim`` (S kept, updated in place), and a ``permute`` rule that
drops a parameter (``reset_sorted_init_`` then only removes its S). The next sync must
follow the new rule; a stale plan would sync as before. (The other changes a plan
follows: test_sync_plan.py.)"""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal

pytestmark = pytest.mark.usefixtures("one_thread")


def _scramble(p: torch.Tensor, seed: int) -> None:
    with torch.no_grad():
        p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 5)


def test_a_group_whose_row_dim_changed_is_synced_along_the_new_dim():
    a = torch.nn.Parameter(torch.randn(5, 5))  # square: S fits either row_dim
    opt = lk.LaPerm(torch.optim.SGD([a], lr=0.1), sync_period=1, check_finite=False)
    opt.sync()  # the plan, for row_dim 0
    opt.param_groups[0]["row_dim"] = 1
    _scramble(a, 1)
    with torch.no_grad():  # S of the columns, in place: its dict version stays the same
        opt.sorted_inits[a].copy_(lk.sort_rows(a.detach().t().contiguous()))
    s = opt.sorted_inits[a].clone()
    opt.sync()
    columns = a.detach().t().contiguous()
    assert_bitwise_equal(lk.sort_rows(columns), s, "the columns after a sync with row_dim=1")


def test_a_parameter_the_permute_rule_no_longer_takes_is_left_alone_after_a_reset():
    a, b = torch.nn.Parameter(torch.randn(4, 6)), torch.nn.Parameter(torch.randn(3, 5))
    opt = lk.LaPerm(
        torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1),
        sync_period=1,
        check_finite=False,
    )
    opt.sync()  # the plan holds a and b
    opt.param_groups[1]["permute"] = False
    opt.reset_sorted_init_([b])  # b's S removed, nothing else: only a pop
    assert b not in opt.sorted_inits
    _scramble(b, 2)
    before = b.detach().clone()
    opt.sync()
    assert_bitwise_equal(b.detach(), before, "b, which permute=False leaves alone")
