"""The LaPerm(Adam) vs Adam training loop that train_mnist.py and train_cifar10.py share.

Both methods start from the same initial model and see the same batches (and the same
augmentation draws) in the same order; each epoch trains one method, then the other
(alternating which goes first), then evaluates both. LaPerm is evaluated on its
*reconnected* weights (its permuted tensors rank-matched to their sorted initial rows:
what the next sync makes of them; after a sync, the weights themselves).

Two protocols, both recorded:
- per epoch: test and validation accuracy at the end of every epoch;
- the paper's (``--eval-every N``): test (and validation) accuracy every N steps, which
  the official notebooks run right after a sync (N a multiple of k), keeping the best.
  ``best_test_acc`` is then the best of these; it selects on the test set, so
  ``test_acc_at_best_val`` (test accuracy where validation accuracy peaked: needs a
  held-out validation split) and ``final_test_acc`` are the figures without selection.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from mnist_common import epoch_order, train_epoch
from paper_models import per_tensor
from torch import nn

import laperm_kernels as lk
from laperm_kernels import LaPerm

METHODS = ("adam", "laperm")
LABELS = {"adam": "Adam", "laperm": "LaPerm(Adam)"}


def add_training_args(t: argparse._ArgumentGroup) -> None:
    """The options beyond make_parser's that the official recipes set."""
    t.add_argument("--adam-eps", type=float, default=1e-8, help="Adam's epsilon (Keras: 1e-7)")
    t.add_argument(
        "--l2",
        default=None,
        metavar="VALUES",
        help="Keras l2(v) on each weight tensor (one for all, or one per tensor: "
        "1e-4,1e-4,0): v * sum(w^2) added to the loss",
    )
    t.add_argument(
        "--eval-every",
        type=int,
        default=None,
        metavar="N",
        help="also evaluate every N steps and keep the best (the paper's protocol; 0: off)",
    )
    t.add_argument(
        "--loss-sum",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="minimise the batch's summed loss, not its mean (the official loop takes the "
        "gradient of Keras's per-example loss vector, L2 term added to each): Adam does "
        "not see the scale, but its epsilon does",
    )
    t.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the recipe's random augmentation",
    )
    t.add_argument(
        "--permute-bias",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="LaPerm permutes biases too, each as one row (the official skip_bias=False)",
    )


def parse_l2(text: Optional[str], weights: List[torch.Tensor]) -> List[float]:
    if text is None:
        return [0.0] * len(weights)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--l2 takes numbers like 1e-4 or 1e-4,1e-4,0; got {text!r}") from None
    return per_tensor(values, weights, "--l2")


# --- LaPerm's reconnected weights ---------------------------------------------------------


def permuted_names(model: nn.Module, permute_bias: bool) -> List[str]:
    """The parameters LaPerm permutes: weights (ndim >= 2), and biases with permute_bias."""
    return [n for n, p in model.named_parameters() if p.dim() >= (1 if permute_bias else 2)]


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


class Loss:
    """Cross-entropy plus the Keras L2 terms (``l2[i] * sum(w_i ** 2)``) of ``model``'s
    weights, over the batch's mean, or with ``summed`` its sum (the L2 terms then counted
    once per example, as Keras adds them to each element of the per-example loss)."""

    def __init__(self, model: nn.Module, l2: Optional[str], summed: bool):
        weights = [p for p in model.parameters() if p.dim() >= 2]
        self.terms = [(w, v) for w, v in zip(weights, parse_l2(l2, weights)) if v]
        self.summed = summed

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, y, reduction="sum" if self.summed else "mean")
        if self.terms:
            penalty = sum(v * w.square().sum() for w, v in self.terms)
            loss = loss + (len(y) if self.summed else 1) * penalty
        return loss


def make_losses(models: Dict[str, nn.Module], args) -> Dict[str, Loss]:
    return {
        m: Loss(models[m], getattr(args, "l2", None), getattr(args, "loss_sum", False))
        for m in METHODS
    }


def make_optimizers(models: Dict[str, nn.Module], args) -> Dict[str, torch.optim.Optimizer]:
    def adam(model):
        return torch.optim.Adam(model.parameters(), lr=args.lr, eps=getattr(args, "adam_eps", 1e-8))

    laperm = LaPerm(
        adam(models["laperm"]),
        sync_period=args.k,
        permute=True if getattr(args, "permute_bias", False) else "auto",
        backend=args.backend,
    )
    return {"adam": adam(models["adam"]), "laperm": laperm}


def lr_scheduler(opt, args):
    """Stepped once per epoch. ``args.lr_schedule``: "exp" (lr x lr_decay^epoch, the MNIST
    notebooks), "conv" (x 0.6 every 10 epochs, the CIFAR conv notebooks) or "resnet"
    (x 0.1 after epoch 80, 0.01 after 120, 1e-3 after 160, 5e-4 after 180)."""
    schedule = getattr(args, "lr_schedule", "exp")
    if schedule == "conv":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.6)
    if schedule == "resnet":
        steps = ((180, 0.5e-3), (160, 1e-3), (120, 1e-2), (80, 1e-1))
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: next((f for start, f in steps if e > start), 1.0)
        )
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=args.lr_decay)


def progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print("(tqdm not installed: no progress bar; pip install tqdm)", file=sys.stderr)
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=0.5)


def warm_up(init_model: nn.Module, args, x: torch.Tensor, y: torch.Tensor, steps: int = 40):
    """A few untimed steps of each method on throwaway copies (first-call allocations and
    kernel dispatch would otherwise be billed to whichever method runs first)."""
    models = {m: copy.deepcopy(init_model) for m in METHODS}
    opts, losses = make_optimizers(models, args), make_losses(models, args)
    order = torch.arange(min(len(x), steps * args.batch_size))
    for m in METHODS:
        train_epoch(models[m], opts[m], x, y, order, args.batch_size, loss_fn=losses[m])


def evaluate(model: nn.Module, data: Dict[str, Optional[tuple]]) -> Dict[str, float]:
    out = {"test_acc": accuracy(model, *data["test"])}
    if data.get("val") is not None:
        out["val_acc"] = accuracy(model, *data["val"])
    return out


def augmenter(augment, seed: int, epoch: int) -> Optional[Callable]:
    """The epoch's augmentation: the same draws, batch by batch, for every method."""
    if augment is None:
        return None
    gen = torch.Generator().manual_seed(1_000_000_007 + seed * 100_003 + epoch)
    return lambda xb: augment(xb, gen)


def train(models, data, sorted_inits, args, augment=None, on_epoch=None) -> Dict[str, dict]:
    """Trains both methods epoch by epoch; returns each one's per-epoch records and, with
    ``args.eval_every``, its evaluations every that many steps. ``on_epoch(history)``
    runs after each epoch (the runner writes results.json there)."""
    x_train, y_train = data["train"]
    opts, losses = make_optimizers(models, args), make_losses(models, args)
    scheds = {m: lr_scheduler(opts[m], args) for m in METHODS}
    history = {m: {"per_epoch": [], "per_eval": []} for m in METHODS}
    steps = dict.fromkeys(METHODS, 0)
    eval_s = dict.fromkeys(METHODS, 0.0)  # time in --eval-every's evaluations
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    bar = progress(args.epochs * steps_per_epoch * len(METHODS), not args.no_progress)

    def view(m):
        return reconnected(models[m], sorted_inits) if m == "laperm" else models[m]

    def after_step(m):
        steps[m] += 1
        if args.eval_every and steps[m] % args.eval_every == 0:
            t0 = time.perf_counter()
            history[m]["per_eval"].append({"step": steps[m], **evaluate(view(m), data)})
            eval_s[m] += time.perf_counter() - t0

    for epoch in range(1, args.epochs + 1):
        order = epoch_order(len(x_train), args.seed, epoch)
        # alternate which method runs first, so neither always gets the warmer caches
        for m in METHODS if epoch % 2 else METHODS[::-1]:
            if bar is not None:
                bar.set_description(f"epoch {epoch}/{args.epochs} {LABELS[m]}")
            t0, eval_s0 = time.perf_counter(), eval_s[m]
            loss = train_epoch(
                models[m],
                opts[m],
                x_train,
                y_train,
                order,
                args.batch_size,
                bar,
                augmenter(augment, args.seed, epoch),
                lambda m=m: after_step(m),
                losses[m],
            )
            elapsed = time.perf_counter() - t0 - (eval_s[m] - eval_s0)
            scheds[m].step()
            rec = {"epoch": epoch, **evaluate(view(m), data), "train_loss": loss}
            rec["train_time_s"] = elapsed
            if m == "laperm":
                raw = evaluate(models[m], data)
                rec.update({f"{k}_unsynced": v for k, v in raw.items()})
            history[m]["per_epoch"].append(rec)
        last = {m: history[m]["per_epoch"][-1] for m in METHODS}
        if bar is not None:
            bar.set_postfix_str(" ".join(f"{m}={last[m]['test_acc']:.2%}" for m in METHODS))
        else:
            print(
                f"epoch {epoch:3d}  "
                + "  ".join(
                    f"{LABELS[m]}: loss {last[m]['train_loss']:.4f} test {last[m]['test_acc']:.2%}"
                    for m in METHODS
                ),
                flush=True,
            )
        if on_epoch is not None:
            on_epoch(history)
    if bar is not None:
        bar.close()
    return history
