"""The benchmark's chart: throughput of every method, one bar per thread count.

One panel per (preset, dtype, device); methods on the y axis, fastest at the top, with the
speed-up over the torch reference written beside each bar. matplotlib is optional: without
it, the chart is skipped with a note.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List


def plot_results(results: List, path: str, machine: Dict[str, str]) -> str:
    """Draws ``results`` (``bench.results.Result`` rows) into the PNG ``path``; returns a line
    saying what was written (or why not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no chart: matplotlib is not installed (pip install matplotlib) for {path}"

    panels: Dict[tuple, List] = defaultdict(list)
    for r in results:
        if r.elements_per_s is not None:
            panels[(r.preset, r.dtype, r.device)].append(r)
    if not panels:
        return f"no chart: no timed result to draw into {path}"

    fig, axes = plt.subplots(len(panels), 1, squeeze=False, figsize=(8, 0.5 + 2.6 * len(panels)))
    for ax, ((preset, dtype, device), rows) in zip(axes[:, 0], panels.items()):
        threads = sorted({r.threads for r in rows})
        best = {}
        for r in rows:
            best[r.method] = max(best.get(r.method, 0.0), r.elements_per_s)
        methods = sorted(best, key=best.get)  # fastest drawn last: at the top
        height = 0.8 / len(threads)
        for k, t in enumerate(threads):
            by_method = {r.method: r for r in rows if r.threads == t}
            ys = [i + k * height for i, m in enumerate(methods) if m in by_method]
            shown = [by_method[m] for m in methods if m in by_method]
            ax.barh(
                ys,
                [r.elements_per_s / 1e6 for r in shown],
                height=height,
                label=f"{t} thread{'s' * (t > 1)}",
            )
            for y, r in zip(ys, shown):
                if r.speedup_vs_torch:
                    ax.text(
                        r.elements_per_s / 1e6,
                        y,
                        f" {r.speedup_vs_torch:.1f}x",
                        va="center",
                        fontsize=7,
                    )
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(methods))], methods)
        ax.set_xlabel("M elements / s (speed-up over the torch reference)")
        ax.set_title(f"{preset}, {dtype}, {device}", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        ax.margins(x=0.15)
    fig.suptitle(
        f"laperm-bench: rank matching of whole models' weights\n"
        f"torch {machine.get('torch', '?')}, {machine.get('cpu', '')} "
        f"(C++ kernel: {machine.get('cpu_kernel_isa', '?')})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"
