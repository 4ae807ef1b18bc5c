"""The LaPerm optimizer wrapper (laperm_kernels.optim.LaPerm).

The behavioural reference is the paper's official code: after the inner step, whenever
``step % k == 0``, every permuted weight is rank-matched to its sorted initial rows S;
the inner optimizer's state is kept. ``test_matches_plain_reimplementation`` holds the
wrapper to a plain re-implementation of exactly that, bit for bit, on every backend; the
other tests pin down what is permuted, when, and the torch.optim plumbing.

Checkpoints are in test_optim_checkpoint.py, GradScaler in test_optim_amp.py.
"""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import laperm_kernels as lk
from laperm_kernels.ops.reference import rank_match_reference_
from tests import helpers
from tests.helpers import BACKENDS, assert_bitwise_equal

# Tiny models: one thread is fastest, and immune to a busy neighbour on the
# same cores. Results do not depend on the thread count (docs/contract.md).
pytestmark = pytest.mark.usefixtures("one_thread")


# --- helpers ----------------------------------------------------------------------------

mlp = functools.partial(helpers.mlp, sizes=(20, 32, 10))  # seed, act: this module's MLP


class TinyCNN(nn.Module):
    """Conv2d(1, 4, 3) on 8x8 inputs, then Linear: 4-D and 2-D weights, two biases."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x.view(-1, 1, 8, 8))).flatten(1))


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyCNN()


class NormNet(nn.Module):
    """Linear weights (2-D) beside biases and LayerNorm parameters (1-D)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 16)
        self.norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))


def norm_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return NormNet()


IN_FEATURES = {"mlp": 20, "cnn": 64}
MODELS = {"mlp": mlp, "cnn": tiny_cnn}


def batches(n: int, in_features: int = 20, seed: int = 1, size: int = 16):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, in_features, generator=g), torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


def train_step(model, opt, x, y, **step_kwargs):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step(**step_kwargs)
    return loss


def reference_sort(w: torch.Tensor) -> torch.Tensor:
    """S as the reference algorithm takes it: stable sort of the rows, in W's shape."""
    return w.detach().reshape(w.shape[0], -1).sort(dim=1, stable=True).values.reshape(w.shape)


def is_permutation_of(w: torch.Tensor, s: torch.Tensor) -> bool:
    """Whether every row of ``w`` sorts exactly to the same row of ``s``."""
    rows = w.detach().reshape(w.shape[0], -1) if w.dim() > 1 else w.detach().reshape(1, -1)
    return torch.equal(rows.sort(dim=1).values, s.reshape(rows.shape))


def inner(name: str, params, lr=None):
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-2 if lr is None else lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=5e-2 if lr is None else lr, momentum=0.9)
    raise ValueError(name)


# --- 1. bit-for-bit equivalence with a plain re-implementation --------------------------


@BACKENDS
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("inner_name", ["adam", "sgd"])
@pytest.mark.parametrize("k", [20, 7])
def test_matches_plain_reimplementation(backend, model_name, inner_name, k):
    steps = 200
    model = MODELS[model_name](seed=0)
    ref_model = copy.deepcopy(model)
    opt = lk.LaPerm(inner(inner_name, model.parameters()), sync_period=k, backend=backend)
    ref_opt = inner(inner_name, ref_model.parameters())
    ref_S = {name: reference_sort(p) for name, p in ref_model.named_parameters() if p.dim() >= 2}
    assert len(ref_S) == 2

    # The wrapper's S equals the reference's.
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            assert_bitwise_equal(opt.sorted_inits[p], ref_S[name], f"S of {name}")
        else:
            assert p not in opt.sorted_inits

    data = batches(steps, IN_FEATURES[model_name], seed=1)
    syncs_that_moved = 0
    for t, (x, y) in enumerate(data, start=1):
        train_step(model, opt, x, y)
        train_step(ref_model, ref_opt, x, y)
        if t % k == 0:
            for name, p in ref_model.named_parameters():
                if p.dim() >= 2:
                    before = p.detach().clone()
                    rank_match_reference_(p.data, ref_S[name])
                    syncs_that_moved += not torch.equal(before, p.detach())
        assert opt.step_count == t
        for (name, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters()):
            assert_bitwise_equal(p.detach(), q.detach(), f"{name} after step {t}")
            if t % k == 0 and p.dim() >= 2:
                assert is_permutation_of(p, ref_S[name]), f"{name} after sync at step {t}"

    # The comparison is not vacuous: the syncs changed the weights, and the inner state
    # (carried across all syncs) is the same too.
    assert syncs_that_moved >= steps // k
    for p, q in zip(model.parameters(), ref_model.parameters()):
        st, rst = opt.optimizer.state[p], ref_opt.state[q]
        assert set(st) == set(rst)
        for key in st:
            if isinstance(st[key], torch.Tensor):
                assert_bitwise_equal(st[key], rst[key], f"inner state {key}")
            else:
                assert st[key] == rst[key]


def test_laperm_differs_from_plain_training():
    """A control for the equivalence test: the syncs matter (weights differ from plain Adam)."""
    model, plain = mlp(0), mlp(0)
    opt = lk.LaPerm(inner("adam", model.parameters()), sync_period=5)
    plain_opt = inner("adam", plain.parameters())
    for x, y in batches(20):
        train_step(model, opt, x, y)
        train_step(plain, plain_opt, x, y)
    assert not torch.equal(model[0].weight, plain[0].weight)


# --- 2. what is permuted, and when ------------------------------------------------------


def test_default_permutes_weights_only_and_leaves_1d_params_free():
    model = norm_net()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=5e-2), sync_period=3)
    permuted = {n for n, p in model.named_parameters() if p in opt.sorted_inits}
    assert permuted == {"fc1.weight", "fc2.weight"}
    one_d = [n for n, p in model.named_parameters() if p.dim() == 1]
    assert set(one_d) == {"fc1.bias", "norm.weight", "norm.bias", "fc2.bias"}
    for t, (x, y) in enumerate(batches(12), start=1):
        train_step(model, opt, x, y)
        for n, p in model.named_parameters():
            s = reference_sort(init[n]) if p.dim() >= 2 else init[n].sort().values
            if p.dim() >= 2:
                assert is_permutation_of(p, s) == (t % 3 == 0), (n, t)
            else:  # never put back to a permutation of its initial values: it trains freely
                assert not is_permutation_of(p, s), (n, t)
                assert not torch.equal(p.detach(), init[n]), (n, t)


def test_permute_true_includes_1d_params():
    model = norm_net()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=5e-2), sync_period=3, permute=True)
    assert all(p in opt.sorted_inits for p in model.parameters())
    for t, (x, y) in enumerate(batches(6), start=1):
        train_step(model, opt, x, y)
        for n, p in model.named_parameters():
            s = reference_sort(init[n]) if p.dim() >= 2 else init[n].sort().values
            assert is_permutation_of(p, s) == (t % 3 == 0), (n, t)
    # LayerNorm's weight starts all ones: a permutation of it is all ones again.
    assert torch.equal(model.norm.weight.detach(), torch.ones(16))


def test_permute_false_is_plain_inner_optimizer():
    model, plain = norm_net(), norm_net()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=5e-2), sync_period=2, permute=False)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=5e-2)
    assert not any(p in opt.sorted_inits for p in model.parameters())
    for x, y in batches(6):
        train_step(model, opt, x, y)
        train_step(plain, plain_opt, x, y)
    opt.sync()  # nothing to permute: a no-op
    for p, q in zip(model.parameters(), plain.parameters()):
        assert_bitwise_equal(p.detach(), q.detach())


def test_permute_predicate():
    model = mlp(act=nn.Tanh)
    w0, w2 = model[0].weight, model[2].weight
    s0, s2 = reference_sort(w0), reference_sort(w2)
    seen = []

    def only_first_layer(p):
        seen.append(p)
        return p.shape == (32, 20)

    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), 2, permute=only_first_layer)
    assert len(seen) == 4  # asked about every parameter, once
    assert [p for p in model.parameters() if p in opt.sorted_inits] == [w0]
    for x, y in batches(4):
        train_step(model, opt, x, y)
    assert is_permutation_of(w0, s0)
    assert not is_permutation_of(w2, s2)


def test_permute_per_param_group():
    model = norm_net()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = [
        {"params": [model.fc1.weight, model.fc1.bias], "permute": False},
        {"params": [model.norm.weight, model.norm.bias]},  # wrapper's rule: True below
        {"params": [model.fc2.weight, model.fc2.bias], "permute": "auto"},
    ]
    opt = lk.LaPerm(torch.optim.Adam(groups, lr=5e-2), sync_period=2, permute=True)
    permuted = {n for n, p in model.named_parameters() if p in opt.sorted_inits}
    assert permuted == {"norm.weight", "norm.bias", "fc2.weight"}
    for x, y in batches(4):
        train_step(model, opt, x, y)
    for n, p in model.named_parameters():
        s = reference_sort(init[n]) if p.dim() >= 2 else init[n].sort().values
        assert is_permutation_of(p, s) == (n in permuted), n


def test_sync_period_per_param_group():
    model = mlp(act=nn.Tanh)
    groups = [
        {"params": model[0].parameters(), "sync_period": 2},
        {"params": model[2].parameters()},
    ]  # the wrapper's sync_period
    opt = lk.LaPerm(torch.optim.Adam(groups, lr=1e-2), sync_period=3)
    w0, w2 = model[0].weight, model[2].weight
    s0, s2 = reference_sort(w0), reference_sort(w2)
    synced0, synced2 = [], []
    for t, (x, y) in enumerate(batches(12), start=1):
        train_step(model, opt, x, y)
        if is_permutation_of(w0, s0):
            synced0.append(t)
        if is_permutation_of(w2, s2):
            synced2.append(t)
    assert synced0 == [2, 4, 6, 8, 10, 12]
    assert synced2 == [3, 6, 9, 12]


def test_callable_sync_period_schedule():
    model = mlp(act=nn.Tanh)
    asked = []

    def schedule(step):
        asked.append(step)
        return 2 if step < 10 else 5

    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=schedule)
    w0, w2 = model[0].weight, model[2].weight
    s0, s2 = reference_sort(w0), reference_sort(w2)
    synced = []
    for t, (x, y) in enumerate(batches(26), start=1):
        train_step(model, opt, x, y)
        both = is_permutation_of(w0, s0), is_permutation_of(w2, s2)
        assert both[0] == both[1], t
        if both[0]:
            synced.append(t)
    assert synced == [2, 4, 6, 8, 10, 15, 20, 25]
    assert sorted(set(asked)) == list(range(1, 27))  # called with the 1-based step count


# --- 3. syncs, state, and the torch.optim plumbing --------------------------------------


@BACKENDS
def test_invariant_after_every_sync(backend):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 3, 3),
        nn.Tanh(),
        nn.Conv2d(3, 5, 3, bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 10),
    )
    weights = [p for p in model.parameters() if p.dim() >= 2]
    S = [reference_sort(p) for p in weights]
    opt = lk.LaPerm(torch.optim.AdamW(model.parameters(), lr=3e-2), 4, backend=backend)
    for t, (x, y) in enumerate(batches(16, 64), start=1):
        train_step(model, opt, x, y)
        for p, s in zip(weights, S):
            assert is_permutation_of(p, s) == (t % 4 == 0), t


def test_inner_state_kept_across_syncs():
    model = mlp(act=nn.Tanh)
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = lk.LaPerm(adam, sync_period=3)
    snapshots = {}

    def after_inner_step(optimizer, args, kwargs):  # before LaPerm's sync
        snapshots.clear()
        snapshots.update(
            {p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()}
        )

    adam.register_step_post_hook(after_inner_step)
    for t, (x, y) in enumerate(batches(9), start=1):
        train_step(model, opt, x, y)
        for p in model.parameters():
            st = adam.state[p]
            assert float(st["step"]) == t  # never reset
            assert st["exp_avg"].abs().sum() > 0
            for key, v in snapshots[p].items():  # the sync left the inner state alone
                assert_bitwise_equal(st[key], v, f"{key} at step {t}")


def test_sync_forces_a_sync_now():
    model = mlp(act=nn.Tanh)
    w0 = model[0].weight
    s0 = reference_sort(w0)
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=100)
    for x, y in batches(3):
        train_step(model, opt, x, y)
    assert not is_permutation_of(w0, s0)
    before = w0.detach().clone()
    opt.sync()
    assert is_permutation_of(w0, s0)
    assert_bitwise_equal(w0.detach(), rank_match_reference_(before, s0))
    assert opt.step_count == 3
    assert w0.grad_fn is None  # still a leaf


def test_reset_sorted_init_retakes_S():
    model = mlp(act=nn.Tanh)
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=2)
    old_s0 = opt.sorted_inits[model[0].weight].clone()
    with torch.no_grad():
        torch.manual_seed(5)
        nn.init.uniform_(model[0].weight, -3, 3)
        nn.init.uniform_(model[2].weight, -3, 3)
    new_s0, new_s2 = reference_sort(model[0].weight), reference_sort(model[2].weight)
    old_s2 = opt.sorted_inits[model[2].weight].clone()

    opt.reset_sorted_init_([model[0].weight])  # only the tensors given
    assert_bitwise_equal(opt.sorted_inits[model[0].weight], new_s0)
    assert_bitwise_equal(opt.sorted_inits[model[2].weight], old_s2)
    opt.reset_sorted_init_()  # all of them
    assert_bitwise_equal(opt.sorted_inits[model[2].weight], new_s2)
    assert not torch.equal(old_s0, new_s0)
    for x, y in batches(2):
        train_step(model, opt, x, y)
    assert is_permutation_of(model[0].weight, new_s0)
    assert is_permutation_of(model[2].weight, new_s2)
    assert model[0].bias not in opt.sorted_inits


def test_add_param_group_snapshots_and_permutes_new_params():
    model = mlp(act=nn.Tanh)
    torch.manual_seed(3)
    head = nn.Linear(10, 4)
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=2)
    s_head = reference_sort(head.weight)
    opt.add_param_group({"params": head.parameters(), "sync_period": 3})
    assert opt.param_groups is opt.optimizer.param_groups and len(opt.param_groups) == 2
    assert_bitwise_equal(opt.sorted_inits[head.weight], s_head)
    assert head.bias not in opt.sorted_inits
    assert opt.param_groups[1]["lr"] == 1e-2  # inner defaults filled in
    full = nn.Sequential(model, nn.Tanh(), head)
    synced = []
    for t, (x, y) in enumerate(batches(6), start=1):
        opt.zero_grad()
        F.cross_entropy(full(x), y % 4).backward()
        opt.step()
        if is_permutation_of(head.weight, s_head):
            synced.append(t)
    assert synced == [3, 6]
    # A bad group is refused before it is added.
    with pytest.raises(ValueError, match="sync_period"):
        opt.add_param_group({"params": [nn.Parameter(torch.randn(3, 3))], "sync_period": 0})
    assert len(opt.param_groups) == 2


def test_track_changes_counts_changed_positions():
    model = mlp(act=nn.Tanh)
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=0.5), sync_period=3, track_changes=True)
    assert opt.last_sync_changes == {}
    weights = {0: model[0].weight, 2: model[2].weight}  # keys: index among all params
    last = {i: p.detach().clone() for i, p in weights.items()}
    for t, (x, y) in enumerate(batches(9), start=1):
        train_step(model, opt, x, y)
        if t % 3:
            continue
        assert set(opt.last_sync_changes) == {0, 2}
        for i, p in weights.items():
            count = opt.last_sync_changes[i]
            assert isinstance(count, int) and 0 < count <= p.numel()
            assert count == int((p.detach() != last[i]).sum())
            last[i] = p.detach().clone()
    # With lr 0 nothing moves: the next sync changes nothing.
    for g in opt.param_groups:
        g["lr"] = 0.0
    for x, y in batches(3):
        train_step(model, opt, x, y)
    assert opt.last_sync_changes == {0: 0, 2: 0}


def test_track_changes_off_records_nothing():
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=0.5), sync_period=1)
    for x, y in batches(2):
        train_step(model, opt, x, y)
    assert opt.last_sync_changes == {}
    assert opt._last_synced == {}


def test_zero_grad_delegates():
    model = mlp()
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1), 2)
    x, y = batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    calls = []
    opt.optimizer.zero_grad = lambda set_to_none=True: calls.append(set_to_none)
    opt.zero_grad(set_to_none=False)
    assert calls == [False]


def _step_order_warnings(records):
    return [
        str(w.message)
        for w in records
        if "lr_scheduler" in str(w.message) or "optimizer.step()" in str(w.message)
    ]


def test_lr_scheduler_on_the_wrapper():
    model = mlp()
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    opt = lk.LaPerm(adam, sync_period=2)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        lrs = []
        for x, y in batches(6):
            train_step(model, opt, x, y)
            sched.step()
            lrs.append(adam.param_groups[0]["lr"])
    assert _step_order_warnings(records) == []
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025, 0.0125])
    assert sched.get_last_lr() == pytest.approx([0.0125])
    assert opt.step_count == 6


def test_lr_scheduler_warning_check_is_live():
    """Control for the test above: the same check does catch a wrong step order."""
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=0.1), sync_period=2)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        sched.step()  # before any opt.step()
    assert _step_order_warnings(records)


def test_step_with_closure():
    data = batches(6)
    model, ref = mlp(), mlp()
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 3)
    ref_opt = lk.LaPerm(torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), 3)
    for x, y in data:

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = opt.step(closure)
        expected = train_step(ref, ref_opt, x, y)
        assert isinstance(loss, torch.Tensor) and torch.equal(loss, expected)
    assert opt.step_count == 6
    for p, q in zip(model.parameters(), ref.parameters()):
        assert_bitwise_equal(p.detach(), q.detach())
    # An inner optimizer that needs the closure (several evaluations per step).
    model = mlp(act=nn.Tanh)
    s0 = reference_sort(model[0].weight)
    opt = lk.LaPerm(torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3), sync_period=2)
    x, y = data[0]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    first = opt.step(closure)
    assert not is_permutation_of(model[0].weight, s0)
    opt.step(closure)
    assert is_permutation_of(model[0].weight, s0)
    assert torch.isfinite(first)


def test_step_hooks_on_the_wrapper_run():
    """Hooks registered on the wrapper run around the whole step: the post hook sees the
    weights after the sync, the pre hook sees the step count before the step."""
    model = mlp(act=nn.Tanh)
    s0 = reference_sort(model[0].weight)
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=2)
    calls = []
    pre = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o.step_count)))
    post = opt.register_step_post_hook(
        lambda o, a, k: calls.append(("post", o.step_count, is_permutation_of(model[0].weight, s0)))
    )
    for x, y in batches(2):
        train_step(model, opt, x, y)
    assert calls == [("pre", 0), ("post", 1, False), ("pre", 1), ("post", 2, True)]
    pre.remove()
    post.remove()
    train_step(model, opt, *batches(1)[0])
    assert len(calls) == 4


def test_global_step_hooks_run_once_per_step_with_the_wrapper():
    """torch.optim's global step hooks see one step per opt.step(), the LaPerm's, around
    the inner step and the sync; the inner optimizer's own hooks run around its step."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    model = mlp(act=nn.Tanh)
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = lk.LaPerm(adam, sync_period=1)
    s0 = reference_sort(model[0].weight)
    calls = []

    def record(name):
        return lambda o, a, k: calls.append((name, o, is_permutation_of(model[0].weight, s0)))

    handles = [
        register_optimizer_step_pre_hook(record("global pre")),
        register_optimizer_step_post_hook(record("global post")),
        adam.register_step_pre_hook(record("inner pre")),
        adam.register_step_post_hook(record("inner post")),
    ]
    try:
        train_step(model, opt, *batches(1)[0])
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [
        ("global pre", opt, True),
        ("inner pre", adam, True),
        ("inner post", adam, False),  # before the sync
        ("global post", opt, True),
    ]


def test_global_step_hooks_are_kept_through_an_inner_step_that_raises_or_adds_one():
    from torch.optim.optimizer import register_optimizer_step_post_hook

    model = mlp(act=nn.Tanh)
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = lk.LaPerm(adam, sync_period=1)
    calls, handles = [], []
    handles.append(register_optimizer_step_post_hook(lambda o, a, k: calls.append("first")))

    def add_a_global_hook(o, a, k):  # registers one while the inner step runs
        if len(handles) == 1:
            handles.append(register_optimizer_step_post_hook(lambda o, a, k: calls.append("new")))

    adam.register_step_pre_hook(add_a_global_hook)

    def failing_closure():
        raise RuntimeError("closure failed")

    try:
        with pytest.raises(RuntimeError, match="closure failed"):
            opt.step(failing_closure)
        assert opt.step_count == 0 and len(handles) == 2
        train_step(model, opt, *batches(1)[0])
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["first", "new"]


def test_repr_and_param_groups_shared():
    model = mlp()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt = lk.LaPerm(adam, sync_period=7)
    assert opt.param_groups is adam.param_groups
    assert isinstance(opt, torch.optim.Optimizer)
    r = repr(opt)
    assert "sync_period=7" in r and "permuted_tensors=2" in r and "Adam" in r


# --- 6. bad arguments -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, False, "x", None, 20.0])
def test_bad_sync_period(bad):
    model = mlp()
    with pytest.raises(ValueError, match="sync_period"):
        lk.LaPerm(torch.optim.Adam(model.parameters()), sync_period=bad)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "x"])
def test_bad_sync_period_in_param_group(bad):
    model = mlp()
    inner_opt = torch.optim.Adam([{"params": model.parameters(), "sync_period": bad}])
    with pytest.raises(ValueError, match="sync_period"):
        lk.LaPerm(inner_opt)


@pytest.mark.parametrize("bad", ["sometimes", "all", 1, None, 0.5])
def test_bad_permute(bad):
    model = mlp()
    with pytest.raises(ValueError, match="permute"):
        lk.LaPerm(torch.optim.Adam(model.parameters()), permute=bad)
    inner_opt = torch.optim.Adam([{"params": model.parameters(), "permute": bad}])
    with pytest.raises(ValueError, match="permute"):
        lk.LaPerm(inner_opt)


def test_non_optimizer_rejected():
    model = mlp()
    for bad in (list(model.parameters()), model, torch.optim.Adam, None, {"lr": 1}):
        with pytest.raises(TypeError, match="torch.optim.Optimizer"):
            lk.LaPerm(bad)


@pytest.mark.parametrize("bad_k", [0, -2, 1.5, True])
def test_callable_sync_period_returning_bad_k_raises_at_that_step(bad_k):
    model = mlp()
    opt = lk.LaPerm(
        torch.optim.Adam(model.parameters()), sync_period=lambda step: bad_k if step == 3 else 2
    )
    data = batches(3)
    train_step(model, opt, *data[0])
    train_step(model, opt, *data[1])
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"sync_period.*step 3"):
        train_step(model, opt, *data[2])
    # raised before the inner step: nothing moved, the step was not counted
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert opt.step_count == 2


def test_unknown_backend_rejected():
    model = mlp()
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        lk.LaPerm(torch.optim.Adam(model.parameters()), 1, backend="nope")
    with pytest.raises(TypeError, match="backend"):
        lk.LaPerm(torch.optim.Adam(model.parameters()), 1, backend=None)
