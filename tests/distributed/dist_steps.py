"""What the LaPerm workers of the gloo tests share: training with a record of every sync,
gathering DTensors, and saving / loading with torch.distributed.checkpoint."""

from __future__ import annotations

import torch


def full(p: torch.Tensor) -> torch.Tensor:
    """A copy of the whole tensor (gathered, for a DTensor: a collective)."""
    return (p.full_tensor() if hasattr(p, "placements") else p).detach().clone()


def permuted(opt):
    """{name: (parameter, row_dim)} of the permuted parameters, by the groups'
    ``param_names``."""
    return {
        n: (p, g.get("row_dim", 0))
        for g in opt.param_groups
        for n, p in zip(g["param_names"], g["params"])
        if p in opt.sorted_inits
    }


def train(model, opt, loss, batch, first: int, last: int, record=None) -> None:
    """Steps ``first..last`` on ``batch(t)``; with a list ``record``, appends the gathered
    permuted weights before and after every sync (before: from a step hook of the inner
    optimizer, which runs before LaPerm's sync)."""
    weights = permuted(opt)
    captured = {}

    def before_sync(optimizer, args, kwargs):
        if opt._due(opt.step_count + 1):
            captured["pre"] = {n: full(p) for n, (p, _) in weights.items()}

    handle = opt.optimizer.register_step_post_hook(before_sync) if record is not None else None
    for t in range(first, last + 1):
        opt.zero_grad()
        loss(model, batch(t)).backward()
        opt.step()
        if "pre" in captured:
            record.append(
                {
                    "step": t,
                    "pre": captured.pop("pre"),
                    "post": {n: full(p) for n, (p, _) in weights.items()},
                }
            )
    if handle is not None:
        handle.remove()


def save(model, opt, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    dcp.save(
        {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
        checkpoint_id=path,
    )


def load(model, opt, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
