"""LaPerm(Adam) vs Adam on CIFAR-10, from your copy of the data (nothing is downloaded).

    python examples/train_cifar10.py --data ~/data/cifar-10-batches-py --recipe conv4
    python examples/train_cifar10.py --data DIR --recipe resnet-p50      # 50% pruned ResNet
    python examples/train_cifar10.py --data DIR --model conv2 --epochs 5 --k 500

DIR is the ``cifar-10-batches-py`` folder of the official python archive (cifar_data.py).
``--recipe`` applies an official notebook's settings (recipes.py): model, init, input
normalisation, augmentation, L2, batch, k, learning-rate schedule, epochs and the paper's
evaluation protocol; options given on the command line override them. The training
loop, JSON and plots are train_mnist.py's (comparison.py, summary.py, plots.py, runner.py).
"""

from __future__ import annotations

import argparse
import sys

import torch
from cifar_data import CIFARNotFound, load_cifar10, normalise
from cifar_models import MODELS
from comparison import add_training_args
from mnist_common import make_parser
from paper_models import bernoulli_keep_, keras_he_uniform_
from recipes import CIFAR_RECIPES
from runner import run_comparison


def add_cifar_model_args(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--model", choices=sorted(MODELS), default="conv2", help="the network")
    p.add_argument(
        "--init",
        choices=("keras", "keras-biases"),
        default="keras-biases",
        help="Keras he_uniform kernels, and zero biases (keras) or he_uniform ones",
    )
    p.add_argument(
        "--keep",
        type=float,
        default=None,
        help="random pruning: each weight kept with this probability, the first layer's "
        "at least 0.8 (the official random_prune)",
    )


def make_initial_model(args) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    model = MODELS[args.model]()
    keras_he_uniform_(
        model, torch.Generator().manual_seed(args.seed), biases=args.init == "keras-biases"
    )
    if args.keep is not None:
        weights = [p for p in model.parameters() if p.dim() >= 2]
        keep = [max(args.keep, 0.8)] + [args.keep] * (len(weights) - 1)
        with torch.no_grad():
            bernoulli_keep_(weights, keep, torch.Generator().manual_seed(args.seed + 1))
    return model


def l2_per_weight(model: torch.nn.Module, value: str) -> str:
    """The notebooks' l2(v) on every kernel but the output layer's, as --l2 lists it."""
    weights = [p for p in model.parameters() if p.dim() >= 2]
    return ",".join([value] * (len(weights) - 1) + ["0"])


def load(args):
    try:
        data = load_cifar10(args.data)
    except CIFARNotFound as e:
        sys.exit(f"error: {e}")
    normalise(data, args.normalise)
    g = torch.Generator().manual_seed(args.seed + 2)
    x, y = data["train"]
    order = torch.randperm(len(x), generator=g)
    val = order[: args.val_split]
    train = order[args.val_split :][: args.train_subset]
    out = {"train": (x[train], y[train]), "val": None, "test": data["test"]}
    if args.val_split:
        out["val"] = (x[val], y[val])
    if args.eval_subset:
        for split in ("val", "test"):
            if out[split] is not None:
                out[split] = tuple(t[: args.eval_subset] for t in out[split])
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load(args)
    init_model = make_initial_model(args)
    if args.l2 is not None and "," not in args.l2:
        args.l2 = l2_per_weight(init_model, args.l2)
    augment = None
    if args.augment:
        from augment import RandomAffine

        augment = RandomAffine(rotation=args.augment_rotation, shift=0.1, hflip=True)
    keep = "" if args.keep is None else f", {args.keep:.0%} kept"
    title = (
        f"{args.model}, CIFAR-10{keep}; Adam lr {args.lr} ({args.lr_schedule}), k={args.k}, "
        f"batch {args.batch_size}"
    )
    init_record = {"weights": f"Keras he_uniform ({args.init})", "keep": args.keep}
    init_record["normalise"] = args.normalise
    return run_comparison(args, data, init_model, title, init_record, augment)


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0], 10, "epochs", add_cifar_model_args)
    p.set_defaults(out="cifar10-results", lr_decay=1.0, batch_size=50)
    p.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="the cifar-10-batches-py folder (data_batch_1..5, test_batch, batches.meta)",
    )
    p.add_argument(
        "--recipe",
        choices=sorted(CIFAR_RECIPES),
        default=None,
        help="an official notebook's settings (recipes.py); given options override them",
    )
    add_training_args(p.add_argument_group("the official recipes' options"))
    c = p.add_argument_group("CIFAR-10")
    c.add_argument(
        "--normalise",
        choices=("raw", "pixel-mean", "mean-std"),
        default="pixel-mean",
        help="raw pixels 0..255 (the conv notebooks), /255 minus the per-pixel mean "
        "(the ResNet notebook), or one mean and std",
    )
    c.add_argument(
        "--lr-schedule",
        choices=("exp", "conv", "resnet"),
        default="exp",
        help="exp: lr x lr-decay^epoch; conv: x 0.6 every 10 epochs; resnet: the "
        "notebook's steps at epochs 80, 120, 160, 180",
    )
    c.add_argument("--augment-rotation", type=float, default=15.0, help="with --augment: degrees")
    c.add_argument(
        "--val-split",
        type=int,
        default=0,
        metavar="N",
        help="hold out N training images for validation (the notebooks hold out none)",
    )
    c.add_argument(
        "--eval-subset", type=int, default=None, help="evaluate on the first N test images"
    )
    p.add_argument("--backend", default="auto", help="LaPerm rank-matching backend")
    p.add_argument("--min-acc", type=float, default=None, help="exit 1 unless LaPerm beats it")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar: a line per epoch")
    recipe = p.parse_known_args(argv)[0].recipe
    if recipe is not None:
        p.set_defaults(**CIFAR_RECIPES[recipe])
    args = p.parse_args(argv)
    if args.data is None:
        p.error(
            "--data DIR is required: the cifar-10-batches-py folder of the CIFAR-10 python "
            "archive (https://www.cs.toronto.edu/~kriz/cifar.html); nothing is downloaded"
        )
    if args.epochs < 1 or args.k < 1 or args.batch_size < 1 or args.threads < 1:
        p.error("--epochs, --k, --batch-size and --threads must be >= 1")
    if args.keep is not None and not 0.0 < args.keep <= 1.0:
        p.error("--keep must be in (0, 1]")
    if args.val_split < 0 or (args.eval_every is not None and args.eval_every < 0):
        p.error("--val-split and --eval-every must be >= 0")
    return args


if __name__ == "__main__":
    sys.exit(main())
