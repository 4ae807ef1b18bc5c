"""Microbenchmark: rank matching of whole models' weights, every backend and baseline.

    python -m laperm_kernels.bench                       # ResNet-50, fp32, 1 and 2 threads
    python -m laperm_kernels.bench --preset all --repeat 5 --json results.json
    python -m laperm_kernels.bench --plot bench.png   # and a chart of the results

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
call and of a LaPerm sync on 54 tiny tensors (laperm_kernels/host_overhead.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import platform
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import torch

from . import baselines, dispatch, host_overhead
from .backends import BACKENDS
from .ops import available_backends, rank_match_many_, sort_rows
from .presets import PRESETS
from .reference import bitwise_equal
from .timing import DeviceTimer, synchronize

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16}


@dataclass
class Result:
    preset: str
    dtype: str
    device: str
    threads: int
    method: str
    elements: int
    median_s: Optional[float]
    elements_per_s: Optional[float]
    effective_gb_per_s: Optional[float]  # read W, read S, write W: 3 x itemsize a element
    speedup_vs_torch: Optional[float]
    check: str  # "bit-identical", "not checked (sort only)" or "MISMATCH"
    runs: int = 0                          # timed runs behind the median
    first_call_s: Optional[float] = None  # auto: its first call (the trial, if one ran)
    chosen: Optional[str] = None          # auto: the backend it chose, and how


def make_model(shapes, dtype, device, seed=0):
    """He-normal 'trained' weights and the sorted rows of an independent initialisation."""
    g = torch.Generator().manual_seed(seed)
    weights, sorted_inits = [], []
    for shape in shapes:
        std = math.sqrt(2.0 / (math.prod(shape[1:]) or 1))
        weights.append((torch.randn(shape, generator=g) * std).to(dtype).to(device))
        init = (torch.randn(shape, generator=g) * std).to(dtype).to(device)
        sorted_inits.append(sort_rows(init))
    return weights, sorted_inits


@dataclass
class Timing:
    median_s: float
    runs: int
    output: List[torch.Tensor]
    first_call_s: Optional[float]  # the warm-up run, if the method had one


def time_methods(fns: List[Callable], warm_up: List[bool], pristine: List[torch.Tensor],
                 sorted_inits: List[torch.Tensor], repeat: int, budget_s: float = math.inf,
                 progress: Optional[Callable[[int], None]] = None) -> List[Timing]:
    """Times every method in ``fns`` on the same weights.

    Methods with ``warm_up[i]`` first run once outside the median (their first call, in
    which kernels compile or allocate and ``auto`` holds its trial; its time is returned
    as ``first_call_s``). Then the timed runs go round by round, each round in a new
    (seeded) random order, so that neither a drift of the machine's speed nor the method
    run just before favours one method; a method whose timed runs add up to ``budget_s``
    sits out the remaining rounds (every method gets at least one). Every run works on the
    same buffers, restored from ``pristine`` before it (untimed): where a tensor lies in
    memory moved the C++ kernel's time by ~4% between two copies of the same weights, more
    than the differences to be measured.
    The output checked is that of each method's first timed run. ``progress(i)`` is
    called after each run of method ``i``."""
    device = pristine[0].device
    timer = DeviceTimer(device)
    work = [p.clone() for p in pristine]
    first: List[Optional[float]] = [None] * len(fns)
    times: List[List[float]] = [[] for _ in fns]
    outputs: List[List[torch.Tensor]] = [[] for _ in fns]

    def run(i: int) -> float:
        for w, p in zip(work, pristine):
            w.copy_(p)
        synchronize(device)
        timer.start()
        fns[i](work, sorted_inits)
        seconds = timer.stop()
        if progress is not None:
            progress(i)
        return seconds

    for i in range(len(fns)):
        if warm_up[i]:
            first[i] = run(i)
    shuffle = random.Random(0).shuffle
    for r in range(repeat):
        order = list(range(len(fns)))
        shuffle(order)
        for i in order:
            if r > 0 and sum(times[i]) >= budget_s:
                continue
            times[i].append(run(i))
            if r == 0:
                outputs[i] = [w.clone() for w in work]
    return [Timing(statistics.median(t), len(t), out, f)
            for t, out, f in zip(times, outputs, first)]


def methods_for(device: torch.device, dtype: torch.dtype, backends: Optional[List[str]]):
    """(name, fn, checked) for every backend available here, then the naive baselines."""
    out = []
    names = [n for n in available_backends(device) if BACKENDS[n].supports(device, dtype)]
    names = ["torch"] + [n for n in names if n != "torch"]  # the reference first
    for name in names + ["auto"]:
        if backends is None or name in backends:
            out.append((name, lambda ws, ss, n=name: rank_match_many_(ws, ss, backend=n), True))
    for name, (fn, checked, dtypes) in baselines.BASELINES.items():
        if backends is not None and name not in backends:
            continue
        if dtype in dtypes and (device.type == "cpu" or not name.startswith("numpy")):
            out.append((name, fn, checked))
    return out


def run_benchmark(preset: str, dtype_name: str, device: torch.device, threads: int,
                  repeat: int, backends: Optional[List[str]] = None,
                  progress: Optional[Callable[[str], None]] = None,
                  budget_s: float = math.inf) -> List[Result]:
    """Times every method on ``preset``'s weights; ``progress(method)`` after each run."""
    dtype = _DTYPES[dtype_name]
    torch.set_num_threads(threads)
    pristine, sorted_inits = make_model(PRESETS[preset], dtype, device)
    elements = sum(w.numel() for w in pristine)
    expected = [w.clone() for w in pristine]
    rank_match_many_(expected, sorted_inits, backend="torch")  # also torch's warm-up
    if device.type == "cpu":  # the NumPy baselines run on CPU tensors only
        baselines.prepare_sort_keys(pristine)

    methods = methods_for(device, dtype, backends)
    warm_up = [name != "torch" and name not in baselines.BASELINES for name, _, _ in methods]
    timed = time_methods([fn for _, fn, _ in methods], warm_up, pristine, sorted_inits,
                         repeat, budget_s,
                         None if progress is None else lambda i: progress(methods[i][0]))
    results, torch_time = [], None
    for (name, _, checked), t in zip(methods, timed):
        common = dict(runs=t.runs)
        if name == "auto":
            common.update(first_call_s=t.first_call_s, chosen=_auto_choice(pristine))
        if checked and not all(bitwise_equal(a, b) for a, b in zip(t.output, expected)):
            results.append(Result(preset, dtype_name, str(device), threads, name, elements,
                                  None, None, None, None, "MISMATCH", **common))
            continue
        if name == "torch":
            torch_time = t.median_s
        results.append(Result(
            preset, dtype_name, str(device), threads, name, elements, t.median_s,
            elements / t.median_s,
            elements * 3 * pristine[0].element_size() / t.median_s / 1e9,
            torch_time / t.median_s if torch_time else None,
            "bit-identical" if checked else "not checked (sort only)", **common))
    return results


def _auto_choice(weights: List[torch.Tensor]) -> str:
    """What auto chose for these tensors, how, and the trial's verdicts, in one line."""
    shapes = [list(w.shape) for w in weights]
    threads = torch.get_num_threads()
    for d in reversed(dispatch.report()):
        sig = d["signature"]
        if sig["shapes"] == shapes and sig.get("threads", threads) == threads \
                and sig["device"] == str(weights[0].device):
            verdicts = "; ".join(dispatch.Verdict(**c).text() for c in d["candidates"])
            return f"{d['backend']} ({d['source']}: {verdicts})"
    return available_backends(weights[0].device)[0] + " (only candidate or LAPERM_AUTOTUNE=0)"


def format_table(results: List[Result]) -> str:
    head = f"{'method':<18} {'M elem/s':>10} {'GB/s':>8} {'vs torch':>9} {'runs':>4}  check"
    lines = [head, "-" * len(head)]
    for r in results:
        if r.median_s is None:
            lines.append(f"{r.method:<18} {'-':>10} {'-':>8} {'-':>9} {r.runs:>4}  {r.check}")
            continue
        ratio = f"{r.speedup_vs_torch:.2f}x" if r.speedup_vs_torch else "-"
        lines.append(f"{r.method:<18} {r.elements_per_s / 1e6:>10.1f} "
                     f"{r.effective_gb_per_s:>8.2f} {ratio:>9} {r.runs:>4}  {r.check}")
    for r in results:
        if r.chosen is not None:
            lines.append(f"auto chose {r.chosen}; its first call took "
                         f"{r.first_call_s * 1e3:.1f} ms")
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
            lines.append(f"{r.method} vs the floors: " + ", ".join(
                f"{r.elements_per_s / f.elements_per_s:.2f}x {f.method}" for f in floors))
    return lines


def machine_info() -> Dict[str, str]:
    from .backends import cpu

    info = {"torch": torch.__version__, "numpy": str(baselines.numpy_version()),
            "python": platform.python_version(), "cpu": dispatch.cpu_model(),
            "cpu_kernel_isa": cpu.kernel_isa(), "logical_cpus": str(torch.get_num_threads())}
    for name in ("LAPERM_CPU_ISA", "NPY_DISABLE_CPU_FEATURES"):  # caps on either's SIMD
        if os.environ.get(name):
            info[name] = os.environ[name]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = str(torch.version.cuda)
    return info


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="laperm-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["resnet50"],
                   choices=sorted(PRESETS) + ["all"], help="model weight shapes (default resnet50)")
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=sorted(_DTYPES))
    p.add_argument("--threads", nargs="+", type=int, default=None,
                   help="intra-op thread counts to measure (default: 1 and all cores)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per method, at most (median; default 3)")
    p.add_argument("--budget", type=float, default=2.5, metavar="SECONDS",
                   help="a method whose timed runs took this long runs no more (it has "
                        "run at least once; default 2.5)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--backends", nargs="+", default=None,
                   help="only these backends/baselines (default: all available)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-host-overhead", action="store_true",
                   help="skip the host-overhead line (54 tiny tensors: the fixed cost per "
                        "call and per LaPerm sync, a few seconds)")
    p.add_argument("--plot", metavar="PATH",
                   help="also draw throughput per method and thread count as a PNG "
                        "(needs matplotlib)")
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
                with _Progress(title, len(methods_for(device, _DTYPES[dtype], args.backends))
                               * (args.repeat + 1)) as progress:
                    rows = run_benchmark(preset, dtype, device, t, args.repeat,
                                         args.backends, progress, args.budget)
                n = rows[0].elements if rows else 0
                print(f"\n{preset}: {len(PRESETS[preset])} tensors, {n / 1e6:.2f}M elements, "
                      f"{dtype}, {device}, {t} thread{'s' * (t > 1)}, median of up to "
                      f"{args.repeat} runs")
                print(format_table(rows), flush=True)
                results.extend(rows)
    torch.set_num_threads(cores)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "host_overhead_us": overhead,
                       "results": [asdict(r) for r in results]}, f, indent=1)
        print(f"\nwrote {args.json}")
    if args.plot:
        from .bench_plot import plot_results
        print(plot_results(results, args.plot, info))
    mismatches = [r for r in results if r.check == "MISMATCH"]
    for r in mismatches:
        print(f"ERROR: {r.method} differs from the reference on {r.preset} {r.dtype} "
              f"({r.threads} threads)", file=sys.stderr)
    return 1 if mismatches else 0


class _Progress:
    """A progress bar on stderr while one configuration runs (tqdm, where installed;
    else one line a method as it finishes its warm-up)."""

    def __init__(self, title: str, total: int):
        self.title, self.total, self.bar, self.seen = title, total, None, set()

    def __enter__(self):
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc=self.title, unit="run", leave=False,
                            file=sys.stderr)
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
