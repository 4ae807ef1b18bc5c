"""The MNIST models and the paper's initialisation, shared by train_mnist.py and overhead.py.

    model = make_initial_model(args)   # args: model, seed, no_bias, prune, prune_rescale, agnostic

Models: LeNet-300-100, a small CNN, and the paper's weight-agnostic F1. Every model starts
from He-uniform weights (``kaiming_uniform_(w, nonlinearity="relu")``) and zero biases,
then the optional sparse (``random_prune_``) or weight-agnostic (``agnosticize_``) init.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Optional, Union

import torch
from paper_models import (
    bernoulli_keep_,
    conv7,
    f2,
    keras_he_uniform_,
    parse_keep,
    per_tensor,
    relu_mlp,
)
from torch import nn

from laperm_kernels import agnosticize_, random_prune_


def lenet_300_100(bias: bool = True) -> nn.Module:
    return relu_mlp((784, 300, 100, 10), bias)


def small_cnn(bias: bool = True) -> nn.Module:
    # 28 -> 26 -> 13 -> 11 -> 5: 64 * 5 * 5 = 1600 features
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, bias=bias),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, bias=bias),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1600, 128, bias=bias),
        nn.ReLU(),
        nn.Linear(128, 10, bias=bias),
    )


def f1_linear(bias: bool = False) -> nn.Module:
    """The paper's F1 (Section 5.5): one Linear(784, 10), no bias, for weight-agnostic runs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=bias))


MODELS = {"lenet": lenet_300_100, "cnn": small_cnn, "f1": f1_linear, "f2": f2, "conv7": conv7}
MODEL_NAMES = {
    "lenet": "LeNet-300-100",
    "cnn": "small CNN",
    "f1": "F1 (Linear 784-10)",
    "f2": "F2 (784-128-64-10)",
    "conv7": "Conv7",
}
IMAGE_MODELS = ("cnn", "conv7")  # take [N, 1, 28, 28] images, not flat rows
NO_BIAS_MODELS = ("f1", "f2")  # the paper's weight-agnostic models have no biases


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


AgnosticValue = Union[float, Callable[[torch.Tensor], float]]


def parse_agnostic(value: Optional[str], prune: float = 0.0) -> Optional[AgnosticValue]:
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
            f"--agnostic takes a number, 'he' or 'mean'; got {value!r}"
        ) from None
    if not math.isfinite(v) or v == 0.0:
        raise argparse.ArgumentTypeError(
            f"--agnostic value must be finite and non-zero; got {value!r}"
        )
    return v


def make_initial_model(args: argparse.Namespace) -> nn.Module:
    """The initial model every method starts from (``args``: the options of
    :func:`add_model_args`, and ``seed``)."""
    torch.manual_seed(args.seed)
    bias = not args.no_bias and args.model not in NO_BIAS_MODELS
    model = MODELS[args.model](bias=bias, **({"dropout": args.dropout} if args.dropout else {}))
    init_gen = torch.Generator().manual_seed(args.seed)
    if args.init == "keras":
        keras_he_uniform_(model, init_gen)
    else:
        paper_init_(model, init_gen)
    mask_and_values_(model, args, torch.Generator().manual_seed(args.seed + 1))
    return model


@torch.no_grad()
def mask_and_values_(model: nn.Module, args: argparse.Namespace, gen: torch.Generator) -> None:
    """The optional weight-agnostic values and the zero mask: --agnostic, then --keep
    (per tensor; --mask picks exact counts or the official per-element draws) or --prune."""
    weights = [p for p in model.parameters() if p.dim() >= 2]
    agnostic = parse_agnostic(args.agnostic, args.prune)
    if args.keep is not None:
        keep = per_tensor(parse_keep(args.keep), weights, "--keep")
        if agnostic is not None:
            for w in weights:
                w.fill_(agnostic(w) if callable(agnostic) else agnostic)
        if args.mask == "bernoulli":
            bernoulli_keep_(weights, keep, gen)
        else:
            for w, f in zip(weights, keep):
                random_prune_([w], 1.0 - float(f), generator=gen)
    elif agnostic is not None:
        agnosticize_(model, agnostic, p=args.prune, generator=gen)
    elif args.prune > 0:
        random_prune_(model, args.prune, generator=gen)
        if args.prune_rescale:
            for w in weights:
                w.mul_(1.0 / math.sqrt(1.0 - args.prune))


def describe(args: argparse.Namespace) -> str:
    """One line naming the model and its init, for plot titles."""
    init = "He-uniform"
    if args.agnostic is not None:
        init = f"weight-agnostic {{0, {args.agnostic}}}, {args.prune:.0%} zero"
    elif args.prune:
        init += f", {args.prune:.0%} pruned" + (" (rescaled)" if args.prune_rescale else "")
    if args.keep is not None:
        init += f", kept {args.keep} ({args.mask})"
    no_bias = args.no_bias or args.model in NO_BIAS_MODELS
    name = MODEL_NAMES[args.model] + (", no bias" if no_bias else "")
    return f"{name}, MNIST, {init}"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options that choose the model and its initialisation."""
    p.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="lenet",
        help="lenet: LeNet-300-100; cnn: conv32-conv64-fc128-fc10; f1: the paper's "
        "weight-agnostic F1, one Linear(784, 10) without bias; f2: 784-128-64-10 without "
        "bias; conv7: the official Conv7",
    )
    p.add_argument(
        "--init",
        choices=("paper", "keras"),
        default="paper",
        help="paper: He-uniform weights, zero biases; keras: Keras 'he_uniform' on "
        "weights and biases (a bias of n units: U(+-sqrt(6/n)))",
    )
    p.add_argument("--dropout", type=float, default=None, help="conv7's dropout rate (0.4)")
    p.add_argument(
        "--keep",
        default=None,
        metavar="FRACTIONS",
        help="kept fraction of each weight tensor, one for all or one per tensor: "
        "4/7 or 1/15,1/7,1/3 (instead of --prune)",
    )
    p.add_argument(
        "--mask",
        choices=("exact", "bernoulli"),
        default="exact",
        help="with --keep: exactly round(f * numel) kept, or each weight kept with "
        "probability f (the official code's draw)",
    )
    p.add_argument(
        "--prune",
        type=float,
        default=0.0,
        help="fraction of each weight tensor set to zero at init (sparse init); "
        "with --agnostic, the zero fraction of the {0, value} weights",
    )
    p.add_argument(
        "--prune-rescale",
        action="store_true",
        help="after --prune, scale the kept weights by 1/sqrt(1 - prune), so "
        "each layer keeps the He-uniform variance",
    )
    p.add_argument(
        "--agnostic",
        default=None,
        metavar="VALUE",
        help="weight-agnostic init: every weight = VALUE (a number; 'he': each "
        "layer's He std sqrt(2/fan_in); 'mean': 1/(fan_in*(1-prune))), then "
        "--prune of them zero",
    )
    p.add_argument(
        "--no-bias",
        action="store_true",
        help="layers without biases (as the paper's weight-agnostic F1/F2 models)",
    )


def check_model_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Rejects inconsistent model options through ``p.error``."""
    if not 0.0 <= args.prune < 1.0:
        p.error("--prune must be in [0, 1)")
    if args.prune_rescale and (args.agnostic is not None or args.prune == 0):
        p.error("--prune-rescale goes with --prune > 0 and without --agnostic")
    if args.keep is not None:
        if args.prune:
            p.error("--keep and --prune are exclusive")
        try:
            parse_keep(args.keep)
        except ValueError as e:
            p.error(str(e))
    if args.dropout is not None and not (args.model == "conv7" and 0.0 <= args.dropout < 1.0):
        p.error("--dropout goes with --model conv7 and must be in [0, 1)")
    try:
        parse_agnostic(args.agnostic, args.prune)
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
