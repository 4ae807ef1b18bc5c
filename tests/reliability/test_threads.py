"""Calls from several Python threads at once: correct results, no deadlock, and the GIL
released while the C++ kernel works."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops.backends import cuda
from tests.helpers import (
    assert_bitwise_equal,
    needs_extension,
    num_threads,
    reference_result,
    tensor_group,
)

JOIN_TIMEOUT_S = 120


def _run_threads(targets):
    """Runs each callable in its own thread; re-raises the first error; fails on a hang."""
    errors = []

    def guarded(fn):
        try:
            fn()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a thread did not finish: deadlock?"
    if errors:
        raise errors[0]


SPECS = [
    ((16, 300), torch.float32),
    ((8, 3, 3, 3), torch.float32),
    ((40,), torch.float16),
    ((4, 5000), torch.bfloat16),
    ((30, 20), torch.float64),
]


@pytest.mark.parametrize("backend", ["auto", *lk.available_backends("cpu")])
def test_many_threads_same_and_different_shapes(backend):
    jobs = []
    for i in range(8):
        specs = SPECS if i % 2 else [((i + 3, 70 + i), torch.float32)]  # shared or own shapes
        ws, ss = tensor_group(specs, "special", seed=i)
        want = [reference_result(w, s) for w, s in zip(ws, ss)]
        jobs.append((ws, ss, want))

    def work(ws, ss, want):
        def run():
            for _ in range(5):  # the same call again: the result must not change
                out = [w.clone() for w in ws]
                lk.rank_match_many_(out, ss, backend=backend)
                for o, e in zip(out, want):
                    assert_bitwise_equal(o, e)

        return run

    _run_threads([work(*job) for job in jobs])


@needs_extension
def test_cuda_plans_from_many_threads_through_the_emulation():
    # the CUDA backend's host path: plan cache and planned op, CPU tensors standing in
    jobs = [
        tensor_group(
            [((6, 100 + 50 * (i % 3)), torch.float32), ((2, 9000), torch.float32)], "special", i
        )
        for i in range(6)
    ]

    def work(ws, ss):
        def run():
            want = [reference_result(w, s) for w, s in zip(ws, ss)]
            for _ in range(5):
                out = [w.clone() for w in ws]
                plan = cuda.plan_for(out, ss, max_block_tile=8192)
                torch.ops.laperm_testing.emulate_planned_(out, ss, *plan)
                for o, e in zip(out, want):
                    assert_bitwise_equal(o, e)

        return run

    _run_threads([work(*job) for job in jobs])


def test_laperm_optimizers_in_parallel_threads_train_as_alone():
    def build(seed):  # in the main thread: initialisation draws from the global RNG
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))
        return net, lk.LaPerm(torch.optim.SGD(net.parameters(), lr=0.1), sync_period=2)

    def train(seed, net, opt, results):
        g = torch.Generator().manual_seed(seed)
        for _ in range(6):
            opt.zero_grad()
            net(torch.randn(4, 10, generator=g)).square().mean().backward()
            opt.step()
        results[seed] = [p.detach().clone() for p in net.parameters()]

    alone, together = {}, {}
    for seed in range(4):
        train(seed, *build(seed), alone)
    built = {seed: build(seed) for seed in range(4)}
    _run_threads([lambda s=seed: train(s, *built[s], together) for seed in range(4)])
    for seed in range(4):
        for a, b in zip(together[seed], alone[seed]):
            assert_bitwise_equal(a, b, f"model {seed}")


@needs_extension
def test_the_gil_is_released_during_the_cpu_kernel():
    """While one thread is inside a long native call, another runs Python code. Held, the
    GIL would let the other thread run only before the call starts (one switch interval,
    5 ms) and after it returns; released, it runs all along. The same measurement around
    a C call that holds the GIL (``sum`` over a ``range``) is the control."""
    w = torch.randn(4096, 4096)
    s = lk.sort_rows(w)
    with num_threads(1):
        lk.rank_match_(w.clone(), s, backend="cpu")  # warm-up
        rate = _python_loop_rate()
        kernel = _other_thread_progress(lambda: lk.rank_match_(w, s, backend="cpu"))
        control = _other_thread_progress(lambda: sum(range(30_000_000)))
    for _, seconds in (kernel, control):
        assert seconds > 0.05, "a call too short to tell"

    def bound(seconds):  # a blocked thread counts for one switch interval; a free one,
        # even sharing its core with busy neighbours, for a good part of the call
        return rate * (0.005 + 0.001) + 0.02 * rate * seconds

    assert control[0] < bound(control[1]), ("the control did not block", control, rate)
    assert kernel[0] > bound(kernel[1]), ("the kernel held the GIL", kernel, rate)


def _other_thread_progress(call):
    """(loop iterations this thread made while ``call`` ran in another, its seconds)."""
    inside, count = {}, 0

    def run():
        inside["start"] = time.perf_counter()
        call()
        inside["seconds"] = time.perf_counter() - inside["start"]

    t = threading.Thread(target=run)
    t.start()
    while "start" not in inside:
        pass
    while t.is_alive():
        count += 1
    t.join()
    return count, inside["seconds"]


def _python_loop_rate() -> float:
    """Iterations per second of a counting loop like the one above, measured alone."""
    count, end = 0, time.perf_counter() + 0.05
    while time.perf_counter() < end:
        count += 1
    return count / 0.05
