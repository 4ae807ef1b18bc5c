"""The benchmark's table: one line per method, what auto chose, and the floors."""

from __future__ import annotations

from typing import List

from . import baselines
from .results import Result


def format_table(results: List[Result]) -> str:
    head = f"{'method':<18} {'M elem/s':>10} {'GB/s':>8} {'vs torch':>9} {'runs':>4}  check"
    lines = [head, "-" * len(head)]
    for r in results:
        if r.median_s is None:
            lines.append(f"{r.method:<18} {'-':>10} {'-':>8} {'-':>9} {r.runs:>4}  {r.check}")
            continue
        ratio = f"{r.speedup_vs_torch:.2f}x" if r.speedup_vs_torch else "-"
        lines.append(
            f"{r.method:<18} {r.elements_per_s / 1e6:>10.1f} "
            f"{r.effective_gb_per_s:>8.2f} {ratio:>9} {r.runs:>4}  {r.check}"
        )
    for r in results:
        if r.chosen is not None:
            lines.append(
                f"auto chose {r.chosen}; its first call took {r.first_call_s * 1e3:.1f} ms"
            )
    lines += floor_lines(results)
    return "\n".join(lines)


def floor_lines(results: List[Result]) -> List[str]:
    """Each kernel's throughput as a multiple of each floor's (baselines.FLOORS: np.sort
    of the same rows' keys, sort only), from the same run: same preset, dtype and
    threads, rounds interleaved."""
    floors = [r for r in results if r.method in baselines.FLOORS and r.elements_per_s]
    lines = []
    for r in results:
        if r.method in baselines.BASELINES or r.method == "torch" or not r.elements_per_s:
            continue
        if floors:
            lines.append(
                f"{r.method} vs the floors: "
                + ", ".join(
                    f"{r.elements_per_s / f.elements_per_s:.2f}x {f.method}" for f in floors
                )
            )
    return lines
