"""The native check of a call (laperm::check_call_) agrees with the Python checks on valid
calls: it accepts them and groups them the same way. (tests/ops/test_bad_input.py holds it
to refusing every bad input.)"""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels import _extension
from laperm_kernels.ops import backends, decision_store, dispatch
from laperm_kernels.ops import rank_match as ops
from tests.helpers import assert_bitwise_equal, needs_extension

pytestmark = needs_extension


def _calls():
    base = torch.randn(40)
    t = torch.randn(6, 5).t()  # not contiguous
    return {
        "one-group": ([torch.randn(3, 4), torch.randn(5)], None),
        "mixed-dtypes": (
            [
                torch.randn(3, 4),
                torch.randn(2, 2, dtype=torch.float64),
                torch.randn(7, dtype=torch.float16),
                torch.randn(4, 1),
            ],
            None,
        ),
        "meta-and-cpu": ([torch.empty(3, 3, device="meta"), torch.randn(3, 3)], None),
        "not-contiguous": ([t, torch.randn(2, 3)], None),
        "disjoint-views": ([base[:20].view(4, 5), base[20:].view(4, 5)], None),
        "empty": ([torch.empty(0, 3), torch.randn(2, 2, dtype=torch.bfloat16)], None),
        "shared-inits": ([torch.randn(2, 3), torch.randn(2, 3)], "shared"),
    }


def _inits(ws, kind):
    if kind == "shared":  # sorted_inits may alias each other: they are only read
        s = lk.sort_rows(ws[0])
        return [s, s]
    return [torch.empty_like(w) if w.device.type == "meta" else lk.sort_rows(w) for w in ws]


@pytest.mark.parametrize("name", list(_calls()))
def test_native_and_python_checks_group_a_valid_call_alike(name, monkeypatch):
    ws, kind = _calls()[name]
    ss = _inits(ws, kind)
    _, native = ops._checked_groups(ws, ss, "weights", "sorted_inits")
    valid, *_ = ops._native_check(ws, ss)
    assert valid
    monkeypatch.setattr(_extension, "is_loaded", lambda: False)
    _, python = ops._checked_groups(ws, ss, "weights", "sorted_inits")
    assert [(g.device, g.dtype) for g in native] == [(g.device, g.dtype) for g in python]
    for a, b in zip(native, python):
        assert [id(w) for w in a.weights] == [id(w) for w in b.weights]
        assert [id(s) for s in a.sorted_inits] == [id(s) for s in b.sorted_inits]
    everything = [*ws, *ss]
    assert native[0].contiguous == all(t.is_contiguous() for t in everything)


def test_the_shapes_key_tells_shapes_apart():
    def key(*shapes):
        ws = [torch.randn(s) for s in shapes]
        _, [group] = ops._checked_groups(ws, [lk.sort_rows(w) for w in ws], "w", "s")
        return group.shapes_key

    assert key((3, 4), (5,)) == key((3, 4), (5,))
    assert (
        len(
            {
                key((3, 4), (5,)),
                key((4, 3), (5,)),
                key((3, 4)),
                key((3, 4), (5, 1)),
                key((5,), (3, 4)),
                key((12,), (5,)),
            }
        )
        == 6
    )


# --- the CPU fast path: check_call_ runs the call when the C++ kernel is its backend -------


def _model(dtype=torch.float32):
    gen = torch.Generator().manual_seed(3)
    ws = [torch.randn(s, generator=gen).to(dtype) for s in ((4, 6), (3,), (2, 2, 3))]
    return ws, [lk.sort_rows(w) for w in ws]


def _decide(ws, backend):
    """Records ``backend`` as auto's decision for ``ws`` at the current thread count."""
    _, [group] = ops._checked_groups(ws, [lk.sort_rows(w) for w in ws], "w", "s")
    key = dispatch._key(group.device, group.dtype, ws, group.shapes_key)
    dispatch._remember(key, decision_store.Decision({}, backend, "test"))


@pytest.fixture
def fresh_dispatch():
    dispatch.reset()
    yield
    dispatch.reset()


def _expected(ws, ss):
    out = [w.clone() for w in ws]
    lk.rank_match_many_(out, ss, backend="torch")
    return out


@pytest.mark.parametrize("backend", ["cpu", "auto"])
def test_a_call_bound_for_the_cpu_kernel_runs_in_the_native_check(
    backend, monkeypatch, fresh_dispatch
):
    ws, ss = _model()
    expected = _expected(ws, ss)
    if backend == "auto":
        _decide(ws, "cpu")

    def not_called(*args):
        raise AssertionError("the call went past the native check")

    monkeypatch.setattr(backends.BACKENDS["cpu"], "run", not_called)
    versions = [w._version for w in ws]
    assert lk.ops.rank_match_groups_(ws, ss, backend=backend).used == [
        (torch.device("cpu"), torch.float32, "cpu")
    ]
    for w, e in zip(ws, expected):
        assert_bitwise_equal(w, e)
    # the in-place write is recorded, as rank_match_many_'s ADInplaceOrView kernel does
    assert all(w._version > v for w, v in zip(ws, versions))


def _runs_fast(ws, ss, backend="auto") -> bool:
    said = []
    native = ops._native_check

    def spy(*args):
        result = native(*args)
        said.append(result[4])
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops, "_native_check", spy)
        lk.rank_match_many_(ws, ss, backend=backend)
    return said == [True]


def test_only_the_decided_dtype_and_thread_count_take_the_fast_path(fresh_dispatch):
    ws32, ss32 = _model(torch.float32)
    ws64, ss64 = _model(torch.float64)  # the same shapes
    _decide(ws32, "cpu")
    _decide(ws64, "torch")
    assert _runs_fast(ws32, ss32)
    assert not _runs_fast(ws64, ss64)  # the group key holds the dtype
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # a thread count with no decision yet
        assert not _runs_fast(ws32, ss32)
    finally:
        torch.set_num_threads(threads)
    dispatch.reset()
    assert not _runs_fast(ws32, ss32)  # reset forgets the keys with the decisions


def test_the_fast_path_takes_no_mixed_or_strided_call(fresh_dispatch):
    ws, ss = _model()
    assert _runs_fast(ws, ss, "cpu")
    mixed = [*ws, torch.randn(3, 3, dtype=torch.float64)]
    assert not _runs_fast(mixed, [lk.sort_rows(w) for w in mixed], "cpu")
    strided = [torch.randn(6, 4).t(), *ws]
    assert not _runs_fast(strided, [lk.sort_rows(w) for w in strided], "cpu")
    assert not _runs_fast(ws, ss, "torch")
