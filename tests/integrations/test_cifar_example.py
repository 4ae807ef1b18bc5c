"""examples/train_cifar10.py on a tiny synthetic CIFAR-10 written in the real format (the
python batches: pickled dicts of a uint8 [N, 3072] b"data" and b"labels"), its loader
and its refusals without data."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib not installed: pip install matplotlib",
)


def _write_batch(path: Path, images: np.ndarray, labels: list) -> None:
    d = {b"batch_label": b"synthetic", b"labels": labels, b"data": images, b"filenames": []}
    with path.open("wb") as f:
        pickle.dump(d, f)


def write_cifar(folder: Path, per_batch: int = 40, seed: int = 0) -> None:
    """A CIFAR-10 folder of 5 x ``per_batch`` training and ``per_batch`` test images: class
    c is image noise plus a bright c-th horizontal band of the red plane, so that a
    network can learn it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)

    def images(n):
        labels = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 3, 32, 32))
        for i, c in enumerate(labels):
            x[i, 0, 3 * c : 3 * c + 3, :] = 250
        return x.reshape(n, 3072).astype(np.uint8), labels.tolist()

    for i in range(1, 6):
        _write_batch(folder / f"data_batch_{i}", *images(per_batch))
    _write_batch(folder / "test_batch", *images(per_batch))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump(meta, f)


@pytest.fixture
def cifar_dir(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    return folder


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "train_cifar10.py"), *args],
        cwd=ROOT,
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_loader_reads_the_python_batches(cifar_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    cifar_data = importlib.import_module("cifar_data")
    data = cifar_data.load_cifar10(cifar_dir)
    x, y = data["train"]
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert data["test"][0].shape == (40, 3, 32, 32)
    assert data["label_names"][9] == "truck"
    # the layout: the red plane's bright band sits at rows 3c..3c+2 of image i
    with (cifar_dir / "data_batch_1").open("rb") as f:
        raw = pickle.load(f, encoding="bytes")
    c = raw[b"labels"][0]
    assert float(x[0, 0, 3 * c, 5]) == 250.0 and float(x[0, 1, 3 * c, 5]) < 60
    assert torch.equal(x[0].flatten(), torch.as_tensor(raw[b"data"][0]).float())
    cifar_data.normalise(data, "pixel-mean")
    assert float(data["train"][0].mean(0).abs().max()) < 1e-5
    (cifar_dir / "test_batch").unlink()
    with pytest.raises(cifar_data.CIFARNotFound, match="test_batch missing.*cifar.html"):
        cifar_data.load_cifar10(cifar_dir)


def test_without_data_it_says_where_to_get_it(tmp_path):
    proc = _run("--model", "conv2")
    assert proc.returncode == 2
    assert "--data DIR is required" in proc.stderr and "cifar.html" in proc.stderr
    proc = _run("--data", str(tmp_path), "--model", "conv2")
    assert proc.returncode == 1
    assert "data_batch_1" in proc.stderr and "cifar-10-python.tar.gz" in proc.stderr


def test_recipes_and_models(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    train = importlib.import_module("train_cifar10")
    args = train.parse_args(["--data", "d", "--recipe", "resnet-p30", "--epochs", "3"])
    assert (args.model, args.keep, args.k, args.eval_every, args.epochs) == (
        "resnet",
        0.7,
        800,
        800,
        3,
    )
    assert (args.lr_schedule, args.normalise, args.augment_rotation) == (
        "resnet",
        "pixel-mean",
        0.0,
    )
    conv = train.parse_args(["--data", "d", "--recipe", "conv13"])
    assert (conv.k, conv.batch_size, conv.epochs, conv.normalise) == (1000, 50, 125, "raw")
    model = train.make_initial_model(args)
    weights = [p for p in model.parameters() if p.dim() >= 2]
    kept = [float((w != 0).float().mean()) for w in weights]
    assert kept[0] == pytest.approx(0.8, abs=0.1)  # the input layer keeps at least 80%
    assert sum(w.numel() * k for w, k in zip(weights, kept)) / sum(
        w.numel() for w in weights
    ) == pytest.approx(0.7, abs=0.01)
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert train.l2_per_weight(model, "1e-4").split(",")[-2:] == ["1e-4", "0"]
    # the notebook's learning rates: 0.6x every 10 epochs; ResNet's steps after 80, 120, ...
    comparison = importlib.import_module("comparison")
    for name, epochs in (("conv", [0, 9, 10, 25]), ("resnet", [80, 81, 121, 161, 181])):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
        sched = comparison.lr_scheduler(opt, argparse.Namespace(lr_schedule=name))
        lrs = []
        for _ in range(max(epochs) + 1):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        expected = (
            [1e-3, 1e-3, 6e-4, 1e-3 * 0.36] if name == "conv" else [1e-3, 1e-4, 1e-5, 1e-6, 5e-7]
        )
        assert [lrs[e] for e in epochs] == pytest.approx(expected)


@needs_matplotlib
def test_trains_on_synthetic_cifar(cifar_dir, tmp_path):
    out = tmp_path / "run"
    proc = _run(
        "--data", str(cifar_dir), "--model", "conv2", "--keep", "0.5", "--augment",
        "--val-split", "40", "--k", "3", "--eval-every", "3", "--batch-size", "40",
        "--lr-schedule", "conv", "--epochs", "2", "--no-progress", "--threads", "2",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for name in ("results.json", "accuracy.png", "weight_profile.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    assert result["laperm_rows_hold_initial_values"] is True
    assert result["epochs_completed"] == 2 and result["config"]["n_train"] == 160
    assert result["laperm_wiring"]["rebuilt_bit_identical"] is True
    laperm = result["methods"]["laperm"]
    assert result["laperm_wiring"]["rebuilt_test_acc"] == laperm["final_test_acc"]
    assert laperm["evaluations"] == 2  # every 3 steps: steps 3 and 6 of 2 x 4
    assert laperm["test_acc_at_best_val"] is not None  # 40 images held out
    assert len(laperm["per_eval"]["step"]) == laperm["evaluations"]
    assert 0.45 < result["init"]["zero_fraction"] < 0.55  # half pruned (the first layer 20%)
