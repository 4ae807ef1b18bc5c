"""LaPerm's first-step check in one process (laperm_kernels/optim/first_step.py): a permuted
weight changed in place between building LaPerm and its first step gets its S taken
again, before the inner step, with a warning naming it. Across ranks:
tests/distributed/test_first_step_ranks.py."""

from __future__ import annotations

import warnings

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.optim.first_step import fingerprint
from tests.helpers import DTYPES, assert_bitwise_equal, mlp, train_step

pytestmark = pytest.mark.usefixtures("one_thread")
K = 2


def rows_sort_to(w, s):
    return torch.equal(w.detach().sort(dim=1).values, s)


def test_a_reinitialised_weight_gets_its_s_taken_again_at_the_first_step():
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(lk.param_groups(model), lr=1e-2), K)
    old_S = opt.sorted_inits[model[0].weight].clone()
    with torch.no_grad():  # .data: invisible to the version counter
        model[0].weight.data.copy_(torch.randn(16, 8, generator=torch.Generator().manual_seed(9)))
    reinit = model[0].weight.detach().clone()
    with pytest.warns(
        UserWarning,
        match=r"parameter '0.weight' changed in place after "
        r"LaPerm was built",
    ):
        train_step(model, opt, 1)
    S = opt.sorted_inits[model[0].weight]
    assert not torch.equal(S, old_S)
    assert_bitwise_equal(S, lk.sort_rows(reinit), "S: the weights before the inner step")
    train_step(model, opt, 2)  # a sync
    assert rows_sort_to(model[0].weight, S)
    assert rows_sort_to(model[2].weight, opt.sorted_inits[model[2].weight])


def test_unchanged_weights_keep_their_s_without_a_word():
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), K)
    S = dict(opt.sorted_inits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(1, 3):
            train_step(model, opt, t)
    assert all(opt.sorted_inits[p] is s for p, s in S.items())


def test_the_check_runs_once_and_a_forced_sync_runs_it_too():
    model = mlp()
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1), K)
    with torch.no_grad():
        model[2].weight.mul_(2)
    changed = model[2].weight.detach().clone()
    with pytest.warns(UserWarning, match="parameter 2 of param group 0 changed in place"):
        opt.sync()
    S = opt.sorted_inits[model[2].weight]
    assert_bitwise_equal(S, lk.sort_rows(changed), "S: taken from the changed weights")
    with torch.no_grad():
        model[2].weight.mul_(2)  # after the first step: the user's business
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_step(model, opt, 1)
    assert opt.sorted_inits[model[2].weight] is S  # not taken again


def test_a_loaded_checkpoint_is_not_second_guessed():
    source = mlp(seed=1)
    sopt = lk.LaPerm(torch.optim.Adam(source.parameters(), lr=1e-2), K)
    train_step(source, sopt, 1)
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), K)
    model.load_state_dict(source.state_dict())  # the weights change after LaPerm was built
    opt.load_state_dict(sopt.state_dict())  # and S comes from the checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_step(model, opt, 2)
    assert_bitwise_equal(
        opt.sorted_inits[model[0].weight], sopt.sorted_inits[source[0].weight], "the checkpoint's S"
    )


def test_groups_added_later_are_checked_at_the_next_step():
    model = mlp()
    opt = lk.LaPerm(torch.optim.SGD([model[0].weight], lr=0.1), K)
    train_step(model, opt, 1)
    opt.add_param_group({"params": [model[2].weight]})
    with torch.no_grad():
        model[2].weight.add_(1.0)
    changed = model[2].weight.detach().clone()
    with pytest.warns(UserWarning, match="parameter 0 of param group 1 changed"):
        train_step(model, opt, 2)
    S = opt.sorted_inits[model[2].weight]
    assert_bitwise_equal(S, lk.sort_rows(changed), "S: taken from the changed weights")
    assert rows_sort_to(model[2].weight, S)  # step 2 synced


def test_check_ranks_must_be_a_bool_or_a_process_group():
    with pytest.raises(TypeError, match="check_ranks must be True, False or a"):
        lk.LaPerm(torch.optim.SGD(mlp().parameters(), lr=0.1), check_ranks="yes")


@pytest.mark.parametrize("dtype", DTYPES)
def test_fingerprint_is_exact_and_position_sensitive(dtype):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(37, 29, generator=g).to(dtype)
    f = int(fingerprint(t))
    assert f == int(fingerprint(t.clone())) == int(fingerprint(t.t().contiguous().t()))
    flipped = t.clone()
    flipped.view(-1)[100] = -flipped.view(-1)[100]
    swapped = t.clone()
    swapped.view(-1)[[3, 4]] = swapped.view(-1)[[4, 3]]
    zero = torch.zeros(5, dtype=dtype)
    negzero = -zero
    assert int(fingerprint(flipped)) != f
    assert int(fingerprint(swapped)) != f
    assert int(fingerprint(zero)) != int(fingerprint(negzero))  # bit patterns, not values
    assert int(fingerprint(torch.empty(0, 3, dtype=dtype))) == 0
