"""``rank_match_many_`` (a whole model per call), backend selection, and ``sort_rows``."""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
import laperm_kernels.ops.backends as backends
from bench.presets import PRESETS
from laperm_kernels.ops.reference import rows_and_length
from tests.helpers import (
    BACKENDS,
    DTYPES,
    assert_bitwise_equal,
    generator,
    make_sorted_init,
    make_values,
    needs_extension,
    reference_result,
    tensor_group,
)

# Small models with every dtype, interleaved so the (device, dtype) grouping must split
# and reassemble the list; empty tensors and rows of one element included.
MIXED_MODELS = {
    "interleaved": [
        ((16, 30), torch.float32),
        ((7,), torch.float64),
        ((4, 3, 3, 3), torch.float16),
        ((6, 70), torch.bfloat16),
        ((9, 33), torch.float32),
        ((5, 1), torch.float16),
        ((0, 5), torch.float64),
        ((3, 2, 2), torch.bfloat16),
    ],
    "one_dtype_each": [((2, 4096), dt) for dt in DTYPES],
    "single_empty": [((0,), torch.float32)],
}


def _check_many(backend, ws, ss):
    outs = [w.clone() for w in ws]
    ptrs = [o.data_ptr() for o in outs]
    assert lk.rank_match_many_(outs, ss, backend=backend) is None
    assert [o.data_ptr() for o in outs] == ptrs
    for i, (out, w, s) in enumerate(zip(outs, ws, ss)):
        assert_bitwise_equal(out, reference_result(w, s), f"tensor {i} {tuple(w.shape)}")


@BACKENDS
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_lenet_in_one_call(backend, dtype):
    _check_many(
        backend,
        *tensor_group([(shape, dtype) for shape in PRESETS["lenet-300-100"]], "special", seed=10),
    )


@BACKENDS
@pytest.mark.parametrize("model", MIXED_MODELS)
@pytest.mark.parametrize("kind", ["special", "ties", "near_one"])
def test_mixed_dtypes_in_one_call(backend, model, kind):
    _check_many(backend, *tensor_group(MIXED_MODELS[model], kind, seed=11))


@BACKENDS
def test_tuples_and_empty_lists(backend):
    ws, ss = tensor_group(MIXED_MODELS["interleaved"][:3], "normal", seed=12)
    expected = [reference_result(w, s) for w, s in zip(ws, ss)]
    lk.rank_match_many_(tuple(ws), tuple(ss), backend=backend)
    for w, e in zip(ws, expected):
        assert_bitwise_equal(w, e)
    lk.rank_match_many_([], [], backend=backend)  # nothing to do, no error


@BACKENDS
def test_disjoint_views_of_one_storage(backend):
    """Rows of one buffer handed out as separate weights (a flat parameter store): fine,
    they share no element."""
    base = make_values("special", (8, 40), torch.float32, generator(13))
    views = [base[:3], base[3:4], base[4:]]
    ss = [make_sorted_init(v.shape, v.dtype, generator(14)) for v in views]
    expected = torch.cat([reference_result(v, s) for v, s in zip(views, ss)])
    lk.rank_match_many_(views, ss, backend=backend)
    assert_bitwise_equal(base, expected)


@needs_extension
def test_direct_op_takes_mixed_dtypes():
    """The native op itself runs every dtype in one call (the ops group anyway)."""
    ws, ss = tensor_group(MIXED_MODELS["interleaved"], "special", seed=15)
    outs = [w.clone() for w in ws]
    torch.ops.laperm.rank_match_many_(outs, ss)
    for out, w, s in zip(outs, ws, ss):
        assert_bitwise_equal(out, reference_result(w, s))


# --- backend selection ------------------------------------------------------------------


def _spy_on(monkeypatch, name):
    """Records the calls that reach backend ``name``'s run()."""
    module = backends.BACKENDS[name]
    calls = []
    real_run = module.run

    def run(weights, sorted_inits):
        calls.append(len(weights))
        real_run(weights, sorted_inits)

    monkeypatch.setattr(module, "run", run)
    return calls


@needs_extension
def test_auto_without_autotuning_picks_the_cpu_kernel(monkeypatch):
    # LAPERM_AUTOTUNE=0: auto is the fixed order, no trial (tests/dispatch/test_dispatch.py has it)
    monkeypatch.setenv("LAPERM_AUTOTUNE", "0")
    assert lk.available_backends("cpu")[0] == "cpu"
    cpu_calls, torch_calls = _spy_on(monkeypatch, "cpu"), _spy_on(monkeypatch, "torch")
    ws, ss = tensor_group(MIXED_MODELS["interleaved"], "normal", seed=16)
    lk.rank_match_many_(ws, ss)
    # one native call per dtype group, covering all 8 tensors
    assert sorted(cpu_calls) == [2, 2, 2, 2] and torch_calls == []


def test_auto_falls_back_to_the_reference(monkeypatch):
    monkeypatch.setattr(backends.BACKENDS["cpu"], "is_available", lambda: False)
    assert lk.available_backends("cpu") == ["torch"]
    torch_calls = _spy_on(monkeypatch, "torch")
    w, s = tensor_group([((4, 9), torch.float32)], "normal", seed=17)
    expected = reference_result(w[0], s[0])
    lk.rank_match_(w[0], s[0])
    assert torch_calls == [1]
    assert_bitwise_equal(w[0], expected)


def test_auto_on_meta_uses_the_reference():
    # Shapes only: the reference runs on any device, the C++ kernel only on CPU.
    w = torch.empty(3, 4, device="meta")
    assert lk.rank_match_(w, torch.empty(3, 4, device="meta")) is w


def test_available_backends():
    everywhere = lk.available_backends()
    assert "torch" in everywhere and lk.available_backends("cpu")[-1] == "torch"
    assert ("cpu" in everywhere) == lk._extension.is_loaded()
    assert lk.available_backends("meta") == ["torch"]


# --- sort_rows --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape", [(0,), (1,), (50,), (0, 4), (4, 0), (6, 33), (8, 3, 3, 3), (3, 4, 5)]
)
def test_sort_rows(shape, dtype):
    w = make_values("special", shape, dtype, generator(18))
    before = w.clone()
    out = lk.sort_rows(w)
    assert out.shape == w.shape and out.dtype == w.dtype and out.is_contiguous()
    assert w.numel() == 0 or out.data_ptr() != w.data_ptr()
    assert_bitwise_equal(w, before, "input changed")
    rows = w.reshape(rows_and_length(w))
    assert_bitwise_equal(out, rows.sort(dim=1, stable=True).values.reshape(shape))
    out_rows = out.reshape(rows.shape).float()
    # ascending with NaN last: no NaN precedes a number, and the numbers never decrease
    nan = out_rows.isnan()
    assert not (nan[:, :-1] & ~nan[:, 1:]).any()
    assert (out_rows[:, 1:] >= out_rows[:, :-1])[~nan[:, 1:]].all()


def test_sort_rows_of_a_non_contiguous_tensor():
    base = make_values("special", (8, 3, 3, 4), torch.float32, generator(19))
    w = base.permute(0, 3, 1, 2)  # channels_last view
    assert_bitwise_equal(lk.sort_rows(w), lk.sort_rows(w.contiguous()))
    t = base.reshape(8, 36).t()  # transposed: rows are the logical rows of w.t()
    assert_bitwise_equal(lk.sort_rows(t), t.contiguous().sort(dim=1, stable=True).values)


def test_sort_rows_of_a_parameter_is_detached():
    p = torch.nn.Parameter(torch.randn(4, 5, generator=generator(20)))
    s = lk.sort_rows(p)
    assert not s.requires_grad and s.grad_fn is None and not isinstance(s, torch.nn.Parameter)
