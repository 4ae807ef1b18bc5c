"""torch.optim's conformance checks, run on LaPerm around every optimizer of torch's own
table of optimizers under test (``optim_db``, tests/optim/torch_optim_db.py).

Each optimizer is wrapped as ``LaPerm(Inner(params, **kwargs), **config)`` in two
configurations: nothing permuted with a sync period longer than any test (LaPerm must then
be the inner optimizer, hook for hook and bit for bit), and the default permute rule with
a sync after every step. The checks are this project's own, written after what torch's
test/test_optim.py checks of every optimizer (that file is not in the wheel): what a step
computes, step hooks (global and per instance: once per step, in torch's order), state
dict round trips and state dict hooks, deepcopy, pickle and torch.save with and without an
LR scheduler attached, steps over meta tensors and without gradients, and the table's error
inputs. Where LaPerm is stricter than torch.optim on purpose (docs/optimizer.md, "Where
LaPerm is stricter"), the check asserts LaPerm's own error instead.

Each optimizer's first ``optim_inputs`` entry ("default") runs the structural checks;
every CPU entry runs the step and state-dict round-trip checks.
"""

from __future__ import annotations

import copy
import io
import pickle
from dataclasses import dataclass
from typing import Callable, Dict, List

import pytest
import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal
from tests.optim import torch_optim_db

OPTIM_DB = torch_optim_db.load()
pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Config:
    name: str
    kwargs: Dict
    permutes: Callable[[torch.Tensor], bool]  # which parameters LaPerm permutes under it


CONFIGS = [
    Config("unpermuted", {"permute": False, "sync_period": 10**9}, lambda p: False),
    Config("default-k1", {"sync_period": 1}, lambda p: p.dim() >= 2),
]
CONFIG = pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
INFOS = pytest.mark.parametrize("info", OPTIM_DB, ids=lambda i: i.name)


def _inputs(info) -> list:
    return info.optim_inputs_func("cpu")


INPUTS = pytest.mark.parametrize(
    "info,index",
    [(info, i) for info in OPTIM_DB for i in range(len(_inputs(info)))],
    ids=[f"{info.name}-{x.desc}" for info in OPTIM_DB for x in _inputs(info)],
)


def test_importing_the_table_left_the_rest_of_the_suite_alone():
    assert not torch.backends.flags_frozen()  # torch.backends.cudnn.benchmark = ... works
    assert torch._C.ScriptFunction.__call__.__name__ == "__call__"
    assert torch._C.ScriptMethod.__call__.__name__ == "__call__"


# --- the model: two parameters, a loss, the optimizers ------------------------------------


def make_params(info, device: str = "cpu") -> List[nn.Parameter]:
    """A weight (permuted under the default rule) and a bias; Muon takes 2-D ones only."""
    shapes = [(4, 3), (3, 2)] if info.name == "Muon" else [(4, 3), (4,)]
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes]


def twins(params) -> List[nn.Parameter]:
    return [nn.Parameter(p.detach().clone()) for p in params]


def closure_of(info, params) -> Callable[[], torch.Tensor]:
    """The closure of the loss sum((p - t)^2) / 2 for fixed targets t: sets each gradient to
    p - t (sparse where the optimizer takes only sparse gradients), returns the loss."""
    targets = [torch.linspace(-1, 1, p.numel(), device=p.device).reshape(p.shape) for p in params]

    def closure():
        for p, t in zip(params, targets):
            grad = p.detach() - t
            p.grad = grad.to_sparse() if info.only_supports_sparse_grads else grad
        return sum(((p.detach() - t).square().sum() for p, t in zip(params, targets))) / 2

    return closure


def build(info, config: Config, params, kwargs) -> lk.LaPerm:
    return lk.LaPerm(info.optim_cls(params, **copy.deepcopy(kwargs)), **config.kwargs)


class Definition:
    """What ``LaPerm(inner, **config)`` computes, written out: the inner step, then, where
    the configuration syncs (after every step), each permuted parameter rank-matched to
    its rows' sorted values when this was made."""

    def __init__(self, inner, config: Config) -> None:
        self.inner = inner
        params = [p for g in inner.param_groups for p in g["params"]]
        self.sorted = [(p, lk.sort_rows(p.detach())) for p in params if config.permutes(p)]

    def step(self, closure) -> None:
        self.inner.step(closure)
        with torch.no_grad():
            for p, s in self.sorted:
                lk.rank_match_(p, s)


def assert_same(a, b, where: str = "state dict") -> None:
    """``a`` and ``b`` hold the same: dicts, lists and tuples alike, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        if a.is_floating_point():
            assert_bitwise_equal(a, b, where)
        else:
            assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a!r} != {b!r}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_params_equal(params, others, what: str) -> None:
    for p, q in zip(params, others):
        assert_bitwise_equal(p.detach(), q.detach(), what)


# --- what a step computes -------------------------------------------------------------------


@CONFIG
@INPUTS
def test_steps_compute_what_the_definition_does(info, index, config):
    kwargs = _inputs(info)[index].kwargs
    params, reference_params = make_params(info), make_params(info)
    opt = build(info, config, params, kwargs)
    reference = Definition(info.optim_cls(reference_params, **copy.deepcopy(kwargs)), config)
    closure, reference_closure = closure_of(info, params), closure_of(info, reference_params)
    for t in range(3):
        opt.step(closure)
        reference.step(reference_closure)
        assert_params_equal(params, reference_params, f"after step {t + 1}")
    assert_same(opt.optimizer.state_dict(), reference.inner.state_dict(), "inner state")


# --- step hooks ------------------------------------------------------------------------------


@CONFIG
@INFOS
def test_step_hooks_fire_once_per_step_around_the_whole_step(info, config):
    params = make_params(info)
    opt = build(info, config, params, _inputs(info)[0].kwargs)
    calls = []

    def record(name):
        def hook(optimizer, args, kwargs):
            synced = all(
                torch.equal(lk.sort_rows(p.detach()), s) for p, s in opt.sorted_inits.items()
            )
            calls.append((name, type(optimizer).__name__, synced))

        return hook

    handles = [
        register_optimizer_step_pre_hook(record("global pre")),
        register_optimizer_step_post_hook(record("global post")),
        opt.register_step_pre_hook(record("pre")),
        opt.register_step_post_hook(record("post")),
        opt.optimizer.register_step_pre_hook(record("inner pre")),
        opt.optimizer.register_step_post_hook(record("inner post")),
    ]
    closure = closure_of(info, params)
    try:
        opt.step(closure)
        opt.step(closure)
    finally:
        for handle in handles:
            handle.remove()
    opt.step(closure)  # no hook runs once removed
    # the wrapper's and the global hooks see the LaPerm around the inner step and the
    # sync (the weights synced where a sync runs); the inner optimizer's own, itself
    # around its own step, before the sync
    inner = info.name
    unsynced_is_synced = not opt.sorted_inits  # vacuously, where nothing is permuted
    one_step = [
        ("global pre", "LaPerm", True),
        ("pre", "LaPerm", True),
        ("inner pre", inner, True),
        ("inner post", inner, unsynced_is_synced),
        ("post", "LaPerm", True),
        ("global post", "LaPerm", True),
    ]
    assert calls == one_step * 2


@CONFIG
@INFOS
def test_a_step_pre_hook_may_replace_the_arguments(info, config):
    params = make_params(info)
    opt = build(info, config, params, _inputs(info)[0].kwargs)
    closure, calls = closure_of(info, params), []

    def counted():
        calls.append(1)
        return closure()

    opt.register_step_pre_hook(lambda optimizer, args, kwargs: (args, {"closure": counted}))
    opt.step()
    assert calls and opt.step_count == 1


# --- state dicts -------------------------------------------------------------------------------


@CONFIG
@INPUTS
def test_state_dict_round_trip_continues_alike(info, index, config):
    kwargs = _inputs(info)[index].kwargs
    params = make_params(info)
    opt = build(info, config, params, kwargs)
    closure = closure_of(info, params)
    for _ in range(2):
        opt.step(closure)
    saved = opt.state_dict()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    kept = copy.deepcopy(loaded)
    twin_params = twins(params)
    twin = build(info, config, twin_params, kwargs)
    twin.load_state_dict(loaded)
    assert_same(loaded, kept, "the loaded dict, after loading")  # left as it was
    assert twin.step_count == 2
    assert_same(twin.state_dict(), saved)
    twin_closure = closure_of(info, twin_params)
    for _ in range(2):
        opt.step(closure)
        twin.step(twin_closure)
    assert_params_equal(twin_params, params, "after resuming")
    assert_same(twin.state_dict(), opt.state_dict())


@CONFIG
@INFOS
def test_a_checkpoint_with_plain_number_steps_loads(info, config):
    kwargs = _inputs(info)[0].kwargs
    params = make_params(info)
    opt = build(info, config, params, kwargs)
    opt.step(closure_of(info, params))
    saved = copy.deepcopy(opt.state_dict())  # its entries are the live state's
    for entry in saved["state"].values():
        if isinstance(entry.get("step"), torch.Tensor):
            entry["step"] = entry["step"].item()
    twin_params = twins(params)
    twin = build(info, config, twin_params, kwargs)
    twin.load_state_dict(saved)
    opt.step(closure_of(info, params))
    twin.step(closure_of(info, twin_params))
    assert_params_equal(twin_params, params, "after a step")


@CONFIG
@INFOS
def test_a_checkpoint_of_the_inner_optimizer_alone_loads(info, config):
    kwargs = _inputs(info)[0].kwargs
    inner_params = make_params(info)
    inner = info.optim_cls(inner_params, **copy.deepcopy(kwargs))
    for _ in range(2):
        inner.step(closure_of(info, inner_params))
    params = twins(inner_params)  # the model's weights, loaded before the optimizer
    opt = build(info, config, params, kwargs)
    with pytest.warns(UserWarning, match="no 'laperm_shapes'.*current weights"):
        opt.load_state_dict(copy.deepcopy(inner.state_dict()))  # (its tensors are live)
    assert opt.step_count == 0
    assert_same(opt.optimizer.state_dict(), inner.state_dict(), "inner state")
    reference = Definition(inner, config)  # S from the current weights
    for _ in range(2):
        opt.step(closure_of(info, params))
        reference.step(closure_of(info, inner_params))
    assert_params_equal(params, inner_params, "after resuming")


@CONFIG
@INFOS
def test_state_dict_hooks_run_as_torchs(info, config):
    params = make_params(info)
    opt = build(info, config, params, _inputs(info)[0].kwargs)
    opt.step(closure_of(info, params))
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append(("pre", o)))
    opt.register_state_dict_pre_hook(lambda o: calls.append(("pre first", o)), prepend=True)
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "replaced": True})
    opt.register_state_dict_post_hook(lambda o, sd: sd.update(changed=True))  # in place
    saved = opt.state_dict()
    assert calls == [("pre first", opt), ("pre", opt)]
    assert saved["replaced"] and saved["changed"]
    emptied = opt.register_state_dict_post_hook(lambda o, sd: {})  # what a hook returns
    assert opt.state_dict() == {}
    emptied.remove()

    twin = build(info, config, twins(params), _inputs(info)[0].kwargs)
    seen = []

    def rename_groups(o, sd):  # changes the dict it is given: a copy of the caller's
        seen.append(sd)
        sd["param_groups"] = [{**g, "lr": 0.125} for g in sd["param_groups"]]

    twin.register_load_state_dict_pre_hook(rename_groups)
    twin.register_load_state_dict_pre_hook(lambda o, sd: seen.append("first"), prepend=True)
    twin.register_load_state_dict_pre_hook(lambda o, sd: {**sd, "state": dict(sd["state"])})
    twin.register_load_state_dict_post_hook(lambda o: seen.append(o.step_count))
    groups = saved["param_groups"]
    twin.load_state_dict(saved)
    assert seen[0] == "first" and seen[1] is not saved and seen[2] == 1
    assert saved["param_groups"] is groups  # the caller's dict is left alone
    assert [g["lr"] for g in twin.param_groups] == [0.125] * len(groups)


# --- copies ------------------------------------------------------------------------------------


def _attach_schedulers(info, opt) -> list:
    return [make(opt) for make in info.scheduler_inputs[0]]


def _public(opt) -> set:
    return {k for k in vars(opt) if not k.startswith("_")}


def _skip_unless_torchs_copy_steps(info) -> None:
    """Skips where a copy of the bare inner optimizer cannot step either (LBFGS: its
    __getstate__ leaves out the ``_params`` its step reads)."""
    params = make_params(info)
    bare = copy.deepcopy(info.optim_cls(params, **copy.deepcopy(_inputs(info)[0].kwargs)))
    twin_params = [p for g in bare.param_groups for p in g["params"]]
    try:
        bare.step(closure_of(info, twin_params))
    except AttributeError as e:
        pytest.skip(f"a copy of torch's {info.name} cannot step: {e}")


@CONFIG
@INFOS
@pytest.mark.parametrize("scheduled", [False, True], ids=["", "scheduled"])
def test_a_deepcopy_is_independent(info, config, scheduled):
    params = make_params(info)
    opt = build(info, config, params, _inputs(info)[0].kwargs)
    if scheduled:
        _attach_schedulers(info, opt)
    opt.step(closure_of(info, params))
    twin = copy.deepcopy(opt)
    assert _public(twin) == _public(opt) - {"step"}  # the scheduler's patch is not copied
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    assert all(q is not p for q, p in zip(twin_params, params))
    _skip_unless_torchs_copy_steps(info)
    before = [p.detach().clone() for p in params]
    twin.step(closure_of(info, twin_params))
    assert_params_equal(params, before, "the original, after the copy's step")
    assert (opt.step_count, twin.step_count) == (1, 2)
    opt.step(closure_of(info, params))
    assert_params_equal(twin_params, params, "after a step each")


@CONFIG
@INFOS
@pytest.mark.parametrize("scheduled", [False, True], ids=["", "scheduled"])
@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_pickled_copy_trains_alike(info, config, scheduled, how):
    params = make_params(info)
    opt = build(info, config, params, _inputs(info)[0].kwargs)
    if scheduled:
        _attach_schedulers(info, opt)
    opt.step(closure_of(info, params))
    if how == "pickle":
        twin = pickle.loads(pickle.dumps(opt))
    else:
        buffer = io.BytesIO()
        torch.save(opt, buffer)
        buffer.seek(0)
        twin = torch.load(buffer, weights_only=False)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    assert twin.param_groups is twin.optimizer.param_groups and twin.state is twin.optimizer.state
    _skip_unless_torchs_copy_steps(info)
    opt.step(closure_of(info, params))
    twin.step(closure_of(info, twin_params))
    assert_params_equal(twin_params, params, "after a step each")
    assert_same(twin.state_dict(), opt.state_dict())


# --- meta tensors, missing gradients ------------------------------------------------------


def _outcome(make, info) -> object:
    """None if two steps of ``make(params on meta)`` run, else the error's type and text."""
    params = make_params(info, "meta")
    try:
        opt = make(params)
        for _ in range(2):
            opt.step(closure_of(info, params))
    except Exception as e:  # any error: compared with torch's
        return type(e), str(e)
    return None


META = [
    (info, impl)
    for info in OPTIM_DB
    for impl in ("default", "fused")
    if impl == "default" or ("fused" in info.supported_impls and "cpu" in info.supports_fused_on)
]


@CONFIG
@pytest.mark.parametrize("info,impl", META, ids=[f"{i.name}-{impl}" for i, impl in META])
def test_steps_on_meta_tensors_go_as_torchs(info, impl, config):
    kwargs = {**_inputs(info)[0].kwargs, **({"fused": True} if impl == "fused" else {})}
    expected = _outcome(lambda ps: info.optim_cls(ps, **copy.deepcopy(kwargs)), info)
    if impl == "fused":  # torch refuses fused steps over meta tensors: so must LaPerm
        assert expected is not None and "fused" in expected[1]
    assert _outcome(lambda ps: build(info, config, ps, kwargs), info) == expected


@CONFIG
@INFOS
def test_a_step_without_gradients_changes_no_weight(info, config):
    params = make_params(info)
    before = [p.detach().clone() for p in params]
    opt = build(info, config, params, _inputs(info)[0].kwargs)
    opt.step(lambda: torch.tensor(0.0))
    assert_params_equal(params, before, "after a step without gradients")
    assert opt.step_count == 1


# --- error inputs ------------------------------------------------------------------------------


def _error_inputs(info) -> list:
    make = info.optim_error_inputs_func
    return make("cpu", torch.float32) if make is not None else []


ERRORS = [(info, i) for info in OPTIM_DB for i in range(len(_error_inputs(info)))]


def _stricter(config: Config, params):
    """LaPerm's own (error type, pattern) for ``params``, where it refuses them before
    torch.optim would (docs/optimizer.md): a permuted parameter listed twice in a group,
    or of a dtype rank matching does not take. None where it leaves them to torch."""
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    for group in groups:
        listed = group["params"]
        listed = [listed] if isinstance(listed, torch.Tensor) else list(listed)
        tensors = [q[1] if isinstance(q, tuple) else q for q in listed]
        permuted = [p for p in tensors if config.permutes(p)]
        if any(sum(q is p for q in tensors) > 1 for p in permuted):
            return ValueError, "lists .* twice"
        if any(not p.is_floating_point() for p in permuted):
            return TypeError, "rank matching needs a floating dtype"
    return None


@CONFIG
@pytest.mark.parametrize(
    "info,index",
    ERRORS,
    ids=[f"{i.name}-{_error_inputs(i)[k].optimizer_error_input.desc}" for i, k in ERRORS],
)
def test_error_inputs_raise_as_with_torch(info, index, config):
    from torch.testing._internal.common_optimizers import OptimizerErrorEnum

    error = _error_inputs(info)[index]
    given = error.optimizer_error_input
    params = given.params if given.params is not None else make_params(info)
    stricter = _stricter(config, params) if isinstance(params, list) else None

    def make():
        return build(info, config, params, given.kwargs)

    if error.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR:
        if issubclass(error.error_type, Warning):
            with pytest.warns(error.error_type, match=error.error_regex):
                if stricter is None:
                    make()
                else:
                    with pytest.raises(stricter[0], match=stricter[1]):
                        make()
        else:
            with pytest.raises(error.error_type, match=error.error_regex):
                make()
        return
    if stricter is not None:  # refused at construction already
        with pytest.raises(stricter[0], match=stricter[1]):
            make()
        return
    opt = make()
    with pytest.raises(error.error_type, match=error.error_regex):
        opt.step()
