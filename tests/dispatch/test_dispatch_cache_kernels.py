"""backend="auto"'s disk cache holds a decision for the kernels that were timed: a rebuilt
extension or an edited Triton kernel (another size or modification time) makes a new
entry and a new trial, not a decision read back from the old kernels' entry. Stand-in
backends on a fake clock, as in test_dispatch.py."""

from __future__ import annotations

import json
import os
import types

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops import backends, decision_store, dispatch
from tests.helpers import FakeClock, tensor_group

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fast_backend(monkeypatch, tmp_path):
    """A stand-in "fast" for CPU tensors that wins auto's trials against the reference."""
    monkeypatch.setenv("LAPERM_CACHE_DIR", str(tmp_path / "cache"))
    clock = FakeClock()
    reference = dispatch.rank_match_reference_

    def slow_reference(w, s):
        clock.advance(1.0)
        return reference(w, s)

    monkeypatch.setattr(dispatch, "rank_match_reference_", slow_reference)
    monkeypatch.setattr(dispatch, "DeviceTimer", clock.timer)
    monkeypatch.setitem(
        backends.BACKENDS,
        "fast",
        types.SimpleNamespace(
            name="fast",
            run=backends.BACKENDS["torch"].run,
            is_available=lambda: True,
            unavailable_reason=lambda: "",
            supports=lambda device, dtype: device.type == "cpu",
        ),
    )
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ["fast", "torch"])
    dispatch.reset()
    yield
    dispatch.reset()


def _edit_a_triton_kernel(monkeypatch) -> None:
    """Makes the first Triton kernel source look edited (a later modification time) to
    the cache's fingerprint of the kernels (os.stat is the process's: patched while the
    test runs)."""
    folder = os.path.join(os.path.dirname(decision_store.__file__), "backends", "triton")
    edited = os.path.join(folder, sorted(os.listdir(folder))[0])
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        if os.path.abspath(path) == os.path.abspath(edited):
            return types.SimpleNamespace(st_size=st.st_size, st_mtime_ns=st.st_mtime_ns + 1)
        return st

    monkeypatch.setattr(decision_store.os, "stat", stat)


def _sync_a_group():
    ws, ss = tensor_group([((6, 40), torch.float32), ((5, 33), torch.float32)], "special", 0)
    lk.ops.rank_match_groups_(ws, ss)


def test_an_edited_kernel_gets_a_new_trial_not_the_old_kernels_decision(fast_backend, monkeypatch):
    _sync_a_group()
    dispatch.reset()  # a new process
    _sync_a_group()
    assert [d["source"] for d in lk.dispatch_report()] == ["disk cache"]  # same kernels

    _edit_a_triton_kernel(monkeypatch)
    dispatch.reset()  # a new process, after the edit
    _sync_a_group()
    assert [d["source"] for d in lk.dispatch_report()] == ["trial"], "the old kernels' decision"
    with open(decision_store.cache_path()) as f:
        kernels = [json.loads(k)["environment"]["kernels"] for k in json.load(f)]
    assert len(kernels) == len(set(kernels)) == 2  # one entry per version of the kernels
