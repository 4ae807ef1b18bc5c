"""The GPU backends' plan cache: LRU bookkeeping, CUDA graph capture (never a build, kept
entries bounded and released), stream order, forgetting addresses, threads.

CPU tensors stand in for device tensors (the cache keys on addresses and shapes only),
the strict stand-in of tests/strict_capture.py for a capture, and recording fakes for
streams.
"""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from laperm_kernels.ops.backends import plan_cache
from laperm_kernels.ops.backends.plan_cache import PlanCache
from laperm_kernels.ops.graph_capture import NotPreparedForCapture
from tests.strict_capture import strict_capture


def _tensors(n):
    return [torch.zeros(2, 3 + i) for i in range(n)]


def _getter(cache):
    built = []

    def get(w, s):
        def build():
            built.append(w.data_ptr())
            return object()

        return cache.get(("settings",), [w], [s], build)

    return get, built


def test_builds_once_per_key_and_evicts_the_least_recent():
    cache = PlanCache(2)
    get, built = _getter(cache)
    ws, ss = _tensors(3), _tensors(3)
    a = get(ws[0], ss[0])
    assert get(ws[0], ss[0]) is a and len(built) == 1
    get(ws[1], ss[1])
    get(ws[0], ss[0])  # a is now the most recent
    get(ws[2], ss[2])  # evicts ws[1]'s plan
    assert len(cache) == 2 and get(ws[0], ss[0]) is a and len(built) == 3
    get(ws[1], ss[1])
    assert len(built) == 4


@pytest.fixture
def capture(monkeypatch):
    """``capture(True)`` puts the calls that follow under the strict stand-in of a CUDA
    graph capture; ``capture(False)`` ends it."""
    stack = contextlib.ExitStack()

    def set_capturing(on):
        if on:
            stack.enter_context(strict_capture(monkeypatch))
        else:
            stack.close()

    yield set_capturing
    stack.close()


def test_a_plan_a_graph_captured_outlives_eviction(capture):
    # The graph reads the plan's device tables at every replay: dropping the plan would
    # free them while the graph still points at them.
    cache = PlanCache(2)
    get, built = _getter(cache)
    ws, ss = _tensors(6), _tensors(6)
    plan = get(ws[0], ss[0])  # the eager call before the capture
    capture(True)
    assert get(ws[0], ss[0]) is plan  # the capture finds it, and keeps it
    capture(False)
    for w, s in zip(ws[1:], ss[1:]):  # far more plans than the LRU holds
        get(w, s)
    assert get(ws[0], ss[0]) is plan
    assert built.count(ws[0].data_ptr()) == 1
    assert len(cache) == 3 and cache.captured() == 1  # two in the LRU, one for its graph


def test_a_capture_never_builds_it_names_the_fix(capture):
    cache = PlanCache(2, what="launch plan")
    get, built = _getter(cache)
    w, s = torch.zeros(2, 3), torch.zeros(2, 3)
    capture(True)
    with pytest.raises(NotPreparedForCapture, match="needs a launch plan.*outside the capture"):
        get(w, s)
    assert built == [] and len(cache) == 0


def test_a_plan_evicted_before_the_capture_is_a_clear_miss(capture):
    cache = PlanCache(1)
    get, built = _getter(cache)
    ws, ss = _tensors(2), _tensors(2)
    get(ws[0], ss[0])
    get(ws[1], ss[1])  # evicts the first
    capture(True)
    with pytest.raises(NotPreparedForCapture):
        get(ws[0], ss[0])
    assert get(ws[1], ss[1]) is not None and len(built) == 2


def test_plans_kept_for_graphs_are_bounded_and_released(capture):
    cache = PlanCache(8, max_captured=2, what="launch plan")
    get, _ = _getter(cache)
    ws, ss = _tensors(3), _tensors(3)
    for w, s in zip(ws, ss):
        get(w, s)
    capture(True)
    get(ws[0], ss[0])
    get(ws[1], ss[1])
    get(ws[0], ss[0])  # the same graph captured again: nothing new kept
    with pytest.raises(
        NotPreparedForCapture,
        match=r"needs one more launch plan, but 2 launch plans \(the most kept\).*"
        "release_captured_plans",
    ):
        get(ws[2], ss[2])
    assert cache.captured() == 2
    plan_cache.release_captured()  # lk.release_captured_plans
    assert cache.captured() == 0
    get(ws[2], ss[2])
    assert cache.captured() == 1


def test_forget_drops_the_plans_of_given_addresses_but_not_captured_ones(capture):
    cache = PlanCache(8)
    get, built = _getter(cache)
    ws, ss = _tensors(3), _tensors(3)
    for w, s in zip(ws, ss):
        get(w, s)
    capture(True)
    get(ws[0], ss[0])
    capture(False)
    plan_cache.forget([ws[0].data_ptr(), ss[1].data_ptr()])
    assert len(cache) == 2  # ws[0]'s plan stays for its graph; ws[1]'s is gone
    get(ws[0], ss[0])
    get(ws[2], ss[2])
    assert len(built) == 3
    get(ws[1], ss[1])
    assert len(built) == 4


def test_device_tables_are_asked_for_outside_capture_only(capture):
    asked = []
    cache = PlanCache(2)
    w, s = torch.zeros(2, 3), torch.zeros(2, 3)
    tables = [torch.zeros(4)]

    def get():
        return cache.get(
            (), [w], [s], lambda: "plan", device_tables=lambda plan: asked.append(plan) or tables
        )

    get()
    capture(True)
    get()
    assert asked == ["plan"]


def test_threads_share_a_small_cache():
    cache = PlanCache(2)
    ws, ss = _tensors(8), _tensors(8)
    errors = []

    def hammer(offset):
        try:
            for i in range(400):
                k = (i + offset) % len(ws)
                plan = cache.get((), [ws[k]], [ss[k]], lambda k=k: ("plan", k))
                assert plan == ("plan", k)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(cache) == 2


def test_without_a_bound_every_entry_a_capture_hands_out_is_kept(capture):
    cache = PlanCache(100, max_captured=None)
    get, _ = _getter(cache)
    ws, ss = _tensors(70), _tensors(70)
    for w, s in zip(ws, ss):
        get(w, s)
    capture(True)
    for w, s in zip(ws, ss):
        get(w, s)
    assert cache.captured() == 70


# --- stream order ---------------------------------------------------------------------


class FakeStream:
    """Records the streams it was made to wait for."""

    def __init__(self, name):
        self.name, self.waited_for = name, []

    def wait_stream(self, other):
        self.waited_for.append(other.name)


@pytest.fixture
def streams(monkeypatch):
    """Two fake streams; ``use(name)`` makes one current for every device."""
    made = {n: FakeStream(n) for n in ("a", "b")}
    current = ["a"]
    monkeypatch.setattr(plan_cache, "current_stream", lambda device: made[current[0]])

    def use(name):
        current[0] = name

    return made, use


def test_an_entry_used_on_another_stream_waits_for_the_last_one(streams):
    # Built on a: its uploads are queued there. Used at once on b, b must wait for a
    # (else b's launch may read tables not yet uploaded); later uses on b wait no more;
    # back on a, a waits for b's launches (they may still read or write the entry).
    made, use = streams
    cache = PlanCache(4)
    get, built = _getter(cache)
    w, s = torch.zeros(2, 3), torch.zeros(2, 3)
    get(w, s)
    get(w, s)
    assert made["a"].waited_for == [] and made["b"].waited_for == []
    use("b")
    get(w, s)
    get(w, s)
    assert made["b"].waited_for == ["a"]
    use("a")
    get(w, s)
    assert made["a"].waited_for == ["b"] and len(built) == 1


def test_a_capture_waits_for_no_stream(streams, capture):
    # A capture may not wait on work queued outside it (torch.cuda.graph synchronises the
    # device before it begins); the entry's last stream stays the eager one.
    made, use = streams
    cache = PlanCache(4)
    get, _ = _getter(cache)
    w, s = torch.zeros(2, 3), torch.zeros(2, 3)
    get(w, s)
    use("b")
    capture(True)
    get(w, s)
    capture(False)
    assert made["b"].waited_for == []
    get(w, s)
    assert made["b"].waited_for == ["a"]
