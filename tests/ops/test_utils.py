"""The paper's initialisations: random_prune_ (sparse init) and agnosticize_ (weights in
{0, value}), applied before LaPerm takes S, so the zeros are part of every sync."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import laperm_kernels as lk
from laperm_kernels.utils import permutable_tensors
from tests.helpers import assert_bitwise_equal

# Tiny models: one thread is fastest, and immune to a busy neighbour on the
# same cores. Results do not depend on the thread count (docs/contract.md).
pytestmark = pytest.mark.usefixtures("one_thread")


def model(seed: int = 0) -> nn.Module:
    """2-D and 3-D weights beside biases and LayerNorm parameters (never run forward)."""
    torch.manual_seed(seed)
    return nn.ModuleList(
        [nn.Linear(20, 33), nn.LayerNorm(33), nn.Conv1d(1, 3, 5), nn.Linear(3 * 29, 7)]
    )


def _weights(m):
    return [p for p in m.parameters() if p.dim() >= 2]


def _one_d(m):
    return [p for p in m.parameters() if p.dim() < 2]


def test_permutable_tensors():
    m = model()
    assert [p.shape for p in permutable_tensors(m)] == [(33, 20), (3, 1, 5), (7, 87)]
    t = [torch.zeros(3), torch.zeros(2, 2)]
    assert permutable_tensors(iter(t))[0] is t[0]
    with pytest.raises(TypeError, match=r"params\[1\]"):
        permutable_tensors([torch.zeros(2), 3.0])


@pytest.mark.parametrize("p", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_random_prune_exact_count_weights_only(p):
    m = model()
    ones_d = [q.detach().clone() for q in _one_d(m)]
    assert all(w.count_nonzero() == w.numel() for w in _weights(m))
    before = [w.detach().clone() for w in _weights(m)]
    out = lk.random_prune_(m, p, generator=torch.Generator().manual_seed(0))
    assert [id(t) for t in out] == [id(w) for w in _weights(m)]
    for w, b in zip(_weights(m), before):
        zeros = w.numel() - int(w.count_nonzero())
        assert zeros == round(p * w.numel()), (w.shape, p)
        kept = w != 0
        assert torch.equal(w[kept], b[kept])  # the rest untouched
    for q, b in zip(_one_d(m), ones_d):
        assert_bitwise_equal(q.detach(), b, "1-D params are not pruned")


def test_random_prune_rounds_per_tensor():
    ts = [torch.ones(5), torch.ones(3, 3), torch.ones(2, 7)]
    lk.random_prune_(ts, 0.3)  # 1.5 -> 2, 2.7 -> 3, 4.2 -> 4 (Python's round)
    assert [int((t == 0).sum()) for t in ts] == [round(0.3 * 5), round(0.3 * 9), round(0.3 * 14)]
    assert [int((t == 0).sum()) for t in ts] == [2, 3, 4]


def test_random_prune_given_tensors_includes_1d():
    m = model()
    bias = m[0].bias
    lk.random_prune_([bias], 0.5, generator=torch.Generator().manual_seed(1))
    assert int((bias == 0).sum()) == round(0.5 * 33)
    assert all(w.count_nonzero() == w.numel() for w in _weights(m))


def test_random_prune_deterministic_with_generator():
    a, b, c = model(), model(), model()
    lk.random_prune_(a, 0.4, generator=torch.Generator().manual_seed(7))
    lk.random_prune_(b, 0.4, generator=torch.Generator().manual_seed(7))
    lk.random_prune_(c, 0.4, generator=torch.Generator().manual_seed(8))
    for wa, wb in zip(_weights(a), _weights(b)):
        assert_bitwise_equal(wa.detach(), wb.detach())
    assert any(not torch.equal(wa == 0, wc == 0) for wa, wc in zip(_weights(a), _weights(c)))
    # Without a generator it follows the global RNG.
    d, e = model(), model()
    torch.manual_seed(3)
    lk.random_prune_(d, 0.4)
    torch.manual_seed(3)
    lk.random_prune_(e, 0.4)
    for wd, we in zip(_weights(d), _weights(e)):
        assert_bitwise_equal(wd.detach(), we.detach())


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_random_prune_bad_fraction(bad):
    m = model()
    before = [w.detach().clone() for w in _weights(m)]
    with pytest.raises(ValueError, match="p must be a fraction"):
        lk.random_prune_(m, bad)
    for w, b in zip(_weights(m), before):
        assert_bitwise_equal(w.detach(), b)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_agnosticize_two_values(p):
    m = model()
    ones_d = [q.detach().clone() for q in _one_d(m)]
    out = lk.agnosticize_(m, 0.05, p=p, generator=torch.Generator().manual_seed(0))
    assert len(out) == 3
    v = torch.tensor(0.05, dtype=torch.float32)
    for w in _weights(m):
        values = set(torch.unique(w.detach()).tolist())
        assert values <= {0.0, float(v)}
        zeros = int((w == 0).sum())
        assert zeros == round(p * w.numel())
        assert int((w == v).sum()) == w.numel() - zeros
        assert not torch.signbit(w.detach()).any()  # +0.0, not -0.0
    for q, b in zip(_one_d(m), ones_d):
        assert_bitwise_equal(q.detach(), b)


def test_agnosticize_callable_value_per_tensor():
    m = model()
    seen = []

    def he_scale(t):
        seen.append(tuple(t.shape))
        fan_in = t[0].numel()
        return math.sqrt(2.0 / fan_in)

    lk.agnosticize_(m, he_scale, p=0.5, generator=torch.Generator().manual_seed(0))
    assert seen == [(33, 20), (3, 1, 5), (7, 87)]
    for w in _weights(m):
        v = float(torch.tensor(math.sqrt(2.0 / w[0].numel()), dtype=torch.float32))
        assert set(torch.unique(w.detach()).tolist()) == {0.0, v}


@pytest.mark.parametrize("bad", ["x", None, True, [0.1], torch.tensor(0.1), 1j])
def test_agnosticize_bad_value(bad):
    m = model()
    with pytest.raises(TypeError, match="value"):
        lk.agnosticize_(m, bad)
    with pytest.raises(TypeError, match="value"):
        lk.agnosticize_(m, lambda t: bad)


def test_agnosticize_bad_fraction():
    with pytest.raises(ValueError, match="p must be a fraction"):
        lk.agnosticize_(model(), 0.1, p=2)


def test_zeros_and_values_survive_laperm_syncs():
    """S is taken after the init: every sync puts back exactly the row's zeros and values."""
    m = nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 10))
    torch.manual_seed(0)
    lk.random_prune_(m[0], 0.5, generator=torch.Generator().manual_seed(0))
    lk.agnosticize_(m[2], 0.125, p=0.5, generator=torch.Generator().manual_seed(1))
    zeros_per_row = [(w == 0).sum(1) for w in (m[0].weight, m[2].weight)]
    opt = lk.LaPerm(torch.optim.Adam(m.parameters(), lr=1e-2), sync_period=4)
    g = torch.Generator().manual_seed(2)
    moved = False
    for _ in range(8):
        x, y = torch.randn(8, 20, generator=g), torch.randint(0, 10, (8,), generator=g)
        before = m[2].weight.detach().clone()
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
        moved |= not torch.equal(before, m[2].weight)
    assert moved
    for w, z in zip((m[0].weight, m[2].weight), zeros_per_row):
        assert torch.equal((w == 0).sum(1), z)
    assert set(torch.unique(m[2].weight.detach()).tolist()) == {0.0, 0.125}


def test_single_tensor_is_one_tensor():
    """A tensor passed alone is one tensor, not an iterable of its rows."""
    t = torch.ones(3, 3)
    assert lk.random_prune_(t, 0.5, generator=torch.Generator().manual_seed(0))[0] is t
    assert int((t == 0).sum()) == round(0.5 * 9) == 4
    b = torch.ones(5)
    lk.random_prune_(b, 0.4, generator=torch.Generator().manual_seed(0))
    assert int((b == 0).sum()) == 2
    w = torch.ones(4, 10)
    lk.agnosticize_(w, 0.5, p=0.25, generator=torch.Generator().manual_seed(0))
    assert int((w == 0).sum()) == 10 and int((w == 0.5).sum()) == 30
