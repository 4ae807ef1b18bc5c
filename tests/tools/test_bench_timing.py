"""The benchmark's timing loop: warm-ups, rounds, and the per-method time budget."""

from __future__ import annotations

import time

import torch

from bench.timing import time_methods


def _sleeping(seconds):
    def fn(ws, ss):
        time.sleep(seconds)
        ws[0].add_(1)  # an output that shows which run it came from: always the first

    return fn


def test_a_method_over_its_budget_sits_out_the_later_rounds():
    calls = {"fast": 0, "slow": 0}

    def counted(name, fn):
        def wrapped(ws, ss):
            calls[name] += 1
            fn(ws, ss)

        return wrapped

    pristine = [torch.zeros(3)]
    fast, slow = time_methods(
        [counted("fast", _sleeping(0)), counted("slow", _sleeping(0.06))],
        [True, False],
        pristine,
        [torch.zeros(3)],
        repeat=5,
        budget_s=0.1,
    )
    assert fast.runs == 5 and calls["fast"] == 6  # a warm-up, then every round
    assert fast.first_call_s is not None
    assert 1 <= slow.runs <= 2 and calls["slow"] == slow.runs  # no warm-up; 2 x 0.06 > 0.1
    assert slow.first_call_s is None and slow.median_s >= 0.06
    # each run starts from the pristine weights; the output is a run's, not an accumulation
    assert torch.equal(fast.output[0], torch.ones(3)) and torch.equal(slow.output[0], torch.ones(3))
    assert torch.equal(pristine[0], torch.zeros(3))


def test_without_a_budget_every_method_runs_every_round():
    timings = time_methods(
        [_sleeping(0), _sleeping(0.01)],
        [False, False],
        [torch.zeros(2)],
        [torch.zeros(2)],
        repeat=3,
    )
    assert [t.runs for t in timings] == [3, 3]
