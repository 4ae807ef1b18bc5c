"""Microbenchmark: rank matching of whole models' weights, every backend and baseline.

    python -m bench                       # ResNet-50, fp32, 1 and 2 threads
    python -m bench --preset all --repeat 5 --json results.json
    python -m bench --plot bench.png   # and a chart of the results

Every backend runs once to warm up (the torch reference is warmed up by the run that
computes the expected result; the baselines have nothing to warm up), then up to
`--repeat` times, interleaved with the others round by round in random order, each run
on weights restored from a pristine copy (untimed); the median is reported. A method
whose timed runs have taken `--budget` seconds runs no more rounds: the slow baselines
get one or two runs, the kernels all of them, and the table says how many. On CUDA
(`--device cuda`) a run is timed with CUDA events recorded around it on the current
stream. Each method's result is compared bit for bit with the PyTorch reference: a
mismatch is reported as an error and the command exits non-zero, it never shows up as a
number. ``auto`` is timed like the others; its
warm-up call is its first call for these shapes, which holds the trial (unless the
decision came from the disk cache): that call's time is reported beside the backend it
chose and the trial's verdicts. First, a "host overhead" line gives the fixed cost of a
call and of a LaPerm sync on 54 tiny tensors (bench/host_overhead.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import List

import torch

from . import host_overhead
from .machine import machine_info
from .presets import PRESETS
from .results import DTYPES, Result, methods_for, run_benchmark
from .table import format_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="laperm-bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset",
        nargs="+",
        default=["resnet50"],
        choices=sorted(PRESETS) + ["all"],
        help="model weight shapes (default resnet50)",
    )
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=sorted(DTYPES))
    p.add_argument(
        "--threads",
        nargs="+",
        type=int,
        default=None,
        help="intra-op thread counts to measure (default: 1 and all cores)",
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="timed runs per method, at most (median; default 3)"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=2.5,
        metavar="SECONDS",
        help="a method whose timed runs took this long runs no more (it has "
        "run at least once; default 2.5)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="only these backends/baselines (default: all available)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--no-host-overhead",
        action="store_true",
        help="skip the host-overhead line (54 tiny tensors: the fixed cost per "
        "call and per LaPerm sync, a few seconds)",
    )
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="also draw throughput per method and thread count as a PNG (needs matplotlib)",
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if not args.budget > 0:
        p.error("--budget must be > 0")
    if args.threads is not None and min(args.threads) < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    presets = sorted(PRESETS) if "all" in args.preset else args.preset
    cores = torch.get_num_threads()
    threads = args.threads or sorted({1, cores})
    info = machine_info()
    print("laperm-bench: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    overhead = None
    if not args.no_host_overhead:  # the host's fixed cost per call (host_overhead.py)
        overhead = host_overhead.measure(device)
        print(host_overhead.line(overhead, device), flush=True)
    results: List[Result] = []
    for preset in presets:
        for dtype in args.dtype:
            for t in threads:
                title = f"{preset}, {dtype}, {device}, {t} thread{'s' * (t > 1)}"
                with _Progress(
                    title,
                    len(methods_for(device, DTYPES[dtype], args.backends)) * (args.repeat + 1),
                ) as progress:
                    rows = run_benchmark(
                        preset, dtype, device, t, args.repeat, args.backends, progress, args.budget
                    )
                n = rows[0].elements if rows else 0
                print(
                    f"\n{preset}: {len(PRESETS[preset])} tensors, {n / 1e6:.2f}M elements, "
                    f"{dtype}, {device}, {t} thread{'s' * (t > 1)}, median of up to "
                    f"{args.repeat} runs"
                )
                print(format_table(rows), flush=True)
                results.extend(rows)
    torch.set_num_threads(cores)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "host_overhead_us": overhead,
                    "results": [asdict(r) for r in results],
                },
                f,
                indent=1,
            )
        print(f"\nwrote {args.json}")
    if args.plot:
        from .plot import plot_results

        print(plot_results(results, args.plot, info))
    mismatches = [r for r in results if r.check == "MISMATCH"]
    for r in mismatches:
        print(
            f"ERROR: {r.method} differs from the reference on {r.preset} {r.dtype} "
            f"({r.threads} threads)",
            file=sys.stderr,
        )
    return 1 if mismatches else 0


class _Progress:
    """A progress bar on stderr while one configuration runs (tqdm, where installed;
    else one line a method as it finishes its warm-up)."""

    def __init__(self, title: str, total: int):
        self.title, self.total, self.bar, self.seen = title, total, None, set()

    def __enter__(self):
        try:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total, desc=self.title, unit="run", leave=False, file=sys.stderr
            )
        except ImportError:
            print(f"{self.title}: ", end="", file=sys.stderr, flush=True)
        return self

    def __call__(self, method: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(method, refresh=False)
            self.bar.update()
        elif method not in self.seen:
            self.seen.add(method)
            print(method, end=" ", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr, flush=True)
        return False


if __name__ == "__main__":
    sys.exit(main())
