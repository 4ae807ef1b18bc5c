"""torch.optim's global step hooks, fired once per LaPerm step.

``torch.optim.Optimizer`` wraps every optimizer class's ``step`` in a caller of the global
step hooks (``torch.optim.optimizer.register_optimizer_step_pre_hook`` and ``_post_hook``)
and of the instance's own ones. ``LaPerm.step`` is such a step, and it calls the inner
optimizer's, another: left alone, each global hook would run twice per ``opt.step()``,
once with the LaPerm and once with the inner optimizer. LaPerm runs the inner step between
:func:`hold_back` and :func:`put_back`, so the global hooks run once, with the LaPerm,
around the whole step (the sync included), while the inner optimizer's own hooks, its
LR scheduler's step counter and the profiler's record of its step still run with it.

While the inner step runs, torch's tables of global hooks are empty: a hook registered
meanwhile is kept (after the others), but an optimizer stepped in another thread
meanwhile runs without them.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch.optim import optimizer as _torch_optimizer

Held = Optional[List[Dict[int, object]]]


def _tables() -> tuple:
    return (
        _torch_optimizer._global_optimizer_pre_hooks,
        _torch_optimizer._global_optimizer_post_hooks,
    )


def hold_back() -> Held:
    """Takes the global step hooks out of torch's tables; None when there are none (the
    usual case: checked here, without a call that torch.compile would break at)."""
    tables = _tables()
    return _take(tables) if any(tables) else None


def put_back(held: Held) -> None:
    """Puts back what :func:`hold_back` took, in their order, before any hook registered
    since (a handle's id grows with each registration, so the order is torch's)."""
    if held is not None:
        _restore(_tables(), held)


@torch.compiler.disable
def _take(tables) -> List[Dict[int, object]]:
    held = [dict(table) for table in tables]
    for table in tables:
        table.clear()
    return held


@torch.compiler.disable
def _restore(tables, held: List[Dict[int, object]]) -> None:
    for table, hooks in zip(tables, held):
        added = dict(table)
        table.clear()
        table.update(hooks)
        table.update(added)
