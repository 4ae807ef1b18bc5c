"""CIFAR-10 from the standard python batches in a local folder; nothing is downloaded.

    data = load_cifar10("path/to/cifar-10-batches-py")
    x, y = data["train"]     # x: float32 [50000, 3, 32, 32], pixel values 0..255; y: int64
    data["label_names"]      # ['airplane', 'automobile', ...] from batches.meta

The folder is the one the official archive unpacks to (https://www.cs.toronto.edu/~kriz/
cifar-10-python.tar.gz, "CIFAR-10 python version"): ``data_batch_1`` .. ``data_batch_5``,
``test_batch`` and ``batches.meta``, each a pickled dict. A batch holds ``b"data"``, a
uint8 array [N, 3072] (per image the 1024 red, then green, then blue pixels of a 32x32
image, row by row), and ``b"labels"``, N ints in 0..9.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict, List, Union

import torch

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 python version)"


class CIFARNotFound(FileNotFoundError):
    """The folder lacks the CIFAR-10 python batches."""


def _unpickle(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def _batch(path: Path):
    d = _unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{path}: not a CIFAR-10 batch (a dict with b'data' and b'labels')")
    x = torch.as_tensor(d[b"data"])
    y = torch.as_tensor(list(d[b"labels"]), dtype=torch.int64)
    if x.dtype != torch.uint8 or x.dim() != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise ValueError(
            f"{path}: b'data' must be uint8 [N, 3072] beside N labels; got {x.dtype} "
            f"{tuple(x.shape)} and {len(y)} labels"
        )
    if len(y) and not (0 <= int(y.min()) and int(y.max()) <= 9):
        raise ValueError(f"{path}: labels must be in 0..9")
    return x.view(-1, 3, 32, 32).to(torch.float32), y


def load_cifar10(folder: Union[str, Path]) -> Dict[str, object]:
    """``{"train": (x, y), "test": (x, y), "label_names": [...]}`` from ``folder``; x is
    float32 [N, 3, 32, 32] with the raw pixel values 0..255. Raises CIFARNotFound, saying
    where to get the data, when files are missing."""
    folder = Path(folder)
    missing = [f for f in (*TRAIN_FILES, TEST_FILE, META_FILE) if not (folder / f).is_file()]
    if missing:
        raise CIFARNotFound(
            f"{folder}: no CIFAR-10 python batches ({', '.join(missing)} missing). Get "
            f"cifar-10-python.tar.gz from {SOURCE}, unpack it (tar xzf) and pass the "
            "cifar-10-batches-py folder it makes"
        )
    parts = [_batch(folder / f) for f in TRAIN_FILES]
    meta = _unpickle(folder / META_FILE)
    names: List[str] = [n.decode() if isinstance(n, bytes) else n for n in meta[b"label_names"]]
    return {
        "train": (torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])),
        "test": _batch(folder / TEST_FILE),
        "label_names": names,
    }


def normalise(data: Dict[str, object], how: str) -> None:
    """In place. ``raw``: pixels 0..255 as they are (the official Conv2/4/13 notebooks: their
    normalize() returns its inputs unchanged); ``pixel-mean``: /255, minus the training
    set's per-pixel mean (the ResNet notebook); ``mean-std``: the training set's one mean
    and std, as those notebooks' normalize() meant to."""
    x_train, x_test = data["train"][0], data["test"][0]
    if how == "raw":
        return
    if how == "pixel-mean":
        x_train /= 255.0
        x_test /= 255.0
        mean = x_train.mean(0, keepdim=True)
        x_train -= mean
        x_test -= mean
    elif how == "mean-std":
        mean, std = float(x_train.mean()), float(x_train.std())
        x_train.sub_(mean).div_(std + 1e-8)
        x_test.sub_(mean).div_(std + 1e-8)
    else:
        raise ValueError(f"normalise: how must be raw, pixel-mean or mean-std; got {how!r}")
