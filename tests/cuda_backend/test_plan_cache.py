"""The GPU backends' plan cache: LRU bookkeeping, plans a CUDA graph captured, threads.

CPU tensors stand in for device tensors: the cache keys on addresses and shapes only.
"""

from __future__ import annotations

import threading

import torch

from laperm_kernels.backends import plan_cache
from laperm_kernels.backends.plan_cache import PlanCache


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
    get(ws[0], ss[0])                    # a is now the most recent
    get(ws[2], ss[2])                    # evicts ws[1]'s plan
    assert len(cache) == 2 and get(ws[0], ss[0]) is a and len(built) == 3
    get(ws[1], ss[1])
    assert len(built) == 4


def test_a_plan_a_graph_captured_outlives_eviction(monkeypatch):
    # The graph reads the plan's device tables at every replay: dropping the plan would
    # free them while the graph still points at them.
    cache = PlanCache(2)
    get, built = _getter(cache)
    ws, ss = _tensors(6), _tensors(6)
    monkeypatch.setattr(plan_cache, "_capturing", lambda device: True)
    captured = get(ws[0], ss[0])
    monkeypatch.setattr(plan_cache, "_capturing", lambda device: False)
    for w, s in zip(ws[1:], ss[1:]):     # far more plans than the LRU holds
        get(w, s)
    assert get(ws[0], ss[0]) is captured
    assert built.count(ws[0].data_ptr()) == 1
    assert len(cache) == 3               # two in the LRU, one kept for its graph


def test_device_tables_are_asked_for_outside_capture_only(monkeypatch):
    asked = []
    cache = PlanCache(2)
    w, s = torch.zeros(2, 3), torch.zeros(2, 3)
    tables = [torch.zeros(4)]

    def get():
        return cache.get((), [w], [s], lambda: "plan",
                         device_tables=lambda plan: asked.append(plan) or tables)

    get()
    monkeypatch.setattr(plan_cache, "_capturing", lambda device: True)
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
