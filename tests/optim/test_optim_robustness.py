"""LaPerm against broken or unusual situations: checkpoints that fit only in part, models
cast or moved after wrapping, diverged weights. Each either raises a clear error that
changes nothing or does what the docstring says."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal, mlp

pytestmark = pytest.mark.usefixtures("one_thread")
K = 3


def train(model, opt, steps):
    for t in range(steps):
        g = torch.Generator().manual_seed(t)
        x = torch.randn(6, 8, generator=g).to(next(model.parameters()).dtype)
        opt.zero_grad()
        F.cross_entropy(model(x), torch.randint(0, 4, (6,), generator=g)).backward()
        opt.step()


def rows_are_permutations(opt):
    return all(
        torch.equal(p.detach().reshape(p.shape[0], -1).sort(1).values, s.reshape(p.shape[0], -1))
        for p, s in opt.sorted_inits.items()
    )


def test_load_drops_state_the_checkpoint_does_not_have():
    # every parameter permuted here; the checkpoint permutes the weights only
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters()), K, permute=True)
    assert model[0].bias in opt.sorted_inits
    source = lk.LaPerm(torch.optim.Adam(mlp(seed=1).parameters()), K)
    opt.load_state_dict(source.state_dict())
    assert set(opt.sorted_inits) == {model[0].weight, model[2].weight}
    opt.sync()  # the bias is left alone now
    assert rows_are_permutations(opt)


def test_load_takes_the_change_tracer_baseline_from_the_loaded_weights():
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), K, track_changes=True)
    train(model, opt, K)  # ends on a sync
    weights, state = model.state_dict(), opt.state_dict()
    resumed = mlp(seed=5)
    resumed.load_state_dict(weights)
    ropt = lk.LaPerm(torch.optim.Adam(resumed.parameters(), lr=1e-2), K, track_changes=True)
    ropt.load_state_dict(state)
    ropt.sync()  # synced weights: a sync moves nothing
    assert ropt.last_sync_changes == {0: 0, 2: 0}


def test_load_casts_restored_state_to_the_parameters_dtype():
    source = lk.LaPerm(torch.optim.Adam(mlp(dtype=torch.float64).parameters()), K)
    model = mlp(seed=1)  # another init: its own S differs
    opt = lk.LaPerm(torch.optim.Adam(model.parameters()), K)
    want = source.sorted_inits[next(iter(source.sorted_inits))].float()
    assert not torch.equal(opt.sorted_inits[model[0].weight], want)
    opt.load_state_dict(source.state_dict())
    for p, s in opt.sorted_inits.items():
        assert s.dtype == p.dtype == torch.float32
    assert_bitwise_equal(opt.sorted_inits[model[0].weight], want)


def test_a_checkpoint_with_integer_sorted_inits_is_refused():
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters()), K)
    sd = opt.state_dict()
    sd["state"][0] = {"sorted_init": torch.zeros(16, 8, dtype=torch.int32)}
    before = {p: s.clone() for p, s in opt.sorted_inits.items()}
    with pytest.raises(TypeError, match="sorted_init of parameter 0 has dtype torch.int32"):
        opt.load_state_dict(sd)
    for p, s in opt.sorted_inits.items():
        assert_bitwise_equal(s, before[p])


@pytest.mark.parametrize("change", ["double", "half"])
def test_a_model_cast_after_wrapping_gets_a_clear_error_then_recovers(change):
    model = mlp()
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1), K)
    train(model, opt, 1)  # past the first step, whose check would take S again (test_first_step.py)
    getattr(model, change)()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="cast or moved after LaPerm was built"):
        opt.sync()
    for p, b in zip(model.parameters(), before):
        assert_bitwise_equal(p.detach(), b, "untouched")
    opt.load_state_dict(opt.state_dict())  # the documented way out
    assert all(
        s.dtype == getattr(torch, {"double": "float64", "half": "float16"}[change])
        for s in opt.sorted_inits.values()
    )
    opt.sync()
    assert rows_are_permutations(opt)


def test_a_sync_over_nan_weights_warns_once_and_proceeds():
    model = mlp()
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1), K)
    train(model, opt, 1)  # past the first step, whose check would take S again (test_first_step.py)
    with torch.no_grad():
        model[0].weight[3, 2] = float("nan")
        model[2].weight[1, 0] = float("inf")
    with pytest.warns(
        RuntimeWarning,
        match=r"parameter 0 of param group 0 \(NaN\), "
        r"parameter 2 of param group 0 \(inf\)",
    ):
        opt.sync()
    assert rows_are_permutations(opt) and all(p.isfinite().all() for p in opt.sorted_inits)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        opt.sync()
    quiet_model = mlp()
    quiet = lk.LaPerm(torch.optim.SGD(quiet_model.parameters(), lr=0.1), K, check_finite=False)
    train(quiet_model, quiet, 1)
    with torch.no_grad():
        next(iter(quiet.sorted_inits))[0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.sync()


def _on_meta():
    with torch.device("meta"):
        model = mlp()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    return model


def test_steps_over_meta_parameters_run_as_torch_optims_do():
    """Meta tensors hold no values: the first-step check and the syncs leave them out."""
    model = _on_meta()
    opt = lk.LaPerm(
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 1, track_changes=True
    )
    assert set(opt.sorted_inits) == {model[0].weight, model[2].weight}
    for _ in range(2):
        opt.step()
    assert opt.step_count == 2 and opt.last_sync_changes == {}
    opt.sync()


def test_torchs_own_error_for_meta_parameters_surfaces():
    model = _on_meta()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), fused=True), 1)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params"):
        opt.step()
    assert opt.step_count == 0
