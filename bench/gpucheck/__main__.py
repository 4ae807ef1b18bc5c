"""One command that qualifies a GPU: tests, benchmark, graph capture, LaPerm steps and the
auto-dispatch verdicts, written to a report.

    python -m bench.gpucheck OUTDIR          # from the checkout
    python -m bench.gpucheck --quick OUTDIR  # correctness and ResNet-50 fp32 only

Checks, in order; each ends PASS, FAIL or SKIPPED (with the reason), and each has a time
cap (CHECK_LIMITS_S): a check still running at its cap is stopped and FAILs:

- backends: with a GPU, the "cuda" and "triton" backends must both be available.
- gpu-tests: pytest of the GPU test files of the source checkout, in a subprocess (the
  Triton interpreter cases, CPU tests, deselected); counts from OUTDIR/gpu-tests.xml
  (JUnit), log in OUTDIR/gpu-tests.log. --quick: the cuda and triton backends' files,
  less the Triton cases whose kernels other cases launch too (QUICK_DESELECT).
- launch-plans: launches per call of the cuda and triton backends for every preset and
  dtype (without a GPU, planned on CPU tensors with sm_90's shared memory).
- copy-bandwidth: a device-to-device copy timed by CUDA events, and the theoretical peak
  when torch exposes the memory clock and bus width.
- benchmark: ``bench.results.run_benchmark`` for every preset x dtype on the GPU, every method
  (--quick: ResNet-50, float32).
- cuda-graph: a planned sync captured in a CUDA graph and replayed, bit for bit against
  the reference on CPU copies; replay vs eager time.
- laperm-steps: LaPerm(Adam) on a small MLP, backend "auto" vs "torch": parameters
  bit-identical after 7 steps.
- dispatch: ``laperm_kernels.dispatch_report()``, the decisions of backend="auto" in this
  process; a candidate that mismatched or raised fails it.
- sanitizer: the stream-order GPU test under ``compute-sanitizer --tool memcheck`` (SKIPPED
  where the tool is not found); log in OUTDIR/sanitizer.log.

--quick skips cuda-graph, laperm-steps and sanitizer (SKIPPED, "--quick").

backend="auto" decides afresh: LAPERM_CACHE_DIR is set to OUTDIR/dispatch-cache, emptied
first (also for the test subprocess). Writes OUTDIR/report.md and OUTDIR/report.json and
exits 1 if any check FAILED, else 0: without a GPU every GPU check is SKIPPED and the run
passes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from ..presets import PRESETS
from . import checks
from .checks import run_check
from .context import FAIL, Context
from .report import machine_info, tally, verdict, write_report
from .speed import DTYPES, QUICK_DTYPES, QUICK_PRESETS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="laperm-gpucheck", description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", type=Path, help="where report.md, report.json and logs go")
    p.add_argument(
        "--quick",
        action="store_true",
        help="correctness (the cuda and triton backends' GPU tests) and the "
        "ResNet-50 float32 timing only; cuda-graph and laperm-steps skipped",
    )
    p.add_argument("--repeat", type=int, default=3, help="timed runs per benchmark method (median)")
    p.add_argument(
        "--preset",
        nargs="+",
        choices=sorted(PRESETS),
        help="presets to plan and time (default: all; --quick: resnet50)",
    )
    p.add_argument(
        "--dtype",
        nargs="+",
        choices=DTYPES,
        help="dtypes to plan and time (default: all; --quick: float32)",
    )
    p.add_argument("--skip-tests", action="store_true", help="do not run the GPU test files")
    p.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="every check ends within this many seconds (with the report written "
        "after); each check's cap is also cut to what is left",
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.time_budget is not None and not args.time_budget > 0:
        p.error("--time-budget must be > 0")
    if args.preset is None:
        args.preset = list(QUICK_PRESETS) if args.quick else sorted(PRESETS)
    if args.dtype is None:
        args.dtype = list(QUICK_DTYPES) if args.quick else list(DTYPES)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    cache = (args.outdir / "dispatch-cache").resolve()
    shutil.rmtree(cache, ignore_errors=True)  # ours, from an earlier run into OUTDIR
    os.environ["LAPERM_CACHE_DIR"] = str(cache)
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    ctx = Context(
        args.outdir, args.repeat, args.preset, args.dtype, not args.skip_tests, args.quick, deadline
    )
    command = shlex.join(
        ["python", "-m", "bench.gpucheck", *(sys.argv[1:] if argv is None else argv)]
    )
    info = machine_info()
    print("laperm-gpucheck: " + "; ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    done = []
    for name, fn in checks.CHECKS:
        check = run_check(name, fn, ctx)
        print(
            f"laperm-gpucheck: {name}: {check.status} ({check.seconds:.1f} s) {check.summary}",
            flush=True,
        )
        done.append(check)
    write_report(args.outdir, info, done, command)
    print(
        f"laperm-gpucheck: {verdict(done)} ({tally(done)}); wrote "
        f"{args.outdir / 'report.md'} and {args.outdir / 'report.json'}"
    )
    return 1 if verdict(done) == FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
