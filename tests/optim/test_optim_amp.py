"""LaPerm under torch.amp.GradScaler: a skipped step is skipped entirely.

``scaler.step(opt)`` calls ``opt.step()`` only when the unscaled gradients are finite, so
on an overflow LaPerm's step counter does not advance, no sync runs and the weights (and
the inner optimizer's state) stay exactly as they were.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal


def _cpu_grad_scaler():
    amp = getattr(torch, "amp", None)
    if amp is None or not hasattr(amp, "GradScaler"):
        pytest.skip(f"torch {torch.__version__} has no torch.amp.GradScaler")
    try:
        return amp.GradScaler("cpu", init_scale=2.0**8)
    except Exception as e:  # noqa: BLE001 - older torch: CUDA-only scaler
        pytest.skip(f"torch.amp.GradScaler('cpu') unavailable in torch {torch.__version__}: {e!r}")


# Tiny models: one thread is fastest, and immune to a busy neighbour on the
# same cores. Results do not depend on the thread count (docs/contract.md).
pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(k):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 10))
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = lk.LaPerm(adam, sync_period=k)
    S = [opt.sorted_inits[model[0].weight], opt.sorted_inits[model[2].weight]]
    return model, adam, opt, S


def _batch(t):
    g = torch.Generator().manual_seed(t)
    return torch.randn(8, 20, generator=g), torch.randint(0, 10, (8,), generator=g)


def _synced(model, S):
    ws = (model[0].weight, model[2].weight)
    return [torch.equal(w.detach().sort(1).values, s) for w, s in zip(ws, S)]


def _scaled_step(model, opt, scaler, t, poison=None):
    x, y = _batch(t)
    opt.zero_grad()
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    if poison is not None:
        poison(model)
    scaler.step(opt)
    scaler.update()


def _inf_grad(model):
    model[0].weight.grad[3, 5] = float("inf")


def _nan_grad(model):
    model[2].bias.grad[0] = float("nan")


@pytest.mark.parametrize("poison", [_inf_grad, _nan_grad], ids=["inf", "nan"])
def test_overflow_skips_step_and_sync(poison):
    scaler = _cpu_grad_scaler()
    model, adam, opt, S = _setup(k=2)

    _scaled_step(model, opt, scaler, 1)
    assert opt.step_count == 1 and _synced(model, S) == [False, False]

    # Step 2 would be a sync step; its gradients overflow.
    before = [p.detach().clone() for p in model.parameters()]
    adam_before = {k: v.clone() for k, v in adam.state[model[0].weight].items()}
    scale_before = scaler.get_scale()
    _scaled_step(model, opt, scaler, 2, poison=poison)
    assert scaler.get_scale() < scale_before  # the scaler did see the overflow
    assert opt.step_count == 1
    for p, b in zip(model.parameters(), before):
        assert_bitwise_equal(p.detach(), b, "weights after a skipped step")
    for key, v in adam_before.items():
        assert_bitwise_equal(adam.state[model[0].weight][key], v, f"Adam {key}")
    assert _synced(model, S) == [False, False]  # no sync ran

    # The next finite step is step 2 for LaPerm: it runs, and syncs.
    _scaled_step(model, opt, scaler, 3)
    assert opt.step_count == 2
    assert _synced(model, S) == [True, True]
    assert float(adam.state[model[0].weight]["step"]) == 2


def test_scaled_training_matches_unscaled_laperm():
    """Finite steps through the scaler are ordinary LaPerm steps: with a power-of-two
    scale the unscaled gradients are exact, so the weights match bit for bit."""
    scaler = _cpu_grad_scaler()
    model, _, opt, _ = _setup(k=3)
    ref, _, ref_opt, _ = _setup(k=3)
    for t in range(1, 8):
        _scaled_step(model, opt, scaler, t)
        x, y = _batch(t)
        ref_opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        ref_opt.step()
    assert opt.step_count == ref_opt.step_count == 7
    for p, q in zip(model.parameters(), ref.parameters()):
        assert_bitwise_equal(p.detach(), q.detach())
