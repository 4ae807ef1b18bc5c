"""pytest-benchmark suite: the CLI's presets, every backend and baseline, one thread.

Not part of the default test run (pyproject.toml's addopts ignore tests/bench unless it is
named). Run it with

    python -m pytest tests/bench --benchmark-columns=median,ops --benchmark-sort=name

Each round restores the weights (untimed setup) and is checked against the reference
once, so a wrong kernel cannot post a time.
"""

import pytest
import torch

from bench import baselines
from bench.presets import PRESETS
from bench.results import make_model, methods_for
from laperm_kernels import rank_match_many_
from laperm_kernels.ops.reference import bitwise_equal

DTYPE = torch.float32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cases():
    for preset in PRESETS:
        for name, fn, checked in methods_for(torch.device("cpu"), DTYPE, None):
            yield pytest.param(preset, name, fn, checked, id=f"{preset}-{name}")


@pytest.mark.parametrize("preset,name,fn,checked", list(_cases()))
def test_rank_match_throughput(benchmark, preset, name, fn, checked):
    pristine, sorted_inits = make_model(PRESETS[preset], DTYPE, torch.device("cpu"))
    baselines.prepare_sort_keys(pristine)
    work = [p.clone() for p in pristine]

    def restore():
        for w, p in zip(work, pristine):
            w.copy_(p)
        return (work, sorted_inits), {}

    benchmark.extra_info["elements"] = sum(p.numel() for p in pristine)
    benchmark.pedantic(fn, setup=restore, rounds=5, warmup_rounds=1)
    if checked:
        expected = [p.clone() for p in pristine]
        rank_match_many_(expected, sorted_inits, backend="torch")
        assert all(bitwise_equal(a, b) for a, b in zip(work, expected))
