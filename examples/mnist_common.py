"""What train_mnist.py and overhead.py share: their common options, the data (with
subsets), the epoch order, one training epoch, the environment record and the JSON writer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from mnist_data import MNISTNotInstalled, load_mnist
from mnist_models import add_model_args, check_model_args
from torch import nn

import laperm_kernels as lk


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative None / False ones."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def make_parser(
    description: str,
    epochs: Optional[int],
    epochs_help: str,
    model_args: Callable[[argparse._ArgumentGroup], None] = add_model_args,
) -> argparse.ArgumentParser:
    """A parser with the model options (``model_args``: the MNIST models' by default) and
    the training options every program takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    model_args(p.add_argument_group("model and initialisation"))
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    t.add_argument("--k", type=int, default=20, help="LaPerm sync period (steps)")
    t.add_argument("--batch-size", type=int, default=128, help="examples per step")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument(
        "--lr-decay", type=float, default=0.95, help="ExponentialLR gamma, stepped once per epoch"
    )
    t.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the initial weights, pruning masks and data order",
    )
    t.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    t.add_argument("--train-subset", type=int, default=None, help="use N training examples")
    p.add_argument("--out", default="mnist-results", help="output directory")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Rejects inconsistent options through ``p.error``; returns ``args``."""
    if args.epochs < 1 or args.k < 1 or args.batch_size < 1 or args.threads < 1:
        p.error("--epochs, --k, --batch-size and --threads must be >= 1")
    check_model_args(p, args)
    return args


def load_data(
    model: str,
    seed: int,
    train_subset: Optional[int] = None,
    eval_subset: Optional[int] = None,
    train_on_val: bool = False,
) -> Dict[str, Optional[tuple]]:
    """MNIST shaped for ``model`` (images for the CNN), with a random ``train_subset`` of
    the training set and the first ``eval_subset`` val/test examples; ``train_on_val``
    appends the validation split to the training set (60k, as the official code) and
    leaves ``data["val"]`` None. Exits with the install command if the data is missing."""
    try:
        data = load_mnist(shape="image" if model == "cnn" else "flat")
    except MNISTNotInstalled as e:
        sys.exit(f"error: {e}")
    if train_on_val:
        data["train"] = tuple(torch.cat(pair) for pair in zip(data["train"], data["val"]))
        data["val"] = None
    if train_subset:
        g = torch.Generator().manual_seed(seed + 2)
        idx = torch.randperm(len(data["train"][0]), generator=g)[:train_subset]
        data["train"] = tuple(t[idx] for t in data["train"])
    if eval_subset:
        for split in ("val", "test"):
            if data[split] is not None:
                data[split] = tuple(t[:eval_subset] for t in data[split])
    return data


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled example order of an epoch: the same for every method."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Optional[LossFn] = None,
) -> torch.Tensor:
    """One step on the batch (x, y); returns its loss per example, detached. ``loss_fn``
    (logits, y) -> loss defaults to the mean cross-entropy."""
    opt.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y) if loss_fn is None else loss_fn(logits, y)
    loss.backward()
    opt.step()
    return loss.detach() / (len(y) if getattr(loss_fn, "summed", False) else 1)


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    bar=None,
    augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    after_step: Optional[Callable[[], None]] = None,
    loss_fn: Optional[LossFn] = None,
) -> float:
    """One epoch over ``order``; returns the mean training loss. ``augment`` transforms
    each batch's inputs; ``after_step`` runs after each step (and may evaluate: the model
    is put back in training mode after it)."""
    model.train()
    total = torch.zeros(())
    steps = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        xb = x[idx] if augment is None else augment(x[idx])
        total += train_step(model, opt, xb, y[idx], loss_fn)
        steps += 1
        if after_step is not None:
            after_step()
            model.train()
        if bar is not None:
            bar.update(1)
    return float(total) / max(steps, 1)


def environment() -> dict:
    backends = lk.available_backends("cpu")
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "laperm_backends": backends,
        "cpu_kernel_isa": torch.ops.laperm.cpu_kernel_isa() if "cpu" in backends else None,
    }


def _rounded(obj: Any, digits: int) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    return obj


def _pack(items: List[str], first: int, rest: int) -> List[str]:
    """``items`` joined by ", " into lines of at most ``first`` (the first line) and ``rest``
    characters (the others), with room for a trailing comma; a multi-line item alone."""
    lines = [items[0]]
    for item in items[1:]:
        room = first if len(lines) == 1 else rest
        if "\n" in item or "\n" in lines[-1] or len(lines[-1]) + len(item) + 4 > room:
            lines.append(item)
        else:
            lines[-1] += ", " + item
    return lines


def _compact(obj: Any, indent: int, width: int, prefix: int = 0) -> str:
    one = json.dumps(obj)
    if indent + prefix + len(one) < width or not isinstance(obj, (dict, list)) or not obj:
        return one
    pad = " " * (indent + 1)
    if isinstance(obj, list) and not any(isinstance(v, (dict, list)) for v in obj):
        # numbers: wrapped after the key, continued one column in
        lines = _pack([json.dumps(v) for v in obj], width - indent - prefix - 1, width - len(pad))
        return "[" + (",\n" + pad).join(lines) + "]"
    if isinstance(obj, dict):
        items = [f"{json.dumps(k)}: " for k in obj]
        items = [k + _compact(v, indent + 1, width, len(k)) for k, v in zip(items, obj.values())]
    else:
        items = [_compact(v, indent + 1, width) for v in obj]
    brackets = "{}" if isinstance(obj, dict) else "[]"
    return (
        brackets[0]
        + "\n"
        + ",\n".join(pad + line for line in _pack(items, width - len(pad), width - len(pad)))
        + "\n"
        + " " * indent
        + brackets[1]
    )


def dumps(obj: Any, digits: int = 6, width: int = 100) -> str:
    """JSON in few lines: floats to ``digits`` significant digits, and whatever fits in
    ``width`` columns on one line (lists of numbers wrap, several short keys a line)."""
    return _compact(_rounded(obj, digits), 0, width) + "\n"


def write_json(path: Path, obj: Any) -> None:
    path.write_text(dumps(obj))
