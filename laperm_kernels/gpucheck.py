"""One command that qualifies a GPU: tests, benchmark, graph capture, LaPerm steps and the
auto-dispatch verdicts, written to a report.

    python -m laperm_kernels.gpucheck OUTDIR          # or: laperm-gpucheck OUTDIR
    python -m laperm_kernels.gpucheck --quick OUTDIR  # correctness and ResNet-50 fp32 only

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
- benchmark: ``bench.run_benchmark`` for every preset x dtype on the GPU, every method
  (--quick: ResNet-50, float32).
- cuda-graph: a planned sync captured in a CUDA graph and replayed, bit for bit against
  the reference on CPU copies; replay vs eager time.
- laperm-steps: LaPerm(Adam) on a small MLP, backend "auto" vs "torch": parameters
  bit-identical after 7 steps.
- dispatch: ``laperm_kernels.dispatch_report()``, the decisions of backend="auto" in this
  process; a candidate that mismatched or raised fails it.

--quick skips cuda-graph and laperm-steps (SKIPPED, "--quick").

backend="auto" decides afresh: LAPERM_CACHE_DIR is set to OUTDIR/dispatch-cache, emptied
first (also for the test subprocess). Writes OUTDIR/report.md and OUTDIR/report.json and
exits 1 if any check FAILED, else 0: without a GPU every GPU check is SKIPPED and the run
passes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

import laperm_kernels as lk

from . import _extension, bench, dispatch
from .backends import BACKENDS
from .backends import cuda as cuda_backend
from .backends import triton as triton_backend
from .presets import PRESETS
from .reference import bitwise_equal, rank_match_reference_
from .timing import DeviceTimer

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"
DTYPES = ("float32", "float64", "float16", "bfloat16")
# The GPU tests (files, or a file's one GPU test), and auto's trials (CPU stand-ins,
# cheap); the missing are left out. --quick runs the first two: the cuda and triton
# backends against the reference.
GPU_TEST_FILES = ("tests/cuda_backend/test_cuda.py", "tests/triton_backend/test_triton.py",
                  "tests/cuda_backend/test_graph_capture_gpu.py",
                  "tests/reliability/test_memory_limits.py"
                  "::test_cuda_large_row_scratch_is_allocated_before_any_launch",
                  "tests/dispatch/test_dispatch.py")
QUICK_TEST_FILES = GPU_TEST_FILES[:2]
DESELECT = "not test_interpreter"  # test_triton.py's TRITON_INTERPRET=1 cases: CPU tests
# --quick leaves out the Triton GPU cases whose kernels other cases launch too (the MLP,
# ResNet-50 in 16-bit types: the same tiles as the buckets and long rows, in every dtype)
# and whose CPU reference costs most (docs/cuda.md, "first GPU run").
QUICK_DESELECT = DESELECT + " and not (test_gpu_bitwise and (mlp or resnet50 and not float32))"
QUICK_PRESETS, QUICK_DTYPES = ["resnet50"], ["float32"]
QUICK_SKIPS = ("cuda-graph", "laperm-steps")
# Seconds a check may run (full run, --quick); docs/cuda.md ("first GPU run") has the
# budget these come from. A run with --time-budget also cuts each to what is left.
CHECK_LIMITS_S = {"backends": (30, 30), "gpu-tests": (240, 130), "launch-plans": (30, 15),
                  "copy-bandwidth": (20, 20), "benchmark": (120, 30), "cuda-graph": (20, 20),
                  "laperm-steps": (30, 30), "dispatch": (10, 10)}
DEFAULT_LIMIT_S = 60
BENCH_BUDGET_S = 1.0  # timed seconds per benchmark method (bench's --budget)
SM90_SMEM_OPTIN = 227 * 1024  # shared memory per block, opt-in, on sm_90 (H100, H200)
# warp, block 1024, block 6144, large (segmented sort), large (device-wide sort)
GRAPH_SHAPES = [(1000, 40), (256, 576), (64, 4608), (8, 20000), (1 << 18,)]


class Skip(Exception):
    """Raised by a check that cannot run here; the message says why."""


class CheckTimeout(BaseException):
    """Raised in a check that reached its time cap (a BaseException, so that a check's own
    ``except Exception`` does not swallow it)."""


@dataclass
class Check:
    name: str
    status: str = SKIPPED
    summary: str = ""
    seconds: float = 0.0
    details: Dict[str, Any] = field(default_factory=dict)
    limit_s: Optional[float] = None  # its time cap


@dataclass
class Context:
    outdir: Path
    repeat: int
    presets: List[str]
    dtypes: List[str]
    run_tests: bool
    quick: bool = False
    deadline: Optional[float] = None  # time.monotonic() by which every check has ended
    # set by earlier checks for later ones
    copy_gb_per_s: Optional[float] = None
    peak_gb_per_s: Optional[float] = None
    launches: Dict[Tuple[str, str], Dict[str, Optional[int]]] = field(default_factory=dict)


def _need_gpu() -> torch.device:
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise Skip(f"no CUDA device: torch {torch.__version__} is a CPU build")
        raise Skip("no CUDA device (torch.cuda.is_available() is False)")
    return torch.device("cuda", torch.cuda.current_device())


def _need_cuda_backend() -> torch.device:
    device = _need_gpu()
    if not cuda_backend.is_available():
        raise Skip(f"the cuda backend is unavailable: {cuda_backend.unavailable_reason()}")
    return device


def source_checkout() -> Optional[Path]:
    """The repository root holding tests/ beside this package, or None (an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "tests").is_dir() and (root / "laperm_kernels").is_dir() else None


def _cuda_seconds(fn: Callable[[], object], calls: int = 1) -> float:
    """Seconds per call of ``fn`` run ``calls`` times back to back, by CUDA events."""
    timer = DeviceTimer(torch.device("cuda"))
    timer.start()
    for _ in range(calls):
        fn()
    return timer.stop() / calls


# --- checks: each returns (passed, summary) or raises Skip; details fill the report ---

def check_backends(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    details["state"] = {name: "available" if mod.is_available() else mod.unavailable_reason()
                        for name, mod in BACKENDS.items()}
    _need_gpu()
    missing = [f"{n}: {details['state'][n]}" for n in ("cuda", "triton")
               if details["state"][n] != "available"]
    if missing:
        return False, "; ".join(missing)
    return True, f"on CUDA tensors, available fastest first: {lk.available_backends('cuda')}"


def parse_junit(path: Path) -> Optional[Dict[str, Any]]:
    """Outcome counts of a pytest JUnit XML file (either root element), the failures and
    the skip reasons; None if the file is missing or unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skip_reasons = [], Counter()
    for case in root.iter("testcase"):
        test = "::".join(filter(None, (case.get("classname"), case.get("name"))))
        outcome = {child.tag: child for child in case}
        for tag, key in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            if tag in outcome:
                counts[key] += 1
                message = (outcome[tag].get("message") or "").strip().splitlines()
                if tag == "skipped":
                    skip_reasons[message[0] if message else "(no reason)"] += 1
                else:
                    failures.append(f"{test}: {message[0][:300] if message else tag}")
                break
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures, "skip_reasons": dict(skip_reasons.most_common())}


def check_gpu_tests(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    _need_gpu()
    root = source_checkout()
    if root is None:
        raise Skip("no source checkout (no tests/ beside laperm_kernels/)")
    if not ctx.run_tests:
        raise Skip("--skip-tests")
    files = [f for f in (QUICK_TEST_FILES if ctx.quick else GPU_TEST_FILES)
             if (root / f.split("::")[0]).is_file()]
    xml, log = ctx.outdir / "gpu-tests.xml", ctx.outdir / "gpu-tests.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-k", QUICK_DESELECT if ctx.quick else DESELECT, f"--junitxml={xml}", *files]
    details.update(command=shlex.join(cmd), cwd=str(root), log=log.name, junit=xml.name)
    # Before the check's own cap, so that the log says what ran (a killed pytest writes
    # no JUnit file).
    timeout = max(1.0, check_limit("gpu-tests", ctx.quick) - 5)
    with open(log, "w") as out:
        try:
            rc = subprocess.run(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return False, f"pytest stopped after {timeout:.0f} s (log: {log.name})"
    details["exit_code"] = rc
    result = parse_junit(xml)
    if result is None:
        return False, f"pytest exited {rc} without a readable {xml.name} (log: {log.name})"
    details.update(result)
    summary = (f"{result['passed']} passed, {result['failed']} failed, {result['errors']} "
               f"errors, {result['skipped']} skipped (pytest exit {rc})")
    if rc == 0 and result["passed"] == 0:
        return False, summary + ": no GPU test ran"
    return rc == 0 and result["failed"] == result["errors"] == 0, summary


def launch_counts(shapes, dtype: torch.dtype, device: torch.device) -> Dict[str, Optional[int]]:
    """Launches per call of each backend for tensors of ``shapes``: cuda, one per size
    class plus one per large batch; triton, one per block bucket plus one per batch of
    long rows (each a chunk sort and its merge passes). None where the backend cannot
    plan them. Plans depend on shapes and addresses only, so the tensors are left
    uninitialised; on the CPU the cuda plan takes sm_90's largest block tile."""
    ws = [torch.empty(s, dtype=dtype, device=device) for s in shapes]
    ss = [torch.empty_like(w) for w in ws]
    counts: Dict[str, Optional[int]] = {"cuda": None, "triton": None}
    if _extension.is_loaded():
        tile = (None if device.type == "cuda"
                else torch.ops.laperm.cuda_largest_block_tile(dtype, SM90_SMEM_OPTIN))
        plan = cuda_backend.describe_plan(cuda_backend.plan_for(ws, ss, max_block_tile=tile))
        counts["cuda"] = len(plan["launches"]) + len(plan["large_batches"])
    tk = triton_backend._kernels()
    if tk is not None and dtype in triton_backend._KINDS:
        plan = triton_backend._plan(tk, ws, ss, tk.MAX_BLOCK, tk.CHUNK)
        counts["triton"] = len(plan.launches)
    return counts


def check_launch_plans(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    if not _extension.is_loaded() and triton_backend._kernels() is None:
        raise Skip("neither the C++ extension nor triton is available to plan")
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    details["planned_on"] = ("this GPU" if device.type == "cuda" else
                             "CPU tensors, cuda block tiles as on sm_90 (H100/H200)")
    details["rows"] = []
    for preset in ctx.presets:
        for dtype in ctx.dtypes:
            counts = launch_counts(PRESETS[preset], bench._DTYPES[dtype], device)
            ctx.launches[(preset, dtype)] = counts
            details["rows"].append({"preset": preset, "dtype": dtype, **counts})
    return True, f"{len(details['rows'])} preset x dtype plans ({details['planned_on']})"


def theoretical_peak(props) -> Tuple[Optional[float], str]:
    """Peak memory bandwidth in GB/s from torch's device properties, and how it was found."""
    clock_khz = getattr(props, "memory_clock_rate", 0)  # kHz, as CUDA reports it
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None, (f"torch {torch.__version__} does not expose memory_clock_rate and "
                      "memory_bus_width")
    peak = 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate
    return peak, f"2 x {clock_khz / 1e3:.0f} MHz x {bus_bits}-bit bus"


def check_copy_bandwidth(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = _need_gpu()
    props = torch.cuda.get_device_properties(device)
    nbytes = min(1 << 30, props.total_memory // 8)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)

    _cuda_seconds(copy)  # warm-up
    seconds = statistics.median(_cuda_seconds(copy) for _ in range(10))
    ctx.copy_gb_per_s = 2 * nbytes / seconds / 1e9  # bytes read + bytes written
    ctx.peak_gb_per_s, how = theoretical_peak(props)
    details.update(bytes=nbytes, median_s=seconds, copy_gb_per_s=ctx.copy_gb_per_s,
                   peak_gb_per_s=ctx.peak_gb_per_s, peak_from=how)
    summary = f"copy {ctx.copy_gb_per_s:.0f} GB/s (read + write, {nbytes >> 20} MiB)"
    if ctx.peak_gb_per_s:
        summary += (f", {ctx.copy_gb_per_s / ctx.peak_gb_per_s:.0%} of the theoretical "
                    f"{ctx.peak_gb_per_s:.0f} GB/s")
    return True, summary


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a and b else None


def check_benchmark(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = _need_gpu()
    dispatch.reset()  # backend="auto" holds its trials in this run
    rows, errors = [], []
    for preset in ctx.presets:
        for dtype in ctx.dtypes:
            try:
                results = bench.run_benchmark(preset, dtype, device, torch.get_num_threads(),
                                              ctx.repeat, budget_s=BENCH_BUDGET_S)
            except Exception as e:  # one broken combination must not hide the others
                errors.append(f"{preset} {dtype}: {type(e).__name__}: {e}")
                continue
            launches = ctx.launches.get((preset, dtype), {})
            for r in results:
                row = asdict(r)
                chosen = getattr(r, "chosen", None)  # auto: "cuda (trial: ...)"
                row["backend"] = (chosen.split(" ", 1)[0] if chosen
                                  else None if r.method == "auto" else r.method)
                row["of_copy_bandwidth"] = _ratio(r.effective_gb_per_s, ctx.copy_gb_per_s)
                row["of_peak_bandwidth"] = _ratio(r.effective_gb_per_s, ctx.peak_gb_per_s)
                row["launches"] = launches.get(row["backend"])
                rows.append(row)
    details.update(repeat=ctx.repeat, rows=rows, errors=errors)
    mismatches = [f"{r['preset']} {r['dtype']} {r['method']}" for r in rows
                  if r["check"] == "MISMATCH"]
    details["mismatches"] = mismatches
    summary = (f"{len(rows)} results, {len(mismatches)} mismatches, {len(errors)} errors "
               f"(median of {ctx.repeat})")
    return not mismatches and not errors, summary


def check_cuda_graph(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = _need_cuda_backend()
    ws, ss = bench.make_model(GRAPH_SHAPES, torch.float32, device, seed=1)
    pristine = [w.clone() for w in ws]
    want = [rank_match_reference_(w.cpu(), s.cpu()) for w, s in zip(ws, ss)]
    plan = cuda_backend.plan_for(ws, ss)
    described = cuda_backend.describe_plan(plan)
    details.update(shapes=[list(s) for s in GRAPH_SHAPES],
                   launches=[name for name, _, _ in described["launches"]],
                   large_batches=len(described["large_batches"]))

    def sync():
        torch.ops.laperm.rank_match_planned_(ws, ss, *plan)

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm up off the capture stream, as torch advises
        sync()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sync()
    for w, p in zip(ws, pristine):
        w.copy_(p)
    graph.replay()
    torch.cuda.synchronize(device)
    differ = [i for i, (w, e) in enumerate(zip(ws, want)) if not bitwise_equal(w.cpu(), e)]
    details["differing_tensors"] = differ
    # Timed on weights already rank-matched: the same launches, the same work.
    details["eager_us"] = _cuda_seconds(sync, 20) * 1e6
    details["replay_us"] = _cuda_seconds(graph.replay, 20) * 1e6
    timing = f"replay {details['replay_us']:.1f} us vs eager {details['eager_us']:.1f} us a sync"
    if differ:
        return False, f"replay differs from the reference in tensors {differ}; {timing}"
    return True, f"replay bit-identical to the reference; {timing}"


def check_laperm_steps(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = _need_gpu()

    def train(backend: str) -> List[torch.Tensor]:
        torch.manual_seed(0)
        # Linear layers only: cuDNN's convolution backward may be nondeterministic
        net = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.ReLU(),
                                  torch.nn.Linear(300, 100), torch.nn.ReLU(),
                                  torch.nn.Linear(100, 10)).to(device)
        opt = lk.LaPerm(torch.optim.Adam(net.parameters(), lr=1e-2), sync_period=3,
                        backend=backend)
        x = torch.randn(32, 64, device=device)
        y = torch.randint(0, 10, (32,), device=device)
        for _ in range(7):  # syncs after steps 3 and 6
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return [p.detach().cpu() for p in net.parameters()]

    auto, ref = train("auto"), train("torch")
    differ = [i for i, (a, r) in enumerate(zip(auto, ref)) if not bitwise_equal(a, r)]
    details.update(steps=7, sync_period=3, available=lk.available_backends(device),
                   differing_parameters=differ)
    if differ:
        return False, f"'auto' and 'torch' differ in parameters {differ} after 7 steps"
    return True, "'auto' and 'torch' bit-identical after 7 Adam steps (2 syncs)"


def check_dispatch(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    decisions = lk.dispatch_report()
    details["decisions"] = decisions
    bad = [f"{c['backend']} on {_signature_text(d['signature'])}: {c['verdict']} {c['detail']}"
           for d in decisions for c in d["candidates"] if c["verdict"] in ("mismatch", "error")]
    details["bad_candidates"] = bad
    if bad:
        return False, "; ".join(bad)
    if not decisions:
        return True, "no backend='auto' decision in this process"
    return True, f"{len(decisions)} decisions: " + ", ".join(
        f"{_signature_text(d['signature'])} -> {d['backend']}" for d in decisions)


def _signature_text(sig: Dict[str, Any]) -> str:
    shapes = [tuple(s) for s in sig.get("shapes", [])]
    model = next((p for p, s in PRESETS.items() if s == shapes), f"{len(shapes)} tensors")
    return f"{model} {sig.get('dtype', '?')} on {sig.get('device', '?')}"


CHECKS: List[Tuple[str, Callable[[Context, Dict[str, Any]], Tuple[bool, str]]]] = [
    ("backends", check_backends),
    ("gpu-tests", check_gpu_tests),
    ("launch-plans", check_launch_plans),
    ("copy-bandwidth", check_copy_bandwidth),
    ("benchmark", check_benchmark),
    ("cuda-graph", check_cuda_graph),
    ("laperm-steps", check_laperm_steps),
    ("dispatch", check_dispatch),
]


def check_limit(name: str, quick: bool) -> float:
    """Seconds the check ``name`` may run."""
    return CHECK_LIMITS_S.get(name, (DEFAULT_LIMIT_S,) * 2)[1 if quick else 0]


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raises CheckTimeout in this thread once ``seconds`` have passed (SIGALRM; where
    there is none, or off the main thread, no limit). The signal interrupts Python code
    only: a call that never returns (a hung kernel) is for the caller's outer timeout."""
    if (not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return

    def expired(signum, frame):
        raise CheckTimeout(f"{what} reached its time cap of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_check(name: str, fn, ctx: Context, limit_s: Optional[float] = None) -> Check:
    check = Check(name)
    start = time.perf_counter()
    limit_s = check_limit(name, ctx.quick) if limit_s is None else limit_s
    if ctx.deadline is not None:
        limit_s = min(limit_s, ctx.deadline - time.monotonic())
    limit_s = check.limit_s = round(max(limit_s, 0.0), 1)
    try:
        if ctx.quick and name in QUICK_SKIPS:
            raise Skip("--quick")
        if limit_s <= 0:
            raise CheckTimeout(f"{name} did not start: no time left of the --time-budget")
        with time_limit(limit_s, name):
            passed, check.summary = fn(ctx, check.details)
        check.status = PASS if passed else FAIL
    except Skip as e:
        check.status, check.summary = SKIPPED, str(e)
    except CheckTimeout as e:
        check.status, check.summary = FAIL, str(e)
        check.details["traceback"] = traceback.format_exc()
    except Exception as e:
        check.status, check.summary = FAIL, f"{type(e).__name__}: {e}"
        check.details["traceback"] = traceback.format_exc()
    check.seconds = time.perf_counter() - start
    return check


# --- the machine ----------------------------------------------------------------------

def _command_output(cmd: List[str], cwd: Optional[Path] = None) -> Optional[str]:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> Dict[str, str]:
    root = source_checkout()
    info = {
        "host": platform.node(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "cpu": f"{dispatch.cpu_model()}, {os.cpu_count()} logical CPUs",
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda or 'none: a CPU build'})",
        "triton": _version("triton"),
        "laperm-kernels": f"{lk.__version__} ({Path(lk.__file__).parent})",
        "source checkout": str(root) if root else "none",
    }
    if os.environ.get("LAPERM_GPUCHECK_BUILD"):  # set by tools/gpu_build_and_check.sh
        info["build"] = os.environ["LAPERM_GPUCHECK_BUILD"]
    if root is not None:
        info["git commit"] = _command_output(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root) or "unknown"
    if _extension.is_loaded():
        info["compiled backends"] = ", ".join(torch.ops.laperm.compiled_backends())
        info["C++ kernel ISA"] = torch.ops.laperm.cpu_kernel_isa()
    else:
        info["compiled backends"] = f"none: {_extension.load_error()}"
    info["available backends"] = ", ".join(lk.available_backends()) or "none"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info["GPU"] = (f"{props.name}, {torch.cuda.device_count()} visible, using "
                       f"cuda:{torch.cuda.current_device()}")
        info["compute capability"] = f"{props.major}.{props.minor} (sm_{props.major}{props.minor})"
        info["GPU memory"] = (f"{props.total_memory / 2**30:.1f} GiB, "
                              f"{props.multi_processor_count} SMs")
        driver = _command_output(["nvidia-smi", "--query-gpu=driver_version",
                                  "--format=csv,noheader", "-i", str(torch.cuda.current_device())])
        info["driver"] = driver.splitlines()[0] if driver else "unknown (no nvidia-smi)"
        info["torch CUDA arch list"] = " ".join(torch.cuda.get_arch_list())
    else:
        info["GPU"] = "none: " + (f"torch {torch.__version__} is a CPU build"
                                  if torch.version.cuda is None
                                  else "torch.cuda.is_available() is False")
    return info


# --- the report -----------------------------------------------------------------------

def verdict(checks: List[Check]) -> str:
    return FAIL if any(c.status == FAIL for c in checks) else PASS


def _tally(checks: List[Check]) -> str:
    counts = Counter(c.status for c in checks)
    return ", ".join(f"{counts[s]} {s}" for s in (PASS, FAIL, SKIPPED) if counts[s])


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: List[str], rows: List[List[Any]]) -> List[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _fmt(value: Optional[float], spec: str, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None else format(value * scale, spec) + suffix


def _count(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def _method_cell(row: Dict[str, Any]) -> str:
    if row["method"] != "auto":
        return row["method"]
    first = row.get("first_call_s")
    notes = [n for n in (row["backend"], first and f"first call {first * 1e3:.1f} ms") if n]
    return f"auto ({'; '.join(notes)})" if notes else "auto"


def _details_md(check: Check) -> List[str]:
    d = check.details
    lines: List[str] = []
    if check.name == "backends" and "state" in d:
        lines += _table(["backend", "state"], [[n, s] for n, s in d["state"].items()])
    elif check.name == "gpu-tests" and "command" in d:
        lines += [f"`{d['command']}` in `{d['cwd']}`; log `{d['log']}`, JUnit `{d['junit']}`."]
        lines += [""] + [f"- FAILED {f}" for f in d.get("failures", [])]
        lines += [f"- skipped {n}x: {reason}" for reason, n in d.get("skip_reasons", {}).items()]
    elif check.name == "launch-plans" and "rows" in d:
        lines += [f"Launches per call, planned on {d['planned_on']}.", ""]
        lines += _table(["preset", "dtype", "cuda", "triton"],
                        [[r["preset"], r["dtype"], _count(r["cuda"]), _count(r["triton"])]
                         for r in d["rows"]])
        lines += ["", "cuda: one launch per size class plus one per large batch (a batch is a "
                  "gather, CUB's sort kernels and a scatter); triton: one per block bucket plus "
                  "one per batch of long rows (a chunk sort, then one merge pass per "
                  "doubling of the sorted runs)."]
    elif check.name == "copy-bandwidth" and "bytes" in d:
        peak = (f"{d['peak_gb_per_s']:.0f} GB/s ({d['peak_from']})" if d["peak_gb_per_s"]
                else f"unknown: {d['peak_from']}")
        lines += [f"- `dst.copy_(src)` of {d['bytes'] >> 20} MiB: median {d['median_s'] * 1e3:.3f}"
                  f" ms of 10, {d['copy_gb_per_s']:.0f} GB/s counting bytes read and written",
                  f"- theoretical peak: {peak}"]
    elif check.name == "benchmark" and "rows" in d:
        lines += _table(
            ["preset", "dtype", "method", "M elem/s", "GB/s", "of copy", "of peak", "vs torch",
             "launches", "check"],
            [[r["preset"], r["dtype"], _method_cell(r), _fmt(r["elements_per_s"], ".1f", 1e-6),
              _fmt(r["effective_gb_per_s"], ".1f"), _fmt(r["of_copy_bandwidth"], ".1%"),
              _fmt(r["of_peak_bandwidth"], ".1%"), _fmt(r["speedup_vs_torch"], ".2f", suffix="x"),
              _count(r["launches"]), r["check"]] for r in d["rows"]])
        lines += ["", "GB/s counts 3 x itemsize per element (read W, read S, write W); "
                  "\"of copy\" is against the copy-bandwidth check, \"of peak\" against the "
                  "theoretical peak; launches as in launch-plans."]
        lines += [f"- ERROR {e}" for e in d.get("errors", [])]
    elif check.name == "cuda-graph" and "shapes" in d:
        lines += [f"- shapes {d['shapes']}; launches {d['launches']} + {d['large_batches']} "
                  "large batches"]
        if "replay_us" in d:
            lines += [f"- a sync: graph replay {d['replay_us']:.1f} us, eager planned call "
                      f"{d['eager_us']:.1f} us (CUDA events, mean of 20 back to back)"]
    elif check.name == "laperm-steps" and "steps" in d:
        lines += [f"- LaPerm(Adam), sync_period {d['sync_period']}, {d['steps']} steps; "
                  f"backends available on this device: {d['available']}"]
    elif check.name == "dispatch" and d.get("decisions"):
        lines += _table(["group", "backend", "source", "candidates"], [
            [_signature_text(x["signature"]), x["backend"], x["source"], "; ".join(
                dispatch.Verdict(**c).text() for c in x["candidates"])]
            for x in d["decisions"]])
    if "traceback" in d:
        lines += ["```", d["traceback"].rstrip(), "```"]
    return lines


def render_markdown(info: Dict[str, str], checks: List[Check], command: str) -> str:
    total = sum(c.seconds for c in checks)
    lines = [f"# laperm-kernels GPU check: {verdict(checks)} ({_tally(checks)})", "",
             f"{datetime.datetime.now().isoformat(timespec='seconds')}, `{command}`: the "
             f"checks took {total:.1f} s.", "", "## Machine", ""]
    lines += _table(["", ""], [[k, v] for k, v in info.items()])
    lines += ["", "## Checks", ""]
    lines += _table(["check", "status", "seconds", "cap s", "result"],
                    [[c.name, c.status, f"{c.seconds:.1f}", _fmt(c.limit_s, "g"), c.summary]
                     for c in checks])
    for c in checks:
        body = _details_md(c)
        if body:
            lines += ["", f"## {c.name}: {c.status}", "", *body]
    return "\n".join(lines) + "\n"


def write_report(outdir: Path, info: Dict[str, str], checks: List[Check], command: str) -> None:
    report = {"verdict": verdict(checks), "command": command, "machine": info,
              "checks": [asdict(c) for c in checks]}
    (outdir / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (outdir / "report.md").write_text(render_markdown(info, checks, command))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="laperm-gpucheck", description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", type=Path, help="where report.md, report.json and logs go")
    p.add_argument("--quick", action="store_true",
                   help="correctness (the cuda and triton backends' GPU tests) and the "
                        "ResNet-50 float32 timing only; cuda-graph and laperm-steps skipped")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per benchmark method (median)")
    p.add_argument("--preset", nargs="+", choices=sorted(PRESETS),
                   help="presets to plan and time (default: all; --quick: resnet50)")
    p.add_argument("--dtype", nargs="+", choices=DTYPES,
                   help="dtypes to plan and time (default: all; --quick: float32)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the GPU test files")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="every check ends within this many seconds (with the report written "
                        "after); each check's cap is also cut to what is left")
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
    ctx = Context(args.outdir, args.repeat, args.preset, args.dtype, not args.skip_tests,
                  args.quick, deadline)
    command = shlex.join(["python", "-m", "laperm_kernels.gpucheck",
                          *(sys.argv[1:] if argv is None else argv)])
    info = machine_info()
    print("laperm-gpucheck: " + "; ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    checks = []
    for name, fn in CHECKS:
        check = run_check(name, fn, ctx)
        print(f"laperm-gpucheck: {name}: {check.status} ({check.seconds:.1f} s) "
              f"{check.summary}", flush=True)
        checks.append(check)
    write_report(args.outdir, info, checks, command)
    print(f"laperm-gpucheck: {verdict(checks)} ({_tally(checks)}); wrote "
          f"{args.outdir / 'report.md'} and {args.outdir / 'report.json'}")
    return 1 if verdict(checks) == FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
