"""The ops' prepared call (laperm_kernels/ops/prepared_call.py), LaPerm's one entry point for
a sync: its two ways (the native CPU call, the ops' runner) give the same weights and the
same max |x|, read before any weight is written, each value at its weight's place."""

from __future__ import annotations

import math

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops.prepared_call import PreparedCall
from tests.helpers import assert_bitwise_equal, needs_extension, reference_result

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(dtypes):
    g = torch.Generator().manual_seed(0)
    ws = [(torch.randn(4 + i, 7, generator=g) * (i + 1)).to(dt) for i, dt in enumerate(dtypes)]
    with torch.no_grad():
        ws[0][1, 2] = float("nan")
        ws[-1][0, 0] = float("-inf")
    ss = [lk.sort_rows(torch.randn(w.shape, generator=g).to(w.dtype)) for w in ws]
    return ws, ss


def _by_position(parts, n):
    """{place in the call: max |x|} from a call's MaxAbs parts."""
    found = {}
    for part in parts:
        for i, value in zip(part.positions, part.values.tolist()):
            assert i not in found
            found[i] = value
    assert sorted(found) == list(range(n))
    return found


@pytest.mark.parametrize(
    "backend,native",
    [pytest.param("cpu", True, marks=needs_extension), ("torch", False), ("auto", None)],
)
def test_max_abs_is_taken_before_the_call_and_placed_by_weight(backend, native):
    dtypes = [torch.float32, torch.float64, torch.float32]  # two groups, interleaved
    if native:
        dtypes = [torch.float32] * 3  # the native call takes one group
    ws, ss = _pairs(dtypes)
    want_max = [w.abs().max().item() for w in ws]  # NaN first, inf last
    want = [reference_result(w, s) for w, s in zip(ws, ss)]
    call = PreparedCall(ws, ss)
    result = call.run(backend, max_abs=True)
    if native is not None:
        assert result.native is native
    got = _by_position(result.max_abs, len(ws))
    assert math.isnan(got[0]) and got[len(ws) - 1] == float("inf")
    for i, value in got.items():
        assert value == want_max[i] or math.isnan(value) and math.isnan(want_max[i]), i
    for i, (w, e) in enumerate(zip(ws, want)):
        assert_bitwise_equal(w, e, f"weight {i}")
    assert all(torch.isfinite(w).all() for w in ws)  # the NaN's place got a value of S


def test_without_max_abs_a_call_returns_none_for_it():
    ws, ss = _pairs([torch.float32, torch.float64])
    result = PreparedCall(ws, ss).run("torch")
    assert result.max_abs is None and not result.native
    assert [name for *_, name in result.used] == ["torch", "torch"]


@needs_extension
def test_the_native_way_is_left_where_a_weight_became_non_contiguous():
    # What a Parameter holds can change between syncs (p.data = ...): the native call
    # checks every run and hands the call to the ops' runner, which stages the weight.
    ws, ss = _pairs([torch.float32, torch.float32])
    call = PreparedCall(ws, ss)
    ws[1].data = torch.randn(7, ws[1].shape[0]).t()
    want = [reference_result(w, s) for w, s in zip(ws, ss)]
    result = call.run("cpu", max_abs=True)
    assert not result.native
    for i, (w, e) in enumerate(zip(ws, want)):
        assert_bitwise_equal(w, e, f"weight {i}")
