"""LaPerm's cached sync plan (laperm_kernels/optim/sync_plan.py) follows every change that
should change a sync: after each, the next sync must rank-match the right parameters
against the right S. A plan that went stale would sync the old ones."""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal


def _holds(p: torch.Tensor, s: torch.Tensor, row_dim: int = 0) -> None:
    """After a sync, each row of ``p`` holds exactly ``s``'s row (LaPerm's invariant)."""
    rows = p.detach().movedim(row_dim, 0)
    assert_bitwise_equal(lk.sort_rows(rows), s, "rows")


def _opt(*params, row_dim=0):
    return lk.LaPerm(
        torch.optim.SGD([{"params": list(params), "row_dim": row_dim}], lr=0.1),
        sync_period=1,
        check_finite=False,
    )


def _scramble(*params):
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn_like(p) * 5)


def test_a_group_added_later_is_synced():
    a, b = torch.nn.Parameter(torch.randn(4, 6)), torch.nn.Parameter(torch.randn(3, 5))
    opt = _opt(a)
    opt.sync()
    opt.add_param_group({"params": [b]})
    _scramble(a, b)
    opt.sync()
    _holds(b, opt.sorted_inits[b])


def test_s_taken_again_is_the_s_used():
    a = torch.nn.Parameter(torch.randn(4, 6))
    opt = _opt(a)
    opt.sync()
    _scramble(a)
    opt.reset_sorted_init_()  # S of the scrambled values
    new = opt.sorted_inits[a].clone()
    opt.sync()
    _holds(a, new)


def test_s_replaced_in_the_dict_is_the_s_used():
    a = torch.nn.Parameter(torch.randn(4, 6))
    opt = _opt(a)
    opt.sync()
    other = lk.sort_rows(torch.randn(4, 6))
    opt.sorted_inits[a] = other
    opt.sync()
    _holds(a, other)


def test_a_loaded_checkpoint_s_is_the_s_used():
    a = torch.nn.Parameter(torch.randn(4, 6))
    opt = _opt(a)
    opt.sync()
    twin = _opt(torch.nn.Parameter(torch.randn(4, 6)))
    opt.load_state_dict(twin.state_dict())
    _scramble(a)
    opt.sync()
    _holds(a, twin.sorted_inits[twin.param_groups[0]["params"][0]])


def test_a_parameter_swapped_in_its_group_is_the_one_synced():
    a, b = torch.nn.Parameter(torch.randn(4, 6)), torch.nn.Parameter(torch.randn(4, 6))
    opt = _opt(a)
    opt.sync()
    opt.param_groups[0]["params"][0] = b  # same list, same length, another tensor
    s_b = lk.sort_rows(torch.randn(4, 6))
    opt.sorted_inits[b] = s_b
    opt.sync()
    _holds(b, s_b)


def test_new_storage_under_a_row_dim_1_view_is_synced():
    # units on dim 1: the rows are a transposed view, which would keep the old storage
    a = torch.nn.Parameter(torch.randn(6, 4))
    opt = _opt(a, row_dim=1)
    opt.sync()
    s = opt.sorted_inits[a]
    a.data = torch.randn(6, 4) * 3  # what model.to() or a load may do
    opt.sync()
    _holds(a, s, row_dim=1)


# --- the native sync (laperm.SyncCall): taken only where the ops would run the C++ kernel --


def _native_runs(opt):
    """Whether each plan's last sync ran in its one native call (spying on the plan)."""
    said = []
    for plan in opt._sync_plans.values():
        run = plan.run

        def spy(*args, run=run, **kwargs):
            result = run(*args, **kwargs)
            said.append(result.native)
            return result

        plan.run = spy
    return said


@pytest.mark.parametrize("backend", ["cpu", "auto"])
def test_a_cpu_model_syncs_in_one_native_call_exactly(backend):
    a, b = torch.nn.Parameter(torch.randn(4, 6)), torch.nn.Parameter(torch.randn(2, 3, 5))
    opt = lk.LaPerm(torch.optim.SGD([a, b], lr=0.1), sync_period=1, backend=backend)
    opt.sync()  # auto's trial, the plan
    said = _native_runs(opt)
    _scramble(a, b)
    versions = [a._version, b._version]
    opt.sync()
    assert said == [True]
    _holds(a, opt.sorted_inits[a])
    _holds(b, opt.sorted_inits[b])
    assert a._version > versions[0] and b._version > versions[1]
    assert opt.sync_backends == {"cpu float32": "cpu"}


def test_new_storage_that_breaks_the_rules_takes_the_ops_path():
    a = torch.nn.Parameter(torch.randn(4, 6))
    opt = _opt(a)
    opt.sync()
    said = _native_runs(opt)
    a.data = torch.randn(6, 4).t()  # not contiguous: the native call refuses it
    opt.sync()
    assert said == [False]
    _holds(a, opt.sorted_inits[a])
    a.data = a.data.double()  # cast: the ops path says so, nothing touched
    before = a.detach().clone()
    with pytest.raises(ValueError, match="cast or moved"):
        opt.sync()
    assert_bitwise_equal(a.detach(), before)


def test_a_dispatch_mode_sees_the_sync():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    a = torch.nn.Parameter(torch.randn(4, 6))
    opt = _opt(a)
    opt.sync()
    _scramble(a)
    with Ops() as mode:
        opt.sync()
    assert any("laperm" in name for name in mode.seen)
    _holds(a, opt.sorted_inits[a])
