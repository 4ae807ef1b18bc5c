"""LaPerm's check_finite: what it finds, and that a sync reads nothing back from the device
but the check's one host copy.

A steady-state sync on CUDA must not make the host wait for the GPU. On the CPU the same
code runs, so counting the calls that would read a device value into Python (``item``,
``tolist``, ``bool``, ``.cpu()``, ...) during syncs shows what a GPU sync would do. The GPU
itself is checked with ``torch.cuda.set_sync_debug_mode("error")`` in
tests/cuda_backend/test_graph_capture_gpu.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.overrides import TorchFunctionMode

import laperm_kernels as lk
from laperm_kernels.ops.max_abs import MaxAbs, max_abs_of
from laperm_kernels.optim.finite_check import FiniteCheck
from tests.helpers import DTYPES, mlp, needs_extension
from tests.strict_capture import HOST_READS


class CountHostReads(TorchFunctionMode):
    """Records every call that would copy a device value to the host and wait for it."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _step(model, opt, x):
    opt.zero_grad()
    model(x).square().mean().backward()
    with CountHostReads() as counter:
        opt.step()
    return counter.reads


@pytest.mark.parametrize("check_finite,reads_per_sync", [(True, 1), (False, 0)])
def test_a_steady_sync_reads_at_most_the_checks_one_copy(check_finite, reads_per_sync):
    model = mlp(sizes=(10, 16, 12, 3))
    opt = lk.LaPerm(
        torch.optim.SGD(model.parameters(), lr=0.1), sync_period=1, check_finite=check_finite
    )
    x = torch.randn(8, 10)
    _step(model, opt, x)  # the first sync: auto's trial, plans
    reads = [_step(model, opt, x) for _ in range(4)]
    assert reads == [["tolist"] * reads_per_sync] * 4


def test_inf_alone_is_reported():
    model = mlp(sizes=(10, 16, 12, 3))
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1), sync_period=3)
    opt.sync()  # past the first-step check, which would take S again (test_first_step.py)
    with torch.no_grad():
        model[2].weight[4, 1] = float("-inf")
    with pytest.warns(
        RuntimeWarning, match=r"after step 0.*\(parameter 2 of param group 0 \(inf\)\)"
    ):
        opt.sync()
    assert all(torch.isfinite(p).all() for p in (model[0].weight, model[2].weight))


def test_nan_alone_is_reported_and_finite_weights_are_not():
    model = mlp(sizes=(10, 16, 12, 3))
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1), sync_period=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.sync()  # finite: nothing to say
    with torch.no_grad():
        model[4].weight[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"\(parameter 4 of param group 0 \(NaN\)\)"):
        opt.sync()


def test_one_check_in_flight_at_a_time():
    check = FiniteCheck()
    t = torch.tensor([1.0, float("inf")])
    check.record(7, _max_abs(t), ["a"])
    assert not check.ready([t])
    check.record(8, _max_abs(torch.tensor([float("nan")])), ["b"])  # ignored: 7 is unread
    assert check.result() == (7, ["a (inf)"])
    assert check.result() is None and not check.pending and check.ready([t])
    check.record(9, _max_abs(torch.zeros(3), torch.empty(0)), ["c", "d"])
    assert check.result() == (9, [])


def _max_abs(*tensors):
    """The parts a call of the ops returns with max_abs=True, for CPU tensors."""
    return [MaxAbs(torch.device("cpu"), list(range(len(tensors))), max_abs_of(tensors))]


@needs_extension
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_cpu_kernel_finds_nan_and_inf_anywhere(dtype):
    # laperm::max_abs, what the check runs on CPU tensors: tensors long enough to be
    # reduced in several chunks, a NaN or an inf in the last one, a transposed view.
    n = 3 << 18  # three of laperm::max_abs's grains (1 << 18): split across threads
    clean = torch.randn(n).to(dtype)
    with_inf, with_nan = clean.clone(), clean.clone()
    with_inf[-1] = float("-inf")
    with_nan[n - 7] = float("nan")
    with_nan[5] = float("inf")  # NaN wins over inf
    view = torch.randn(5, 9, dtype=torch.float64).to(dtype).t()
    out = torch.ops.laperm.max_abs([clean, with_inf, with_nan, view, torch.empty(0, 3)])
    assert out.dtype == torch.float64
    assert out[0].item() == clean.abs().max().double().item()
    assert out[1].item() == float("inf") and out[2].isnan()
    assert out[3].item() == view.abs().max().double().item() and out[4].item() == 0.0


@needs_extension
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_cpu_kernel_reads_signs_the_way_abs_does(dtype):
    # The kernel compares bits with the sign cleared: a NaN with its sign bit set is still
    # a NaN (its bits, read as signed or with the sign kept, would sort below every
    # positive number), -0.0 is 0, and -inf is inf; a negative value can be the largest.
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    negative_nan = torch.full((70_000,), float("nan"), dtype=dtype)
    negative_nan.view(bits).bitwise_or_(torch.iinfo(bits).min)  # set the sign bit
    assert torch.signbit(negative_nan).all()
    zeros = torch.full((9,), -0.0, dtype=dtype)
    mixed = torch.tensor([1.0, -3.0, 2.0], dtype=dtype)
    infs = torch.tensor([-float("inf"), 1.0], dtype=dtype)
    out = torch.ops.laperm.max_abs([negative_nan, zeros, mixed, infs])
    assert out[0].isnan()
    assert out[1].item() == 0.0 and not torch.signbit(out[1])
    assert out[2].item() == 3.0 and out[3].item() == float("inf")
