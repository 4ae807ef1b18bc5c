"""CUDA graph capture, as the op layer sees it, on CPU tensors: a stand-in backend with a
plan cache, and capture made to look on (``graph_capture.capturing``). A captured call
builds nothing: every plan and staging buffer it needs comes from an eager call with the
same tensors, and a miss raises ``NotPreparedForCapture`` before any tensor is touched.
The real backends under a real capture: tests/cuda_backend/test_graph_capture_gpu.py.
"""

from __future__ import annotations

import types

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels import backends, dispatch, graph_capture, staging
from laperm_kernels.backends.plan_cache import PlanCache
from laperm_kernels.graph_capture import NotPreparedForCapture
from tests.helpers import FakeClock, assert_bitwise_equal, generator, make_sorted_init, make_values


@pytest.fixture
def planned(monkeypatch, tmp_path):
    """A backend "planned" for CPU tensors whose ``prepare`` and ``run`` go through a plan
    cache, as the GPU backends' do; counts the plans it builds and the groups it runs. In
    auto's trial it takes no time and the reference a second a tensor: it wins."""
    monkeypatch.setenv("LAPERM_CACHE_DIR", str(tmp_path / "cache"))
    clock = FakeClock()
    monkeypatch.setattr(dispatch, "DeviceTimer", clock.timer)
    reference = dispatch.rank_match_reference_

    def slow_reference(w, s):
        clock.advance(1.0)
        return reference(w, s)

    monkeypatch.setattr(dispatch, "rank_match_reference_", slow_reference)
    monkeypatch.setattr(staging, "_buffers", PlanCache(8, what="a staging buffer"))
    cache = PlanCache(8, what="a test plan")
    built, ran = [], []

    def plan(ws, ss):
        return cache.get((ws[0].dtype,), ws, ss, lambda: built.append(len(ws)) or object())

    def run(ws, ss):
        plan(ws, ss)
        ran.append(len(ws))
        backends.BACKENDS["torch"].run(ws, ss)

    module = types.SimpleNamespace(
        name="planned",
        is_available=lambda: True,
        unavailable_reason=lambda: "",
        supports=lambda device, dtype: device.type == "cpu",
        prepare=plan,
        run=run,
        built=built,
        ran=ran,
    )
    monkeypatch.setitem(backends.BACKENDS, "planned", module)
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ["planned", "torch"])
    dispatch.reset()
    yield module
    dispatch.reset()


@pytest.fixture
def capture(monkeypatch):
    def set_capturing(on):
        monkeypatch.setattr(graph_capture, "capturing", lambda device: on)

    return set_capturing


def _group(seed=0):
    """A float32 weight that is not contiguous (a channels_last-like transpose) and a
    float64 one: two groups, one needing a staging buffer."""
    gen = generator(seed)
    ws = [
        make_values("normal", (9, 6), torch.float32, gen).t(),
        make_values("normal", (4, 7), torch.float64, gen),
    ]
    ss = [make_sorted_init(tuple(w.shape), w.dtype, gen) for w in ws]
    return ws, ss


def _expected(ws, ss):
    out = [w.clone() for w in ws]
    for o, s in zip(out, ss):
        lk.rank_match_(o, s, backend="torch")
    return out


def test_a_capture_after_an_eager_call_builds_nothing(planned, capture):
    ws, ss = _group()
    lk.rank_match_many_(ws, ss, backend="planned")  # eager: plans and the staging buffer
    built = len(planned.built)
    for w, fresh in zip(ws, _group(seed=1)[0]):  # new values, same tensors
        w.copy_(fresh)
    want = _expected(ws, ss)
    capture(True)
    lk.rank_match_many_(ws, ss, backend="planned")
    assert len(planned.built) == built  # the non-contiguous weight included
    for i, (w, e) in enumerate(zip(ws, want)):
        assert_bitwise_equal(w, e, f"tensor {i}")


def test_a_capture_missing_a_plan_changes_nothing(planned, capture):
    ws, ss = _group()
    lk.rank_match_many_(ws[:1], ss[:1], backend="planned")  # only the first group planned
    before = [w.clone() for w in ws]
    capture(True)
    with pytest.raises(NotPreparedForCapture, match="a test plan.*outside the capture"):
        lk.rank_match_many_(ws, ss, backend="planned")
    for w, b in zip(ws, before):  # the first group too: all or nothing
        assert_bitwise_equal(w, b, "untouched")
    assert planned.ran == [1]


def test_a_capture_of_a_non_contiguous_weight_needs_its_staging_buffer(planned, capture):
    ws, ss = _group()
    capture(True)
    with pytest.raises(NotPreparedForCapture, match="staging buffer"):
        lk.rank_match_many_(ws, ss, backend="planned")
    assert planned.built == [] and planned.ran == []


def test_a_decision_from_disk_does_not_let_a_capture_plan(planned, capture):
    # A fresh process that loads auto's decision from disk and captures first: the
    # decision is there, the plan is not.
    ws, ss = _group()
    lk.rank_match_many_(ws, ss)  # the trial, saved to disk
    assert {d["backend"] for d in lk.dispatch_report()} == {"planned"}
    dispatch.reset()  # what a new process knows
    fresh, fresh_inits = _group(seed=2)
    fresh[0] = fresh[0].contiguous()  # no staging buffer needed: the plan
    before = [w.clone() for w in fresh]
    capture(True)
    with pytest.raises(NotPreparedForCapture, match="a test plan"):
        lk.rank_match_many_(fresh, fresh_inits)
    for w, b in zip(fresh, before):
        assert_bitwise_equal(w, b, "untouched")
    assert [d["source"] for d in lk.dispatch_report()] == ["disk cache"] * 2


def test_no_trial_runs_in_a_capture(planned, capture):
    ws, ss = _group()
    capture(True)
    with pytest.raises(NotPreparedForCapture, match="backend='auto''s choice"):
        lk.rank_match_many_(ws, ss)
    assert planned.ran == []


def test_laperm_row_dim_1_syncs_capture_after_one_eager_sync(planned, capture):
    # GPT-2's Conv1D and ConvTranspose weights (row_dim=1) are synced through a transposed,
    # non-contiguous view: its staging buffer must be the one the eager sync used.
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose1d(4, 6, 3)
    opt = lk.LaPerm(
        torch.optim.SGD([{"params": [layer.weight], "row_dim": 1}], lr=0.1),
        sync_period=1,
        backend="planned",
        check_finite=False,
    )
    opt.sync()
    built = len(planned.built)
    with torch.no_grad():
        layer.weight.mul_(-1.5)
    want = layer.weight.detach().movedim(1, 0).clone()
    lk.rank_match_(want, opt.sorted_inits[layer.weight], backend="torch")
    capture(True)
    opt.sync()
    assert len(planned.built) == built
    assert_bitwise_equal(layer.weight.detach().movedim(1, 0), want, "synced weight")
