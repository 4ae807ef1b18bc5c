"""LaPerm refuses permuted parameters that share memory whatever their order in the groups
(other tensors listed between them) and whichever groups hold them: a group added later
is checked against every group, not only itself. (The refusal's wording and what it
leaves alone: test_optim_checks.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import laperm_kernels as lk

pytestmark = pytest.mark.usefixtures("one_thread")


def _a_view_and_another():
    """(a, b, c): b views rows 2..5 of a; c is a tensor of its own."""
    base = torch.randn(8, 6)
    return nn.Parameter(base), nn.Parameter(base[2:6]), nn.Parameter(torch.randn(8, 6))


@pytest.mark.parametrize(
    "order",
    [("a", "c", "b"), ("b", "c", "a"), ("c", "b", "a")],
    ids=["a-c-b", "b-c-a", "c-b-a"],
)
def test_parameters_sharing_memory_are_refused_whatever_lies_between_them(order):
    a, b, c = _a_view_and_another()
    params = {"a": a, "b": b, "c": c}
    groups = [{"params": [params[n] for n in order], "param_names": list(order)}]
    with pytest.raises(ValueError, match="parameter '[ab]' and parameter '[ab]' share memory"):
        lk.LaPerm(torch.optim.SGD(groups, lr=0.1))


def test_parameters_sharing_memory_across_groups_are_refused():
    a, b, c = _a_view_and_another()
    groups = [{"params": [a], "param_names": ["a"]}, {"params": [c, b], "param_names": ["c", "b"]}]
    with pytest.raises(ValueError, match="parameter 'a' and parameter 'b' share memory"):
        lk.LaPerm(torch.optim.SGD(groups, lr=0.1))


def test_an_added_group_sharing_memory_with_an_earlier_group_is_refused_and_not_added():
    a, b, c = _a_view_and_another()
    opt = lk.LaPerm(torch.optim.SGD([{"params": [a, c], "param_names": ["a", "c"]}], lr=0.1))
    with pytest.raises(ValueError, match="parameter 'a' and parameter 'b' share memory"):
        opt.add_param_group({"params": [b], "param_names": ["b"]})
    assert len(opt.param_groups) == len(opt.optimizer.param_groups) == 1
    assert set(opt.sorted_inits) == {a, c}
