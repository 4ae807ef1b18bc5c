"""LaPerm checkpoints: resuming continues bit for bit; a wrong checkpoint changes nothing.

The state dict holds the inner optimizer's state, LaPerm's step counter (syncs are
scheduled by it) and the sorted initial rows S (which cannot be recomputed from the
weights once training has moved them).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
import torch.nn.functional as F

import laperm_kernels as lk

from conftest import assert_bitwise_equal

K = 7          # sync period: syncs at 7..28 before the checkpoint, 35..70 after it
FIRST = 30     # steps before the checkpoint (not a sync step)
SECOND = 40    # steps after it


# Tiny models: one thread is fastest, and immune to a busy neighbour on the
# same cores. Results do not depend on the thread count (docs/contract.md).
pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed: int, hidden: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def batch(t: int):
    """Batch number ``t``, the same whichever run asks for it."""
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(16, 20, generator=g), torch.randint(0, 10, (16,), generator=g)


def build(model, with_scheduler=False):
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=K)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5) if with_scheduler else None
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
        assert ("sorted_init" in opt.state.get(p, {})) == ("sorted_init" in ref_opt.state.get(q, {}))
        if "sorted_init" in opt.state.get(p, {}):
            assert_bitwise_equal(opt.state[p]["sorted_init"], ref_opt.state[q]["sorted_init"], "S")
    for g, rg in zip(opt.optimizer.param_groups, ref_opt.optimizer.param_groups):
        assert g["lr"] == rg["lr"]


def snapshot(model, opt):
    """Everything a failed load must leave alone, deep-copied."""
    return {"model": copy.deepcopy(model.state_dict()),
            "opt": copy.deepcopy(opt.state_dict()),
            "step": opt.step_count,
            "S": {p: opt.state[p]["sorted_init"] for p in model.parameters()
                  if "sorted_init" in opt.state.get(p, {})},
            "groups": opt.param_groups,
            "inner_groups": opt.optimizer.param_groups,
            "groups_copy": [{k: v for k, v in g.items() if k != "params"}
                            for g in opt.param_groups]}


def assert_unchanged(model, opt, snap):
    assert opt.step_count == snap["step"]
    assert opt.param_groups is snap["groups"] and opt.optimizer.param_groups is snap["inner_groups"]
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == \
        snap["groups_copy"]
    now_S = {p: opt.state[p]["sorted_init"] for p in model.parameters()
             if "sorted_init" in opt.state.get(p, {})}
    assert list(now_S) == list(snap["S"])
    for p in now_S:
        assert now_S[p] is snap["S"][p]  # the very same tensors
    for name, t in model.state_dict().items():
        assert_bitwise_equal(t, snap["model"][name], name)
    sd, old = opt.state_dict(), snap["opt"]
    assert sd["laperm"]["step"] == old["laperm"]["step"]
    assert sd["laperm"]["sorted_inits"].keys() == old["laperm"]["sorted_inits"].keys()
    for i, s in sd["laperm"]["sorted_inits"].items():
        assert_bitwise_equal(s, old["laperm"]["sorted_inits"][i], f"sorted_inits[{i}]")
    assert sd["inner"]["param_groups"] == old["inner"]["param_groups"]
    assert sd["inner"]["state"].keys() == old["inner"]["state"].keys()
    for i, st in sd["inner"]["state"].items():
        for key, v in st.items():
            assert_bitwise_equal(v, old["inner"]["state"][i][key], f"inner state[{i}][{key}]")


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
    assert ckpt["opt"]["laperm"]["step"] == FIRST
    assert sorted(ckpt["opt"]["laperm"]["sorted_inits"]) == [0, 2]  # the two weights
    del model, opt, sched

    # A fresh process, in effect: another init (so its own S differs), then the checkpoint.
    model = mlp(seed=123)
    opt, sched = build(model, with_scheduler)
    fresh_S = opt.state[model[0].weight]["sorted_init"].clone()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    if sched is not None:
        sched.load_state_dict(ckpt["sched"])
    assert opt.step_count == FIRST
    assert opt.param_groups is opt.optimizer.param_groups  # schedulers still reach Adam
    assert not torch.equal(opt.state[model[0].weight]["sorted_init"], fresh_S)
    train(model, opt, sched, SECOND, start=FIRST + 1)

    assert_same_training_state(model, opt, ref_model, ref_opt)
    if with_scheduler:  # lr halved every 10 steps: 70 steps -> 1e-2 / 2**7
        assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 2 ** 7)


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
    S0 = opt.state[model[0].weight]["sorted_init"].clone()
    train(model, opt, None, 3)
    sd = opt.state_dict()
    assert set(sd) == {"inner", "laperm"}
    assert sd["laperm"]["step"] == 3
    assert_bitwise_equal(sd["laperm"]["sorted_inits"][0], S0)
    assert set(sd["inner"]) == {"state", "param_groups"}


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
    assert len(bad["inner"]["param_groups"][0]["params"]) == 4  # same count, other shapes
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
    deeper = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10), nn.ReLU(),
                           nn.Linear(10, 10))
    deeper_opt = lk.LaPerm(torch.optim.Adam(deeper.parameters()), K)
    with pytest.raises(ValueError, match="checkpoint is of 6 parameters, this optimizer has 4"):
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
    bad_dicts = [
        opt.optimizer.state_dict(),                       # a plain Adam state dict
        {},
        {"inner": good["inner"]},
        {"inner": good["inner"], "laperm": good["laperm"], "extra": 1},
        {"inner": good["inner"], "laperm": {"step": 4}},  # no sorted_inits
        {"inner": good["inner"], "laperm": {"sorted_inits": good["laperm"]["sorted_inits"]}},
        {"inner": good["inner"], "laperm": {**good["laperm"], "step": "four"}},
        {"inner": good["inner"], "laperm": {**good["laperm"], "step": -1}},
        {"inner": good["inner"], "laperm": None},
    ]
    for bad in bad_dicts:
        with pytest.raises(ValueError, match="load_state_dict"):
            opt.load_state_dict(bad)
        assert_unchanged(model, opt, snap)
    with pytest.raises(ValueError):
        opt.load_state_dict([good])
    assert_unchanged(model, opt, snap)
    opt.load_state_dict(good)  # and the good one still loads
    assert opt.step_count == 4


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
