"""CUDA graph capture, as the op layer and LaPerm see it, on CPU tensors: a stand-in backend
with a plan cache, and capture made to look on by the strict stand-in
(tests/strict_capture.py: host reads, event queries, synchronises and uploads raise). A
captured call builds nothing: every plan and staging buffer it needs comes from an eager
call with the same tensors, and a miss raises ``NotPreparedForCapture`` before any tensor
is touched. LaPerm's captured steps run with its defaults (``check_finite=True``) and with
``track_changes=True``. The real backends under a real capture:
tests/cuda_backend/test_graph_capture_gpu.py.
"""

from __future__ import annotations

import types
import warnings

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops import backends, dispatch, staging
from laperm_kernels.ops.backends.plan_cache import PlanCache
from laperm_kernels.ops.graph_capture import NotPreparedForCapture
from laperm_kernels.optim.finite_check import FiniteCheck
from tests.helpers import FakeClock, assert_bitwise_equal, generator, make_sorted_init, make_values
from tests.strict_capture import CaptureViolation, StandInEvent, strict_capture


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
    monkeypatch.setattr(staging, "_buffers", PlanCache(8, what="staging buffer"))
    cache = PlanCache(8, what="test plan")
    built, ran = [], []

    def plan(ws, ss):
        return cache.get((ws[0].dtype,), ws, ss, lambda: built.append(len(ws)) or object())

    def run(ws, ss):
        plan(ws, ss)
        ran.append(len(ws))
        backends.BACKENDS["torch"].run(ws, ss)

    def prepare(ws, ss):
        plan(ws, ss)
        return lambda: run(ws, ss)

    module = types.SimpleNamespace(
        name="planned",
        is_available=lambda: True,
        unavailable_reason=lambda: "",
        supports=lambda device, dtype: device.type == "cpu",
        prepare=prepare,
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
    """``with capture():`` runs its block under the strict stand-in of a capture."""
    return lambda: strict_capture(monkeypatch)


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
    with capture():
        lk.rank_match_many_(ws, ss, backend="planned")
    assert len(planned.built) == built  # the non-contiguous weight included
    for i, (w, e) in enumerate(zip(ws, want)):
        assert_bitwise_equal(w, e, f"tensor {i}")


def test_a_capture_missing_a_plan_changes_nothing(planned, capture):
    ws, ss = _group()
    lk.rank_match_many_(ws[:1], ss[:1], backend="planned")  # only the first group planned
    before = [w.clone() for w in ws]
    with capture(), pytest.raises(NotPreparedForCapture, match="a test plan.*outside the capture"):
        lk.rank_match_many_(ws, ss, backend="planned")
    for w, b in zip(ws, before):  # the first group too: all or nothing
        assert_bitwise_equal(w, b, "untouched")
    assert planned.ran == [1]


def test_a_capture_of_a_non_contiguous_weight_needs_its_staging_buffer(planned, capture):
    ws, ss = _group()
    with capture(), pytest.raises(NotPreparedForCapture, match="staging buffer"):
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
    with capture(), pytest.raises(NotPreparedForCapture, match="a test plan"):
        lk.rank_match_many_(fresh, fresh_inits)
    for w, b in zip(fresh, before):
        assert_bitwise_equal(w, b, "untouched")
    assert [d["source"] for d in lk.dispatch_report()] == ["disk cache"] * 2


def test_no_trial_runs_in_a_capture(planned, capture):
    ws, ss = _group()
    with capture(), pytest.raises(NotPreparedForCapture, match="backend='auto''s choice"):
        lk.rank_match_many_(ws, ss)
    assert planned.ran == []


@pytest.mark.parametrize("track_changes", [False, True])
def test_laperm_row_dim_1_syncs_capture_after_one_eager_sync(planned, capture, track_changes):
    # GPT-2's Conv1D and ConvTranspose weights (row_dim=1) are synced through a transposed,
    # non-contiguous view: its staging buffer must be the one the eager sync used.
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose1d(4, 6, 3)
    opt = lk.LaPerm(
        torch.optim.SGD([{"params": [layer.weight], "row_dim": 1}], lr=0.1),
        sync_period=1,
        backend="planned",
        track_changes=track_changes,
    )
    opt.sync()
    built = len(planned.built)
    with torch.no_grad():
        layer.weight.mul_(-1.5)
    want = layer.weight.detach().movedim(1, 0).clone()
    lk.rank_match_(want, opt.sorted_inits[layer.weight], backend="torch")
    with capture():
        opt.sync()
    assert len(planned.built) == built
    assert_bitwise_equal(layer.weight.detach().movedim(1, 0), want, "synced weight")


# --- LaPerm's captured step, with its defaults ---------------------------------------------


def _model_and_opt(backend="planned", **options):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.ReLU(), torch.nn.Linear(9, 3))
    opt = lk.LaPerm(
        torch.optim.SGD(model.parameters(), lr=0.1), sync_period=1, backend=backend, **options
    )
    return model, opt


def _train_step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    opt.zero_grad(set_to_none=False)
    model(torch.randn(5, 6, generator=g)).square().mean().backward()
    opt.step()


def _leave_a_check_in_flight(opt, value=1.0):
    """What an eager CUDA sync leaves with check_finite on: a check whose values are on
    their way to the host, with an event to poll (here one a capture may not query)."""
    opt._finite_check = FiniteCheck()
    host = torch.tensor([value, 2.0])
    opt._finite_check._pending = (opt.step_count, [(host.device, ["a", "b"], host, StandInEvent())])


@pytest.mark.parametrize("track_changes", [False, True])
def test_a_captured_step_with_the_defaults_reads_nothing_back(planned, capture, track_changes):
    # check_finite=True (the default) leaves a check in flight after every eager sync; the
    # captured step must not poll its event, and its warning comes at the next eager step.
    model, opt = _model_and_opt(track_changes=track_changes)
    for seed in range(2):  # warm-up: the first-step check, the trial, plans
        _train_step(model, opt, seed)
    _leave_a_check_in_flight(opt, value=float("nan"))
    with capture():
        _train_step(model, opt, 2)
    assert opt._finite_check.pending  # not read in the capture
    with pytest.warns(RuntimeWarning, match=r"a \(NaN\)"):
        _train_step(model, opt, 3)
    if track_changes:
        changes = opt.last_sync_changes
        assert set(changes) == {0, 2} and all(0 <= n <= 54 for n in changes.values())


def test_track_changes_counts_what_a_captured_sync_changed(planned, capture):
    # The counts live on the device and are written by the captured sync itself: after it,
    # they describe that sync (here: every position of a reversed weight moved but the
    # middle ones of odd rows).
    model, opt = _model_and_opt(track_changes=True)
    opt.sync()
    opt.sync()
    assert opt.last_sync_changes == {0: 0, 2: 0}
    with torch.no_grad():
        for i in (0, 2):
            model[i].weight.copy_(model[i].weight.flip(1))
    with capture():
        opt.sync()
    assert opt.last_sync_changes == {0: 9 * 6, 2: 3 * 9 - 3}


def test_the_first_step_check_waits_for_an_eager_step(planned, capture):
    # The first-step check reads each weight's fingerprint back: not in a capture.
    model, opt = _model_and_opt()
    permuted = [model[0].weight, model[2].weight]
    # the plans an eager sync would make (W with its own S stays W)
    lk.rank_match_many_(permuted, [opt.sorted_inits[p] for p in permuted], backend="planned")
    with capture():
        _train_step(model, opt, 0)
    assert opt._pending  # still to do
    with warnings.catch_warnings():  # the captured step changed the weights: S is taken again
        warnings.simplefilter("ignore", UserWarning)
        _train_step(model, opt, 1)
    assert not opt._pending


def test_more_than_64_non_contiguous_weights_fit_one_captured_graph(planned, capture, monkeypatch):
    # GPT-2 medium syncs 96 Conv1D weights (row_dim=1) through staging buffers: one graph
    # keeps one per weight, beyond the 64 a launch-plan cache keeps for graphs.
    monkeypatch.setattr(staging, "_buffers", staging.new_buffer_cache())  # as shipped
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(3, 5)) for _ in range(65)]
    opt = lk.LaPerm(
        torch.optim.SGD([{"params": weights, "row_dim": 1}], lr=0.1),
        sync_period=1,
        backend="planned",
    )
    opt.sync()
    with capture():
        opt.sync()
    assert staging._buffers.captured() == 65


def test_the_stand_in_is_in_force(planned, capture):
    ws, ss = _group()
    with capture():
        with pytest.raises(NotPreparedForCapture, match="a test plan|staging buffer"):
            lk.rank_match_many_(ws, ss, backend="planned")  # never seen: nothing to find
        with pytest.raises(CaptureViolation, match=r"Tensor\.item"):
            ws[1].sum().item()
        with pytest.raises(CaptureViolation, match="event query"):
            StandInEvent().query()
        with pytest.raises(CaptureViolation, match="pinned"):
            torch.empty(3, pin_memory=True)
        with pytest.raises(CaptureViolation, match="upload"):
            ws[1].to("meta")
    assert StandInEvent().query() and ws[1].sum().item() == ws[1].sum().item()


def test_a_host_read_in_a_captured_step_is_caught(planned, capture):
    # What the stand-in is for: a step that reads a value back (here a post-hook standing
    # for a re-introduced .item()) fails under it, naming the read.
    model, opt = _model_and_opt()
    _train_step(model, opt, 0)
    opt.register_step_post_hook(lambda *args: model[0].weight.abs().max().item())
    with capture(), pytest.raises(CaptureViolation, match=r"Tensor\.item"):
        _train_step(model, opt, 1)


def test_split_row_weights_are_refused_in_a_capture_before_any_collective(capture, monkeypatch):
    # Weights whose placements split their rows are moved whole by collectives into new
    # tensors at every sync: nothing a graph can keep. The refusal comes before the first
    # collective (whole_rows) and names the way out.
    from laperm_kernels.optim import sharded_rows

    monkeypatch.setattr(sharded_rows, "whole_row_placements", lambda p, row_dim: ("Shard(0)",))
    moved = []
    monkeypatch.setattr(sharded_rows, "whole_rows", lambda p, row_dim: moved.append(p))
    w = torch.randn(4, 6)
    with (
        capture(),
        pytest.raises(NotPreparedForCapture, match="split their rows.*outside the graph"),
    ):
        sharded_rows.sync_rows([(w, 0)])
    assert moved == []


def test_a_check_never_starts_in_a_capture(planned, capture):
    # A check started in a capture would queue its copy and event in the graph and be read
    # as if it were about the capture's step: a captured sync asks the ops for no max |x|.
    model, opt = _model_and_opt()
    for seed in range(2):  # warm-up; on the CPU each check is read at once
        _train_step(model, opt, seed)
    assert not opt._finite_check.pending
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with capture():
        assert not opt._finite_check.ready([model[0].weight])
        opt.sync()
    assert not opt._finite_check.pending
