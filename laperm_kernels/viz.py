"""The paper's "weight profile" plot (Qiu & Suda 2020, Section 2).

Sort every row of a weight tensor and plot the sorted values against their normalised
rank: the curve of a row is its value distribution, whatever order the values sit in. The
paper's observation is that training with Adam barely changes these curves: what it
changes is *where* the values sit. LaPerm keeps them exactly (each row always holds its
initial values), so a LaPerm-trained model's profile is its initial one.

    from laperm_kernels.viz import weight_profile
    fig = weight_profile(model)           # one curve + band per permuted tensor
    fig.savefig("profile.png")

matplotlib is needed (``pip install matplotlib``) and imported only when plotting.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

Params = Union[nn.Module, Iterable[torch.Tensor]]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("laperm_kernels.viz needs matplotlib: pip install matplotlib") from e
    return plt


def _named_tensors(module_or_params: Params) -> List[Tuple[str, torch.Tensor]]:
    """The tensors LaPerm permutes by default (ndim >= 2), with names for the legend."""
    if isinstance(module_or_params, nn.Module):
        return [(name, p) for name, p in module_or_params.named_parameters() if p.dim() >= 2]
    out = []
    for i, t in enumerate(module_or_params):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() >= 2:
            out.append((f"tensor {i}", t))
    return out


@torch.no_grad()
def profile_curves(
    tensor: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tensor's weight profile as numbers: ``(ranks, low, median, high)``, each of
    length ``n``, the row length.

    Rows are ``tensor.reshape(shape[0], -1)`` (one per output unit, as LaPerm permutes
    them), each sorted ascending. ``ranks[i]`` is the normalised rank in [0, 1] of the
    i-th smallest value of a row; ``low[i]``, ``median[i]`` and ``high[i]`` are the
    smallest, median (the lower one for an even row count) and largest, over rows, of
    that i-th smallest value.
    """
    rows = tensor.detach().reshape(tensor.shape[0], -1).to("cpu", torch.float64)
    n = rows.shape[1]
    ranks = (
        torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        if n > 1
        else torch.zeros(n, dtype=torch.float64)
    )
    if n == 0 or rows.shape[0] == 0:
        empty = torch.empty(0, dtype=torch.float64)
        return ranks[:0], empty, empty, empty
    ordered = rows.sort(dim=1).values
    return (
        ranks,
        ordered.min(dim=0).values,
        ordered.median(dim=0).values,
        ordered.max(dim=0).values,
    )


def weight_profile(
    module_or_params: Params,
    ax: Optional[Any] = None,
    *,
    title: Optional[str] = None,
    band: bool = True,
    legend: bool = True,
):
    """Plots the weight profile of each permuted tensor (ndim >= 2) of a model.

    For each tensor, the median over its rows of the sorted row values is drawn against
    the normalised rank (0 = a row's smallest value, 1 = its largest), with a band from
    the smallest to the largest row at each rank. Returns the matplotlib ``Figure``
    (``ax.figure`` when an ``ax`` is given; otherwise a new one).

    Args:
        module_or_params: an ``nn.Module`` (its parameters of ndim >= 2, named in the
            legend by their parameter names) or an iterable of tensors.
        ax: a matplotlib Axes to draw on; a new figure and axes when None.
        title: the axes' title.
        band: draw the min-max band across rows.
        legend: draw a legend (name and shape of each tensor).
    """
    plt = _pyplot()
    tensors = _named_tensors(module_or_params)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 4.0))
    else:
        fig = ax.figure
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, (name, t) in enumerate(tensors):
        ranks, low, mid, high = profile_curves(t)
        if ranks.numel() == 0:
            continue
        color = colors[i % len(colors)]
        x = ranks.numpy()
        ax.plot(x, mid.numpy(), color=color, lw=1.5, label=f"{name} {tuple(t.shape)}")
        if band:
            ax.fill_between(x, low.numpy(), high.numpy(), color=color, alpha=0.18, lw=0)
    ax.set_xlabel("normalised rank within row")
    ax.set_ylabel("weight value")
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    if title is not None:
        ax.set_title(title)
    if legend and tensors:
        ax.legend(fontsize="small", loc="upper left")
    return fig


__all__ = ["profile_curves", "weight_profile"]
