"""The native check of a call (laperm::check_call_) agrees with the Python checks on valid
calls: it accepts them and groups them the same way. (tests/ops/test_bad_input.py holds it
to refusing every bad input.)"""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels import _extension, ops
from tests.helpers import needs_extension

pytestmark = needs_extension


def _calls():
    base = torch.randn(40)
    t = torch.randn(6, 5).t()                       # not contiguous
    return {
        "one-group": ([torch.randn(3, 4), torch.randn(5)], None),
        "mixed-dtypes": ([torch.randn(3, 4), torch.randn(2, 2, dtype=torch.float64),
                          torch.randn(7, dtype=torch.float16), torch.randn(4, 1)], None),
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
    assert len({key((3, 4), (5,)), key((4, 3), (5,)), key((3, 4)), key((3, 4), (5, 1)),
                key((5,), (3, 4)), key((12,), (5,))}) == 6
