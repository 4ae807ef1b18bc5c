"""The plots of a comparison run: accuracy and loss curves, and the weight profiles."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

from comparison import LABELS, METHODS
from torch import nn


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: the plots need matplotlib: pip install matplotlib")
    return plt


def plot_accuracy(history, title: str, steps_per_epoch: int, path: Path) -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for m, color in zip(METHODS, ("C0", "C3")):
        epochs, evals = history[m]["per_epoch"], history[m]["per_eval"]
        if evals:  # the paper's protocol: every --eval-every steps, in epochs
            x = [r["step"] / steps_per_epoch for r in evals]
            ax.plot(
                x,
                [100 * r["test_acc"] for r in evals],
                "-",
                color=color,
                lw=1,
                label=f"{LABELS[m]} test, every {evals[0]['step']} steps",
            )
        ep = [r["epoch"] for r in epochs]
        ax.plot(
            ep,
            [100 * r["test_acc"] for r in epochs],
            "o",
            color=color,
            ms=3,
            label=f"{LABELS[m]} test, epoch end",
        )
        if "val_acc" in epochs[0]:
            ax.plot(
                ep,
                [100 * r["val_acc"] for r in epochs],
                "--",
                color=color,
                lw=1,
                alpha=0.6,
                label=f"{LABELS[m]} val",
            )
        ax2.plot(ep, [r["train_loss"] for r in epochs], "o-", color=color, ms=3, label=LABELS[m])
    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        a.legend(fontsize="small")
    ax.set_ylabel("accuracy (%)")
    lo = min(
        100 * r["test_acc"]
        for m in METHODS
        for r in history[m]["per_epoch"] + history[m]["per_eval"]
    )
    ax.set_ylim(max(lo - 1.0, 0.0), 100.0 if lo < 90 else min(100.0, 99.6))
    ax.set_title("accuracy (LaPerm: reconnected weights)", fontsize="medium")
    ax2.set_ylabel("mean training loss")
    ax2.set_yscale("log")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_profiles(models: Dict[str, nn.Module], title: str, path: Path) -> None:
    plt = _pyplot()
    from laperm_kernels.viz import weight_profile

    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), sharey=True)
    for ax, (name, model) in zip(axes, models.items()):
        weight_profile(model, ax=ax, title=name, legend=ax is axes[0])
    fig.suptitle(
        "weight profiles: sorted rows (median and min-max band over rows); " + title,
        fontsize="small",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
