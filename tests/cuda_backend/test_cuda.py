"""The CUDA kernels on a GPU: bit-identical to the reference in every size class.

These run whenever the extension was built against a CUDA torch and a device is present,
and skip cleanly otherwise (tests/cuda_backend/test_cuda_plan.py checks the host dispatch without a
GPU; `python -m bench.gpucheck` runs these on one). Each test is small enough to
take well under a second on a GPU.
"""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from bench.presets import resnet50, transformer_mlp
from laperm_kernels.ops.backends import cuda
from tests.helpers import DTYPES, KINDS, assert_bitwise_equal, reference_result, tensor_group

pytestmark = pytest.mark.skipif(
    not cuda.is_available(), reason=f"needs the CUDA kernels and a GPU: {cuda.unavailable_reason()}"
)


# Every class boundary (csrc/cuda/size_classes.h, as the extension exports it): warp, each
# block tile, large; and rows of ResNet-50 (4608) and a LLaMA-sized MLP (11008).
def _boundary_lengths():
    if not lk._extension.is_loaded():
        return ()
    classes = cuda.size_classes()
    edges = (classes.warp_max_length, *classes.block_tiles)
    return tuple(
        sorted(
            {1, 2, 31, 32, 33, 100, 1000, 4608, 11008, *(n + d for n in edges for d in (-1, 0, 1))}
        )
    )


LENGTHS = _boundary_lengths()


def expected(ws, ss):
    """The reference on CPU copies: the oracle must not depend on CUDA's float sort,
    which misorders negative NaNs (the reference sorts integer keys, but independently)."""
    return [reference_result(w.cpu(), s.cpu()) for w, s in zip(ws, ss)]


def assert_all_equal(actual, want, what=""):
    torch.cuda.synchronize()
    for i, (a, e) in enumerate(zip(actual, want)):
        assert_bitwise_equal(a.cpu(), e, f"{what} tensor {i}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_size_class(dtype, kind):
    ws, ss = tensor_group(
        [((3, n), dtype) for n in LENGTHS], kind, KINDS.index(kind), device="cuda"
    )
    want = expected(ws, ss)
    lk.rank_match_many_(ws, ss, backend="cuda")
    assert_all_equal(ws, want, f"{kind} {dtype}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_resnet50_sync(dtype):
    ws, ss = tensor_group([(shape, dtype) for shape in resnet50()], seed=1, device="cuda")
    want = expected(ws, ss)
    lk.rank_match_many_(ws, ss, backend="cuda")
    assert_all_equal(ws, want, "resnet50")


def test_mlp_4096x11008():
    ws, ss = tensor_group(
        [(shape, torch.float32) for shape in transformer_mlp()], seed=2, device="cuda"
    )
    want = expected(ws, ss)
    lk.rank_match_many_(ws, ss, backend="cuda")
    assert_all_equal(ws, want, "mlp")


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_over_several_batches(dtype):
    # rows of >= 2^18 each sorted device-wide (cub::DeviceRadixSort), one of them a million
    # elements long, and rows of 20000 sharing segmented batches of at most 2^16 items
    ws, ss = tensor_group(
        [((1 << 20,), dtype), ((3, 300000), dtype), ((7, 20000), dtype)],
        "ties",
        seed=3,
        device="cuda",
    )
    want = expected(ws, ss)
    plan = cuda.plan_for(ws, ss, max_batch_items=1 << 16)
    batches = cuda.describe_plan(plan)["large_batches"]
    assert [b[1] for b in batches] == [1, 1, 1, 1, 3, 3, 1]
    torch.ops.laperm.rank_match_planned_(ws, ss, *plan)
    assert_all_equal(ws, want, "long rows")


def test_unplanned_operator():
    ws, ss = tensor_group(
        [((5, 40), torch.float16), ((7, 3000), torch.float16), ((2, 20000), torch.float16)],
        "special",
        seed=4,
        device="cuda",
    )
    want = expected(ws, ss)
    torch.ops.laperm.rank_match_many_(ws, ss)
    assert_all_equal(ws, want, "rank_match_many_")


def test_opcheck_planned_op():
    ws, ss = tensor_group(
        [((6, 100), torch.float32), ((2, 3000), torch.float32)], seed=8, device="cuda"
    )
    plan = cuda.plan_for(ws, ss)
    # The plan holds the tensors' addresses, so only opcheck's tests that run the op on
    # these very tensors apply; the schema, fake-tensor and AOT-dispatch tests run it on
    # copies, which a plan rightly refuses.
    torch.library.opcheck(
        torch.ops.laperm.rank_match_planned_.default,
        (ws, ss, *plan),
        test_utils=("test_autograd_registration",),
    )


def test_planned_op_bumps_version_counters():
    ws, ss = tensor_group([((6, 100), torch.float32)], seed=9, device="cuda")
    plan = cuda.plan_for(ws, ss)
    before = ws[0]._version
    torch.ops.laperm.rank_match_planned_(ws, ss, *plan)
    assert ws[0]._version > before


def test_runs_on_the_current_stream():
    ws, ss = tensor_group(
        [((64, 576), torch.float32), ((4, 20000), torch.float32)], seed=5, device="cuda"
    )
    want = expected(ws, ss)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        lk.rank_match_many_(ws, ss, backend="cuda")
    torch.cuda.current_stream().wait_stream(side)
    assert_all_equal(ws, want, "side stream")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_another_device():
    ws, ss = tensor_group(
        [((8, 300), torch.float32), ((2, 9000), torch.float32)], seed=6, device="cuda:1"
    )
    want = expected(ws, ss)
    with torch.cuda.device(0):
        lk.rank_match_many_(ws, ss, backend="cuda")
    assert_all_equal(ws, want, "cuda:1")


def test_cuda_graph_capture_of_a_planned_sync():
    ws, ss = tensor_group(
        [((64, 147), torch.float32), ((128, 1152), torch.float32), ((10, 40), torch.float32)],
        seed=7,
        device="cuda",
    )
    pristine = [w.clone() for w in ws]
    want = expected(ws, ss)
    plan = cuda.plan_for(ws, ss)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up off the capture, as torch's docs advise
        torch.ops.laperm.rank_match_planned_(ws, ss, *plan)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.laperm.rank_match_planned_(ws, ss, *plan)
    for w, p in zip(ws, pristine):
        w.copy_(p)
    graph.replay()
    assert_all_equal(ws, want, "graph replay")


def test_a_captured_sync_survives_plan_eviction_and_memory_reuse():
    # the cache drops plans after 16 others; a plan a graph captured must stay alive
    ws, ss = tensor_group(
        [((32, 300), torch.float32), ((3, 6000), torch.float32)], seed=9, device="cuda"
    )
    pristine = [w.clone() for w in ws]
    want = expected(ws, ss)
    lk.rank_match_many_(ws, ss, backend="cuda")  # warm-up: plan, scratch, lazy init
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        lk.rank_match_many_(ws, ss, backend="cuda")
    torch.cuda.current_stream().wait_stream(side)
    for i in range(40):  # plans for other groups: the LRU evicts the captured one
        other, other_s = tensor_group([((8, 64 + i), torch.float32)], seed=100 + i, device="cuda")
        lk.rank_match_many_(other, other_s, backend="cuda")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    junk = [torch.full((1 << 16,), -1, dtype=torch.int64, device="cuda") for _ in range(64)]
    for w, p in zip(ws, pristine):
        w.copy_(p)
    graph.replay()
    assert_all_equal(ws, want, "replay after eviction")
    del junk


def test_auto_on_cuda_is_proven_and_exact():
    ws, ss = tensor_group(
        [(shape, torch.float32) for shape in resnet50()], "special", seed=10, device="cuda"
    )
    want = expected(ws, ss)
    [(_, _, chosen)] = lk.ops.rank_match_groups_(ws, ss).used
    assert_all_equal(ws, want, "auto, first call (trial)")
    [decision] = [
        d for d in lk.dispatch_report() if d["signature"]["shapes"] == [list(w.shape) for w in ws]
    ]
    assert decision["backend"] == chosen
    assert {c["verdict"] for c in decision["candidates"]} <= {"bit-identical", "reference"}


def test_plan_is_cached_across_calls():
    ws, ss = tensor_group([((16, 300), torch.float32)], seed=8, device="cuda")
    assert cuda.plan_for(ws, ss) is cuda.plan_for(ws, ss)


def test_optimizer_matches_the_reference_backend():
    def run(backend):
        torch.manual_seed(0)
        # Linear layers only: cuDNN's convolution backward may be nondeterministic
        net = torch.nn.Sequential(
            torch.nn.Linear(64, 300), torch.nn.ReLU(), torch.nn.Linear(300, 10)
        ).cuda()
        opt = lk.LaPerm(torch.optim.Adam(net.parameters(), lr=1e-2), sync_period=3, backend=backend)
        x = torch.randn(16, 64, device="cuda")
        for _ in range(7):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        return [p.detach().cpu() for p in net.parameters()]

    for a, b in zip(run("cuda"), run("torch")):
        assert_bitwise_equal(a, b, "LaPerm(Adam) parameters")
