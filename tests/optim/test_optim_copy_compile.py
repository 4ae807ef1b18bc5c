"""LaPerm copied (deepcopy, pickle) and compiled (torch.compile): twins train alike, and a
compiled training step compiles once: nothing more at later steps, syncs included."""

from __future__ import annotations

import copy
import functools
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import laperm_kernels as lk
from tests import helpers
from tests.helpers import assert_bitwise_equal

pytestmark = pytest.mark.usefixtures("one_thread")
K = 3


mlp = functools.partial(helpers.mlp, sizes=(12, 24, 5))  # seed: this module's MLP


def batch(t):
    g = torch.Generator().manual_seed(t)
    return torch.randn(8, 12, generator=g), torch.randint(0, 5, (8,), generator=g)


def step(model, opt, t):
    x, y = batch(t)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def train(model, opt, start, steps):
    for t in range(start, start + steps):
        step(model, opt, t)
    return [p.detach().clone() for p in model.parameters()]


def build(model):
    return lk.LaPerm(
        torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=K, track_changes=True
    )


def _assert_twins(model, opt, twin_model, twin_opt):
    assert twin_opt.step_count == opt.step_count
    assert twin_opt.param_groups is twin_opt.optimizer.param_groups
    assert twin_opt.state is twin_opt.optimizer.state
    twin_params = list(twin_model.parameters())
    assert twin_opt.param_groups[0]["params"] == twin_params  # the twin's own parameters
    assert set(twin_opt.sorted_inits) == {twin_params[0], twin_params[2]}
    for p, q in zip(model.parameters(), twin_params):
        assert q.data_ptr() != p.data_ptr()
        if p in opt.sorted_inits:
            assert_bitwise_equal(twin_opt.sorted_inits[q], opt.sorted_inits[p], "S")
    a = train(model, opt, 5, 2 * K + 1)
    b = train(twin_model, twin_opt, 5, 2 * K + 1)
    for x, y in zip(a, b):
        assert_bitwise_equal(x, y, "after training both")
    assert twin_opt.last_sync_changes == opt.last_sync_changes


def test_deepcopy_of_model_and_optimizer_trains_identically():
    model = mlp()
    opt = build(model)
    train(model, opt, 1, 4)  # mid-way between syncs, with Adam state
    twin_model, twin_opt = copy.deepcopy((model, opt))
    _assert_twins(model, opt, twin_model, twin_opt)


def test_pickled_model_and_optimizer_train_identically():
    model = mlp()
    opt = build(model)
    train(model, opt, 1, 4)
    twin_model, twin_opt = pickle.loads(pickle.dumps((model, opt)))
    _assert_twins(model, opt, twin_model, twin_opt)


def test_deepcopy_of_the_optimizer_alone_owns_its_parameters():
    model = mlp()
    opt = build(model)
    train(model, opt, 1, 2)
    twin = copy.deepcopy(opt)
    own = twin.param_groups[0]["params"]
    assert all(q is not p for q, p in zip(own, model.parameters()))
    for q, p in zip(own, model.parameters()):
        assert_bitwise_equal(q.detach(), p.detach(), "copied parameter")
    twin.sync()  # works on its own copies; the model is untouched
    train(model, opt, 3, 1)
    assert twin.step_count == 2 and opt.step_count == 3


def _after_a_scheduler_is_attached():
    model = mlp()
    opt = build(model)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # patches opt.step
    train(model, opt, 1, 4)
    return model, opt


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_a_copy_after_a_scheduler_is_attached_is_independent(how):
    model, opt = _after_a_scheduler_is_attached()
    if how == "deepcopy":
        twin_model, twin_opt = copy.deepcopy((model, opt))
    elif how == "pickle":
        twin_model, twin_opt = pickle.loads(pickle.dumps((model, opt)))
    else:
        buffer = io.BytesIO()
        torch.save((model, opt), buffer)
        buffer.seek(0)
        twin_model, twin_opt = torch.load(buffer, weights_only=False)
    assert "step" not in vars(twin_opt)  # the copy has no scheduler, as with torch.optim
    before = [p.detach().clone() for p in model.parameters()]
    step(twin_model, twin_opt, 5)
    for p, b in zip(model.parameters(), before):
        assert_bitwise_equal(p.detach(), b, "the original, after its copy's step")
    assert (opt.step_count, twin_opt.step_count) == (4, 5)


def test_hooks_are_not_copied_but_still_run_on_the_twin():
    model = mlp()
    opt = build(model)
    calls = []
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(o))
    twin_model, twin_opt = copy.deepcopy((model, opt))
    twin_opt.register_step_post_hook(lambda o, args, kwargs: calls.append(o))
    step(twin_model, twin_opt, 1)
    assert calls == [twin_opt]


# --- torch.compile -----------------------------------------------------------------------


def deep_mlp():
    # many parameters: a check that dynamo traced would recompile once per parameter
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(12, 12) for _ in range(10)])


def _counting_backend():
    from torch._dynamo.testing import CompileCounter

    # runs the captured graphs as they are (no code generation); frame_count counts them
    return CompileCounter()


def assert_compiles_once(calls, backend):
    """Runs ``calls`` (callables, each one call of a compiled function): the first one
    compiles, every later one must run what it compiled. The later ones run under the
    "fail_on_recompile" stance, which raises at any recompile (naming the guard that
    failed), and ``backend`` must receive no new graph. (Dynamo's
    counters["frames"]["total"] is no such measure: it also counts frames dynamo is handed
    and skips, such as typing's internals, which torch's own code runs whenever typing's
    LRU cache misses, so their number depends on what the process ran before.)"""
    first, *later = calls
    first()
    graphs = backend.frame_count
    assert graphs > 0, "nothing was compiled"
    with torch.compiler.set_stance("fail_on_recompile"):
        for call in later:
            call()
    assert backend.frame_count == graphs, f"{backend.frame_count - graphs} graphs more"


def _assert_synced(opt):
    """Every permuted row is a permutation of its sorted initial row."""
    for p, s in opt.sorted_inits.items():
        rows = p.detach().reshape(p.shape[0], -1).sort(dim=1).values
        assert torch.equal(rows, s.reshape(rows.shape))


def test_compiled_training_step_compiles_once():
    torch._dynamo.reset()
    model = deep_mlp()
    opt = build(model)
    initial = [p.detach().clone() for p in model.parameters()]
    backend = _counting_backend()

    @torch.compile(backend=backend)
    def compiled_step(x):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    xs = [batch(t)[0] for t in range(1, 4 * K + 1)]  # syncs after steps 3, 6, 9, 12
    assert_compiles_once([lambda x=x: compiled_step(x) for x in xs], backend)
    assert opt.step_count == 4 * K
    # (compiled Adam rounds differently from eager Adam: compare invariants, not bits)
    _assert_synced(opt)
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), initial))


def test_compiled_optimizer_step_compiles_once():
    # the form torch.compile(lambda: opt.step()), the backward outside it
    torch._dynamo.reset()
    model = deep_mlp()
    opt = build(model)
    backend = _counting_backend()
    compiled = torch.compile(lambda: opt.step(), backend=backend)

    def training_step(t):
        opt.zero_grad()
        model(batch(t)[0]).square().mean().backward()
        compiled()

    assert_compiles_once([lambda t=t: training_step(t) for t in range(1, 4 * K + 1)], backend)
    assert opt.step_count == 4 * K
    _assert_synced(opt)


def test_ops_called_in_a_compiled_region_do_not_recompile():
    torch._dynamo.reset()
    ws = [torch.randn(8, 30), torch.randn(4, 3, 3, 3), torch.randn(16)]
    ws += [torch.randn(5, 7) for _ in range(10)]
    ss = [lk.sort_rows(w) for w in ws]
    backend = _counting_backend()

    @torch.compile(backend=backend)
    def sync(ws, ss):
        lk.rank_match_many_(ws, ss)
        return ws[0].sum()

    def fresh_sync():
        for w in ws:
            w.copy_(torch.randn_like(w))
        sync(ws, ss)

    assert_compiles_once([fresh_sync] * 6, backend)
    with pytest.raises(ValueError, match=r"sorted_inits\[1\] has shape"):  # still validated
        sync(ws, [ss[0], ss[0], *ss[2:]])
