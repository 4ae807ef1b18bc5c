"""The GPU path under CUDA graph capture and under ``set_sync_debug_mode("error")``.

* A whole training step (forward, backward, Adam's step, a LaPerm sync) captured after
  warm-up steps and replayed is bit for bit the same as eager steps, for every GPU backend
  and ``auto``, a ``row_dim=1`` weight (a transposed view: a staging buffer) included,
  with LaPerm's defaults (``check_finite=True``) and with ``track_changes=True``; and with
  70 ``row_dim=1`` weights (70 staging buffers in one graph).
* The raw ``torch.ops.laperm.rank_match_many_`` refuses a capture, changing nothing; the
  planned op with a plan made before the capture replays.
* A steady-state sync never synchronises with the host, ``check_finite`` included; a
  NaN is still reported, a step or a few later.
* The Triton block kernel compiles once for any row count.

GPU only (skips without one); the same rules on the CPU with stand-in backends:
tests/ops/test_graph_capture.py and tests/optim/test_finite_check.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops import backends
from tests.helpers import assert_bitwise_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GPU_BACKENDS = ["cuda", "triton", "auto"]


def _needs(backend):
    if backend != "auto" and not backends.BACKENDS[backend].is_available():
        pytest.skip(f"{backend}: {backends.BACKENDS[backend].unavailable_reason()}")


class Net(torch.nn.Module):
    """A GPT-2-style projection stored [in, out] (units on dim 1: row_dim=1, synced through
    a transposed view) and Linear layers; matmuls only, so eager and replayed steps
    compute the same bits."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Parameter(torch.randn(32, 80) / 32**0.5)
        self.fc1 = torch.nn.Linear(80, 300)
        self.fc2 = torch.nn.Linear(300, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(x.flatten(1) @ self.proj))))


def _twin(backend, net_type=None, **options):
    """A net and LaPerm(Adam) over it, with LaPerm's defaults but for ``options``."""
    torch.manual_seed(0)
    net = (net_type or Net)().cuda()
    units_on_dim_1 = [p for n, p in net.named_parameters() if n.startswith("proj")]
    others = [p for n, p in net.named_parameters() if not n.startswith("proj")]
    groups = [{"params": units_on_dim_1, "row_dim": 1}] + ([{"params": others}] if others else [])
    opt = lk.LaPerm(
        torch.optim.Adam(groups, lr=1e-2, capturable=True),
        sync_period=1,
        backend=backend,
        **options,
    )
    return net, opt


class ManyProjections(torch.nn.Module):
    """70 GPT-2-style projections stored [in, out] (row_dim=1): 70 staging buffers, more
    than the 64 entries a plan cache keeps for graphs."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(32, 10) / 32**0.5) for _ in range(70)
        )

    def forward(self, x):
        x = x.flatten(1)
        return sum(x @ p for p in self.proj)


def _step(net, opt, x, y):
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()


CAPTURED = [
    pytest.param(None, {}, id="defaults"),
    pytest.param(None, {"track_changes": True}, id="track_changes"),
    pytest.param(ManyProjections, {}, id="70-staging-buffers"),
]


@pytest.mark.parametrize("net_type,options", CAPTURED)
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_a_captured_training_step_replays_bit_for_bit(backend, net_type, options):
    _needs(backend)
    gen = torch.Generator(device="cuda").manual_seed(1)
    xs = torch.randn(6, 16, 4, 8, device="cuda", generator=gen)
    ys = torch.randint(0, 10, (6, 16), device="cuda", generator=gen)

    eager_net, eager_opt = _twin(backend, net_type, **options)
    for x, y in zip(xs, ys):
        eager_opt.zero_grad(set_to_none=False)
        _step(eager_net, eager_opt, x, y)

    net, opt = _twin(backend, net_type, **options)
    static_x, static_y = xs[0].clone(), ys[0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up steps: plans, trials, compiles
        for x, y in zip(xs[:3], ys[:3]):
            static_x.copy_(x)
            static_y.copy_(y)
            opt.zero_grad(set_to_none=False)
            _step(net, opt, static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        _step(net, opt, static_x, static_y)
    for x, y in zip(xs[3:], ys[3:]):
        static_x.copy_(x)
        static_y.copy_(y)
        opt.zero_grad(set_to_none=False)
        graph.replay()
    torch.cuda.synchronize()
    for (name, a), b in zip(net.named_parameters(), eager_net.parameters()):
        assert_bitwise_equal(a.detach().cpu(), b.detach().cpu(), name)
    if options.get("track_changes"):  # the replayed sync wrote the counts
        assert opt.last_sync_changes == eager_opt.last_sync_changes
    opt.zero_grad(set_to_none=False)
    _step(net, opt, static_x, static_y)  # eager again: the check left in flight is read
    del graph
    lk.release_captured_plans()


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_a_steady_sync_never_waits_for_the_gpu(backend):
    _needs(backend)
    net, opt = _twin(backend, check_finite=True)
    x = torch.randn(16, 4, 8, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    for _ in range(2):  # the first syncs: trial, plans, compiles
        opt.zero_grad()
        _step(net, opt, x, y)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.zero_grad()
            _step(net, opt, x, y)
            opt.sync()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with torch.no_grad():
        net.fc1.weight[3, 3] = float("nan")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):  # the NaN is reported once its copy landed
            opt.zero_grad()
            _step(net, opt, x, y)
            torch.cuda.synchronize()
    assert any("NaN" in str(w.message) for w in seen), [str(w.message) for w in seen]


def test_the_raw_op_refuses_a_capture_and_the_planned_op_replays():
    _needs("cuda")
    ws = [torch.randn(64, 300, device="cuda"), torch.randn(4, 9000, device="cuda")]
    ss = [lk.sort_rows(torch.randn_like(w)) for w in ws]
    before = [w.clone() for w in ws]
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph"):
        with torch.cuda.graph(graph):
            torch.ops.laperm.rank_match_many_(ws, ss)
    torch.cuda.synchronize()
    for i, (w, b) in enumerate(zip(ws, before)):
        assert_bitwise_equal(w.cpu(), b.cpu(), f"tensor {i}, untouched")

    plan = torch.ops.laperm.cuda_row_plan(
        ws, ss, backends.cuda.largest_block_tile(ws[0].device, ws[0].dtype), 1 << 22
    )
    scratch = torch.ops.laperm.cuda_plan_scratch(plan[0], ws[0].device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.laperm.rank_match_planned_(ws, ss, *plan, scratch)
    graph.replay()
    torch.cuda.synchronize()
    for i, (w, b, s) in enumerate(zip(ws, before, ss)):
        want = b.clone()
        lk.rank_match_(want, s, backend="torch")
        assert_bitwise_equal(w.cpu(), want.cpu(), f"tensor {i}, replayed")


def test_triton_compiles_its_block_kernel_once_for_any_row_count():
    _needs("triton")
    from laperm_kernels.ops.backends.triton.kernels import rank_match_block_kernel as kernel

    caches = getattr(kernel, "device_caches", None)
    if caches is None:
        pytest.skip("this triton keeps its compiled kernels elsewhere")
    device = torch.cuda.current_device()
    before = len(caches[device][0]) if device in caches else 0
    for rows in (1, 16, 17, 48, 1000):  # 1, multiples of 16 and the rest
        w = torch.randn(rows, 100, device="cuda")
        lk.rank_match_(w, lk.sort_rows(w), backend="triton")
    torch.cuda.synchronize()
    assert len(caches[device][0]) - before <= 1
