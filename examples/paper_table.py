"""The paper's table beside ours: the MNIST rows from each recipe's results.json (run them
first with --run), the CIFAR-10 rows the paper's only.

    python examples/paper_table.py                      # reads examples/results/recipe_*/
    python examples/paper_table.py --run --out DIR      # runs F1, F2, Conv7 first (Conv7: hours)
    python examples/paper_table.py --results DIR --plot curves.png

Writes the markdown table to stdout (and --table FILE), and a plot of every recipe's test
accuracy under the paper's protocol (every --eval-every steps), LaPerm(Adam) vs Adam.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from recipes import MNIST_RECIPES, PAPER_TOP1, PAPER_TOP1_CIFAR

HERE = Path(__file__).resolve().parent
NAMES = {"f1": "F1 (784-10, {0, 0.08})", "f2": "F2 (784-128-64-10, {0, 0.03})", "conv7": "Conv7"}
CIFAR_NAMES = {
    "conv2": "Conv2",
    "conv4": "Conv4",
    "conv13": "Conv13",
    "resnet": "ResNet50",
    "resnet-p30": "ResNet50, 30% pruned",
    "resnet-p50": "ResNet50, 50% pruned",
    "resnet-p70": "ResNet50, 70% pruned",
}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def row(recipe: str, result: dict, path: str) -> str:
    cfg, laperm, adam = result["config"], result["methods"]["laperm"], result["methods"]["adam"]
    done = result.get("epochs_completed", cfg["epochs"])
    epochs = f"{done}" if done == cfg["epochs"] else f"{done} of {cfg['epochs']}"
    honest = laperm["test_acc_at_best_val"]
    return (
        f"| [{NAMES[recipe]}]({path}) | {_pct(PAPER_TOP1[recipe])} | {epochs} | "
        f"{cfg['eval_every']} | **{_pct(laperm['best_test_acc'])}** | "
        f"{_pct(laperm['final_test_acc'])} | {_pct(honest)} | "
        f"{_pct(adam['best_test_acc'])} / {_pct(adam['final_test_acc'])} |"
    )


def table(results: dict, base: Path) -> str:
    lines = [
        "| model (MNIST) | paper | epochs | eval every (steps) | LaPerm best (paper's "
        "protocol) | LaPerm final | LaPerm test @ best val | Adam best / final |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for recipe, (path, result) in results.items():
        rel = Path(path).resolve()
        shown = rel.relative_to(base) if rel.is_relative_to(base) else rel
        lines.append(row(recipe, result, str(shown)))
    lines += ["", "| model (CIFAR-10) | paper | ours |", "|---|---|---|"]
    for recipe, top1 in PAPER_TOP1_CIFAR.items():
        lines.append(f"| {CIFAR_NAMES[recipe]} | {_pct(top1)} | not run here |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, (recipe, (_, result)) in zip(axes[0], results.items()):
        per_epoch = result["config"]["steps_per_epoch"]
        for m, color in (("adam", "C0"), ("laperm", "C3")):
            evals = result["methods"][m].get("per_eval")
            if evals:
                x = [s / per_epoch for s in evals["step"]]
                ax.plot(x, [100 * a for a in evals["test_acc"]], color=color, lw=1,
                        label=result["methods"][m]["label"])  # fmt: skip
        ax.axhline(100 * PAPER_TOP1[recipe], color="k", ls=":", lw=1, label="paper (LaPerm)")
        ax.set_title(NAMES[recipe], fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("test accuracy every --eval-every steps (the paper's protocol)", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(HERE / "results"), help="folder of recipe_<name>/")
    p.add_argument("--run", action="store_true", help="run the recipes first (into --results)")
    p.add_argument("--recipes", default="f1,f2,conv7", help="comma-separated recipe names")
    p.add_argument("--table", default=None, help="also write the table to this file")
    p.add_argument("--plot", default=None, help="the curves' PNG (default: --results/curves.png)")
    args = p.parse_args(argv)
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in MNIST_RECIPES]
    if unknown:
        p.error(f"--recipes: unknown {unknown}; known: {sorted(MNIST_RECIPES)}")
    base = Path(args.results)
    if args.run:
        import train_mnist

        for r in recipes:
            out = base / f"recipe_{r}"
            train_mnist.main(["--recipe", r, "--no-progress", "--out", str(out)])
    results = {}
    for r in recipes:
        path = base / f"recipe_{r}" / "results.json"
        if not path.is_file():
            sys.exit(f"error: {path} missing: run python examples/paper_table.py --run")
        results[r] = (path, json.loads(path.read_text()))
    text = table(results, base.resolve().parent)
    print(text, end="")
    if args.table:
        Path(args.table).write_text(text)
    plot(results, Path(args.plot) if args.plot else base / "curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
