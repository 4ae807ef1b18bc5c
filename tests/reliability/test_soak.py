"""A long run of LaPerm syncs: the invariant holds throughout and memory stays flat.

Every step is a sync (sync_period=1) after an SGD step on noisy gradients, so each sync
really moves weights; every ``CHECK_EVERY`` syncs each permuted row must sort to its
sorted initial row exactly. Resident memory is read after a warm-up and at the end, and
the caches (plans, dispatch decisions) must stay bounded.

    python -m pytest tests/reliability/test_soak.py -m slow -q     # the long run: 20,000 syncs

The test suite runs the short version (1,000 syncs).
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import laperm_kernels as lk
from laperm_kernels.ops import dispatch

CHECK_EVERY = 50
WARMUP = 200
RSS_GROWTH_LIMIT = 16 << 20  # bytes: allocator noise, not a leak of 4 tensors a sync


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def soak(syncs: int) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 40), nn.Linear(40, 10)
    ).to(torch.float32)
    model[3].to(torch.bfloat16)  # two dtype groups
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=1e-2), sync_period=1)
    noise = torch.Generator().manual_seed(1)
    permuted = list(opt.sorted_inits)
    failures, rss = [], {}
    for step in range(1, syncs + 1):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=noise).to(p.dtype)
        opt.step()
        if step % CHECK_EVERY == 0:
            for i, p in enumerate(permuted):
                rows = p.detach().reshape(p.shape[0], -1)
                if not torch.equal(
                    rows.sort(dim=1).values, opt.sorted_inits[p].reshape(rows.shape)
                ):
                    failures.append((step, i))
        if step == WARMUP:
            rss["after_warmup"] = resident_bytes()
    rss["end"] = resident_bytes()
    return {
        "failures": failures,
        "rss": rss,
        "step_count": opt.step_count,
        "decisions": len(dispatch.report()),
        "backends": dict(opt.sync_backends),
    }


def _check(result, syncs):
    assert result["failures"] == []
    assert result["step_count"] == syncs
    assert result["decisions"] <= 2 * dispatch.MAX_DECISIONS
    growth = result["rss"]["end"] - result["rss"]["after_warmup"]
    assert growth < RSS_GROWTH_LIMIT, f"resident memory grew {growth >> 10} KiB"


@pytest.mark.usefixtures("one_thread")
def test_short_soak():
    _check(soak(1_000), 1_000)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_long_soak():
    _check(soak(20_000), 20_000)
