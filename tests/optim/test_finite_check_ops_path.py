"""check_finite on the ops path of a sync (not LaPerm's one native call): the path of every
CUDA model, of ``backend="torch"`` and of weights that are not their own rows
(``row_dim=1``). The check must read the weights before the rank match: after it, a NaN's
position holds an initial value and nothing is left to report. CUDA's reduction
(``torch._foreach_norm`` per group, not the native ``max_abs``) is run here on the CPU.
(The native path: test_finite_check.py.)"""

from __future__ import annotations

import types

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops import max_abs

pytestmark = pytest.mark.usefixtures("one_thread")

OPS_PATHS = [("torch", 0), ("auto", 1), ("cpu", 1)]


def _took_the_ops_path(opt) -> list:
    """Whether each plan's next sync skipped the native call (spying on the plans)."""
    said = []
    for plan in opt._sync_plans.values():
        run = plan.run

        def spy(*args, run=run, **kwargs):
            result = run(*args, **kwargs)
            said.append(not result.native)
            return result

        plan.run = spy
    return said


@pytest.fixture(params=["native max_abs", "foreach_norm"])
def reduction(request, monkeypatch):
    """check_finite's reduction: the CPU's native one, or the one CUDA tensors get."""
    if request.param == "foreach_norm":
        monkeypatch.setattr(max_abs, "_extension", types.SimpleNamespace(is_loaded=lambda: False))
    return request.param


@pytest.mark.parametrize("backend,row_dim", OPS_PATHS)
def test_a_nan_met_by_a_sync_on_the_ops_path_is_reported(backend, row_dim, reduction):
    a = torch.nn.Parameter(torch.randn(6, 7))
    b = torch.nn.Parameter(torch.randn(5, 4))
    opt = lk.LaPerm(
        torch.optim.SGD([{"params": [a, b], "row_dim": row_dim}], lr=0.1),
        sync_period=3,
        backend=backend,
    )
    opt.sync()  # past the first-step check (it would take S again) and auto's trial
    ops_path = _took_the_ops_path(opt)
    with torch.no_grad():
        b[2, 1] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"\(parameter 1 of param group 0 \(NaN\)\)"):
        opt.sync()
    assert ops_path == [True]
    assert torch.isfinite(b).all()  # the NaN's position got an initial value
