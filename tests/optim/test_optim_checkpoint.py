"""LaPerm checkpoints: resuming continues bit for bit; a wrong checkpoint changes nothing.

The state dict is the inner optimizer's, in torch.optim's layout, with LaPerm's state
merged in: the sorted initial rows S beside each permuted parameter's inner state (they
cannot be recomputed once training has moved the weights), and in every param group the
step counter (syncs are scheduled by it) and the parameters' shapes.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import laperm_kernels as lk
from tests import helpers
from tests.helpers import assert_bitwise_equal

K = 7  # sync period: syncs at 7..28 before the checkpoint, 35..70 after it
FIRST = 30  # steps before the checkpoint (not a sync step)
SECOND = 40  # steps after it


# Tiny models: one thread is fastest, and immune to a busy neighbour on the
# same cores. Results do not depend on the thread count (docs/contract.md).
pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed: int, hidden: int = 32) -> nn.Module:
    return helpers.mlp(seed, sizes=(20, hidden, 10))


def batch(t: int):
    """Batch number ``t``, the same whichever run asks for it."""
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(16, 20, generator=g), torch.randint(0, 10, (16,), generator=g)


def build(model, with_scheduler=False):
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=K)
    sched = (
        torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5) if with_scheduler else None
    )
    return opt, sched


def train(model, opt, sched, steps, start=1):
    for t in range(start, start + steps):
        x, y = batch(t)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf)  # default weights_only loading must be enough


def assert_same_training_state(model, opt, ref_model, ref_opt):
    for (name, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters()):
        assert_bitwise_equal(p.detach(), q.detach(), name)
    assert opt.step_count == ref_opt.step_count
    for p, q in zip(model.parameters(), ref_model.parameters()):
        st, ref = opt.optimizer.state[p], ref_opt.optimizer.state[q]
        assert set(st) == set(ref) == {"step", "exp_avg", "exp_avg_sq"}
        for key in st:
            assert_bitwise_equal(st[key], ref[key], f"Adam {key}")
        assert (p in opt.sorted_inits) == (q in ref_opt.sorted_inits)
        if p in opt.sorted_inits:
            assert_bitwise_equal(opt.sorted_inits[p], ref_opt.sorted_inits[q], "S")
    for g, rg in zip(opt.optimizer.param_groups, ref_opt.optimizer.param_groups):
        assert g["lr"] == rg["lr"]


def snapshot(model, opt):
    """Everything a failed load must leave alone, deep-copied."""
    return {
        "model": copy.deepcopy(model.state_dict()),
        "opt": copy.deepcopy(opt.state_dict()),
        "step": opt.step_count,
        "S": {p: opt.sorted_inits[p] for p in model.parameters() if p in opt.sorted_inits},
        "groups": opt.param_groups,
        "inner_groups": opt.optimizer.param_groups,
        "groups_copy": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
    }


def assert_unchanged(model, opt, snap):
    assert opt.step_count == snap["step"]
    assert opt.param_groups is snap["groups"] and opt.optimizer.param_groups is snap["inner_groups"]
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == snap[
        "groups_copy"
    ]
    now_S = {p: opt.sorted_inits[p] for p in model.parameters() if p in opt.sorted_inits}
    assert list(now_S) == list(snap["S"])
    for p in now_S:
        assert now_S[p] is snap["S"][p]  # the very same tensors
    for name, t in model.state_dict().items():
        assert_bitwise_equal(t, snap["model"][name], name)
    sd, old = opt.state_dict(), snap["opt"]
    assert sd["param_groups"] == old["param_groups"]
    assert sd["state"].keys() == old["state"].keys()
    for i, st in sd["state"].items():
        assert st.keys() == old["state"][i].keys()
        for key, v in st.items():
            assert_bitwise_equal(v, old["state"][i][key], f"state[{i}][{key}]")


@pytest.mark.parametrize("with_scheduler", [False, True])
def test_resume_is_bit_identical(with_scheduler):
    ref_model = mlp(seed=0)
    ref_opt, ref_sched = build(ref_model, with_scheduler)
    train(ref_model, ref_opt, ref_sched, FIRST + SECOND)

    model = mlp(seed=0)
    opt, sched = build(model, with_scheduler)
    train(model, opt, sched, FIRST)
    ckpt = {"model": model.state_dict(), "opt": opt.state_dict()}
    if sched is not None:
        ckpt["sched"] = sched.state_dict()
    ckpt = roundtrip(ckpt)
    assert [g["laperm_step"] for g in ckpt["opt"]["param_groups"]] == [FIRST]
    assert sorted(i for i, st in ckpt["opt"]["state"].items() if "sorted_init" in st) == [0, 2]
    del model, opt, sched

    # A fresh process, in effect: another init (so its own S differs), then the checkpoint.
    model = mlp(seed=123)
    opt, sched = build(model, with_scheduler)
    fresh_S = opt.sorted_inits[model[0].weight].clone()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    if sched is not None:
        sched.load_state_dict(ckpt["sched"])
    assert opt.step_count == FIRST
    assert opt.param_groups is opt.optimizer.param_groups  # schedulers still reach Adam
    assert not torch.equal(opt.sorted_inits[model[0].weight], fresh_S)
    train(model, opt, sched, SECOND, start=FIRST + 1)

    assert_same_training_state(model, opt, ref_model, ref_opt)
    if with_scheduler:  # lr halved every 10 steps: 70 steps -> 1e-2 / 2**7
        assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 2**7)


def test_resume_reaches_the_same_syncs():
    """Not vacuous: a run resumed without LaPerm's state (fresh S, counter at 0) differs."""
    ref_model = mlp(seed=0)
    ref_opt, _ = build(ref_model)
    train(ref_model, ref_opt, None, FIRST + SECOND)

    model = mlp(seed=0)
    opt, _ = build(model)
    train(model, opt, None, FIRST)
    inner_only = roundtrip(opt.optimizer.state_dict())
    weights = roundtrip(model.state_dict())
    model = mlp(seed=123)
    model.load_state_dict(weights)
    opt, _ = build(model)  # S taken from trained weights, step count 0
    opt.optimizer.load_state_dict(inner_only)
    train(model, opt, None, SECOND, start=FIRST + 1)
    assert not torch.equal(model[0].weight, ref_model[0].weight)


def test_state_dict_contents():
    model = mlp(seed=0)
    opt, _ = build(model)
    S0 = opt.sorted_inits[model[0].weight].clone()
    train(model, opt, None, 3)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}  # torch.optim's layout
    [group] = sd["param_groups"]
    assert group["laperm_step"] == 3 and group["params"] == [0, 1, 2, 3]
    assert group["laperm_shapes"] == [[32, 20], [32], [10, 32], [10]]
    assert group["lr"] == 1e-2
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "sorted_init"}
    assert set(sd["state"][1]) == {"step", "exp_avg", "exp_avg_sq"}  # a bias: not permuted
    assert_bitwise_equal(sd["state"][0]["sorted_init"], S0)
    assert "sorted_init" not in opt.optimizer.state[model[0].weight]  # merged into a copy
    assert "laperm_step" not in opt.param_groups[0]


def test_earlier_layout_still_loads():
    """Checkpoints of versions before 0.2: {"inner": ..., "laperm": {...}}."""
    model = mlp(seed=0)
    opt, _ = build(model)
    train(model, opt, None, FIRST)
    sd = opt.state_dict()
    earlier = {
        "inner": {
            "state": {
                i: {k: v for k, v in st.items() if k != "sorted_init"}
                for i, st in sd["state"].items()
            },
            "param_groups": [
                {k: v for k, v in g.items() if k not in ("laperm_step", "laperm_shapes")}
                for g in sd["param_groups"]
            ],
        },
        "laperm": {
            "step": FIRST,
            "sorted_inits": {
                i: st["sorted_init"] for i, st in sd["state"].items() if "sorted_init" in st
            },
            "param_shapes": [tuple(p.shape) for p in model.parameters()],
        },
    }
    earlier = roundtrip({"model": model.state_dict(), "opt": earlier})
    resumed = mlp(seed=5)
    resumed.load_state_dict(earlier["model"])
    ropt, _ = build(resumed)
    ropt.load_state_dict(earlier["opt"])
    _continues_like_uninterrupted(resumed, ropt, FIRST)
    bad = copy.deepcopy(earlier["opt"])
    bad["laperm"]["param_shapes"][0] = (16, 20)
    with pytest.raises(ValueError, match=r"parameter 0 has shape \(16, 20\)"):
        ropt.load_state_dict(bad)


def _trained_other_model():
    """A checkpoint of a different model with as many parameters: 16 hidden units."""
    other = mlp(seed=9, hidden=16)
    opt, _ = build(other)
    train(other, opt, None, 3)
    return roundtrip(opt.state_dict())


def _continues_like_uninterrupted(model, opt, steps_done):
    """After a refused load, training goes on exactly as if nothing had been tried."""
    ref_model = mlp(seed=0)
    ref_opt, _ = build(ref_model)
    train(ref_model, ref_opt, None, steps_done + 10)
    train(model, opt, None, 10, start=steps_done + 1)
    assert_same_training_state(model, opt, ref_model, ref_opt)


def test_mismatched_shapes_raise_and_change_nothing():
    model = mlp(seed=0)
    opt, _ = build(model)
    train(model, opt, None, 10)
    snap = snapshot(model, opt)
    bad = _trained_other_model()
    assert len(bad["param_groups"][0]["params"]) == 4  # same count, other shapes
    with pytest.raises(ValueError, match=r"shape \(16, 20\).*\(32, 20\)"):
        opt.load_state_dict(bad)
    assert_unchanged(model, opt, snap)
    _continues_like_uninterrupted(model, opt, 10)


def test_more_parameters_raise_and_change_nothing():
    model = mlp(seed=0)
    opt, _ = build(model)
    train(model, opt, None, 10)
    snap = snapshot(model, opt)

    torch.manual_seed(4)
    deeper = nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10), nn.ReLU(), nn.Linear(10, 10)
    )
    deeper_opt = lk.LaPerm(torch.optim.Adam(deeper.parameters()), K)
    with pytest.raises(ValueError, match="param group 0 has 6 parameters, this optimizer's has 4"):
        opt.load_state_dict(deeper_opt.state_dict())
    assert_unchanged(model, opt, snap)

    # Same shapes for every permuted weight, but one more (1-D) parameter: the saved
    # parameter shapes refuse it, still before anything changed.
    torch.manual_seed(0)
    extra = mlp(seed=0)
    extra.register_parameter("scale", nn.Parameter(torch.ones(3)))
    extra_opt = lk.LaPerm(torch.optim.Adam(extra.parameters()), K)
    with pytest.raises(ValueError):
        opt.load_state_dict(extra_opt.state_dict())
    assert_unchanged(model, opt, snap)
    _continues_like_uninterrupted(model, opt, 10)


def test_wrong_keys_raise_and_change_nothing():
    model = mlp(seed=0)
    opt, _ = build(model)
    train(model, opt, None, 4)
    snap = snapshot(model, opt)
    good = opt.state_dict()
    group = good["param_groups"][0]
    S = good["state"][0]["sorted_init"]
    plain = opt.optimizer.state_dict()  # an Adam state dict alone loads (a test below)
    bad_dicts = [
        {**plain, "state": {**plain["state"], 0: {**plain["state"][0], "sorted_init": S}}},
        {},
        {"state": good["state"]},
        {"param_groups": good["param_groups"]},
        {"state": [], "param_groups": good["param_groups"]},
        {**good, "param_groups": [{**group, "laperm_step": "four"}]},
        {**good, "param_groups": [{**group, "laperm_step": -1}]},
        {**good, "param_groups": [{k: v for k, v in group.items() if k != "laperm_shapes"}]},
        {**good, "param_groups": [None]},
        {**good, "state": {**good["state"], 7: {}}},  # a parameter no group lists
        {**good, "state": {**good["state"], 0: None}},
        {**good, "state": {**good["state"], 0: {**good["state"][0], "sorted_init": "S"}}},
        {
            **good,
            "state": {**good["state"], 0: {**good["state"][0], "sorted_init": torch.zeros(32, 21)}},
        },
        {"inner": good, "laperm": None},  # the earlier layout, broken
    ]
    for bad in bad_dicts:
        with pytest.raises((ValueError, TypeError), match="checkpoint|load_state_dict"):
            opt.load_state_dict(bad)
        assert_unchanged(model, opt, snap)
    with pytest.raises(ValueError):
        opt.load_state_dict([good])
    assert_unchanged(model, opt, snap)
    opt.load_state_dict(good)  # and the good one still loads
    assert opt.step_count == 4


def test_a_checkpoint_of_the_inner_optimizer_alone_loads_with_a_warning():
    """A run of Adam alone, resumed under LaPerm: its state loads into the inner Adam, S
    is taken from the current weights, the step counter starts at 0 (as if LaPerm were
    built on the resumed weights and given the Adam state)."""
    adam_model = mlp(seed=0)
    adam = torch.optim.Adam(adam_model.parameters(), lr=1e-2)
    for t in range(1, FIRST + 1):
        x, y = batch(t)
        adam.zero_grad()
        F.cross_entropy(adam_model(x), y).backward()
        adam.step()
    ckpt = roundtrip({"model": adam_model.state_dict(), "opt": adam.state_dict()})

    ref_model = mlp(seed=123)
    ref_model.load_state_dict(ckpt["model"])
    ref_opt, _ = build(ref_model)  # S from the resumed weights
    ref_opt.optimizer.load_state_dict(copy.deepcopy(ckpt["opt"]))

    model = mlp(seed=123)
    opt, _ = build(model)  # S from this model's own init, until the load
    model.load_state_dict(ckpt["model"])
    with pytest.warns(UserWarning, match=r"no 'laperm_shapes'.*current weights.*starts at 0"):
        opt.load_state_dict(ckpt["opt"])
    assert opt.step_count == 0 and opt.param_groups is opt.optimizer.param_groups
    assert set(opt.sorted_inits) == {model[0].weight, model[2].weight}
    for p in opt.sorted_inits:
        assert_bitwise_equal(opt.sorted_inits[p], lk.sort_rows(p.detach()), "S")
    train(model, opt, None, SECOND, start=FIRST + 1)
    train(ref_model, ref_opt, None, SECOND, start=FIRST + 1)
    assert_same_training_state(model, opt, ref_model, ref_opt)


def test_an_inner_checkpoint_that_does_not_fit_raises_and_changes_nothing():
    model = mlp(seed=0)
    opt, _ = build(model)
    train(model, opt, None, 4)
    snap = snapshot(model, opt)
    torch.manual_seed(4)
    deeper = nn.Sequential(nn.Linear(20, 32), nn.Linear(32, 10), nn.Linear(10, 10))
    with pytest.raises(ValueError, match="doesn't match the size"):  # torch.optim's check
        opt.load_state_dict(torch.optim.Adam(deeper.parameters()).state_dict())
    assert_unchanged(model, opt, snap)


def test_load_pre_hooks_get_a_shallow_copy():
    """As torch.optim's: a hook that replaces a key changes the copy, not the caller's."""
    model = mlp(seed=0)
    opt, _ = build(model)
    train(model, opt, None, 2)
    sd = opt.state_dict()
    groups, given = sd["param_groups"], []

    def halve_lr(optimizer, state_dict):
        given.append(state_dict)
        state_dict["param_groups"] = [{**g, "lr": g["lr"] / 2} for g in state_dict["param_groups"]]

    opt.register_load_state_dict_pre_hook(halve_lr)
    opt.load_state_dict(sd)
    assert given[0] is not sd and sd["param_groups"] is groups
    assert opt.param_groups[0]["lr"] == groups[0]["lr"] / 2


def test_scheduler_reaches_inner_optimizer_after_load():
    """Regression: Optimizer.load_state_dict rebinds the inner param_groups; the wrapper
    must share the new list, or an LR scheduler on the wrapper silently stops working."""
    model = mlp(seed=0)
    opt, _ = build(model)
    train(model, opt, None, 2)
    sd = opt.state_dict()
    model2 = mlp(seed=0)
    opt2, _ = build(model2)
    opt2.load_state_dict(sd)
    sched = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.1)
    train(model2, opt2, sched, 1)
    assert opt2.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_mismatched_1d_parameter_is_refused():
    # a skipped (1-D) parameter has no sorted_init: the saved shapes must catch it
    def make(n):
        torch.manual_seed(0)
        m = nn.Linear(20, 32, bias=False)
        m.register_parameter("scale", nn.Parameter(torch.ones(n)))
        opt = lk.LaPerm(torch.optim.Adam(m.parameters()), K)
        opt.zero_grad()
        (m(torch.randn(4, 20)).sum() + m.scale.sum()).backward()
        opt.step()
        return m, opt

    (a, opt_a), (_, opt_b) = make(5), make(7)
    snap = snapshot(a, opt_a)
    try:
        opt_a.load_state_dict(opt_b.state_dict())
    except ValueError:
        assert_unchanged(a, opt_a, snap)
        return
    raise AssertionError("a checkpoint with a (7,) parameter loaded into a (5,) one")
