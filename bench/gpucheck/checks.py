"""The checks of laperm-gpucheck, in order (``CHECKS``), and how one runs: each returns
(passed, summary) or raises :class:`Skip`, and runs under its time cap (``run_check``)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

import laperm_kernels as lk
from laperm_kernels import _extension
from laperm_kernels.ops import dispatch
from laperm_kernels.ops.backends import BACKENDS
from laperm_kernels.ops.backends import cuda as cuda_backend
from laperm_kernels.ops.backends.triton import backend as triton_backend
from laperm_kernels.ops.reference import (
    SUPPORTED_DTYPES_BY_NAME,
    bitwise_equal,
    rank_match_reference_,
)
from laperm_kernels.ops.timing import DeviceTimer

from ..presets import PRESETS
from ..results import make_model, run_benchmark
from .junit import parse_junit

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"
DTYPES = tuple(SUPPORTED_DTYPES_BY_NAME)
# The GPU tests (files, or a file's one GPU test), and auto's trials (CPU stand-ins,
# cheap); the missing are left out. --quick runs the first two: the cuda and triton
# backends against the reference.
GPU_TEST_FILES = (
    "tests/cuda_backend/test_cuda.py",
    "tests/triton_backend/test_triton.py",
    "tests/cuda_backend/test_graph_capture_gpu.py",
    "tests/cuda_backend/test_streams_gpu.py",
    "tests/reliability/test_memory_limits.py"
    "::test_cuda_large_row_scratch_is_allocated_before_any_launch",
    "tests/dispatch/test_dispatch.py",
)
QUICK_TEST_FILES = GPU_TEST_FILES[:2]
DESELECT = "not test_interpreter"  # test_triton.py's TRITON_INTERPRET=1 cases: CPU tests
# --quick leaves out the Triton GPU cases whose kernels other cases launch too (the MLP,
# ResNet-50 in 16-bit types: the same tiles as the buckets and long rows, in every dtype)
# and whose CPU reference costs most (docs/cuda.md, "first GPU run").
QUICK_DESELECT = DESELECT + " and not (test_gpu_bitwise and (mlp or resnet50 and not float32))"
QUICK_PRESETS, QUICK_DTYPES = ["resnet50"], ["float32"]
QUICK_SKIPS = ("cuda-graph", "laperm-steps", "sanitizer")
# Run under compute-sanitizer's memcheck by the "sanitizer" check: the stream-order test (a
# launch that read tables before their upload landed would read out of bounds).
SANITIZED_TEST_FILE = "tests/cuda_backend/test_streams_gpu.py"
# Seconds a check may run (full run, --quick); docs/cuda.md ("first GPU run") has the
# budget these come from. A run with --time-budget also cuts each to what is left.
CHECK_LIMITS_S = {
    "backends": (30, 30),
    "gpu-tests": (240, 130),
    "launch-plans": (30, 15),
    "copy-bandwidth": (20, 20),
    "benchmark": (120, 30),
    "cuda-graph": (20, 20),
    "laperm-steps": (30, 30),
    "dispatch": (10, 10),
    "sanitizer": (60, 60),
}
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
    root = Path(__file__).resolve().parents[2]
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
    details["state"] = {
        name: "available" if mod.is_available() else mod.unavailable_reason()
        for name, mod in BACKENDS.items()
    }
    _need_gpu()
    missing = [
        f"{n}: {details['state'][n]}"
        for n in ("cuda", "triton")
        if details["state"][n] != "available"
    ]
    if missing:
        return False, "; ".join(missing)
    return True, f"on CUDA tensors, available fastest first: {lk.available_backends('cuda')}"


def _test_checkout(ctx: Context) -> Path:
    _need_gpu()
    root = source_checkout()
    if root is None:
        raise Skip("no source checkout (no tests/ beside laperm_kernels/)")
    if not ctx.run_tests:
        raise Skip("--skip-tests")
    return root


def check_gpu_tests(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    root = _test_checkout(ctx)
    files = [
        f
        for f in (QUICK_TEST_FILES if ctx.quick else GPU_TEST_FILES)
        if (root / f.split("::")[0]).is_file()
    ]
    return _run_pytest(ctx, details, "gpu-tests", root, files, [], DESELECT)


def check_sanitizer(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    root = _test_checkout(ctx)
    tool = shutil.which("compute-sanitizer") or shutil.which(
        "compute-sanitizer", path=str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin")
    )
    if tool is None:
        raise Skip("compute-sanitizer not found (on PATH or in $CUDA_HOME/bin)")
    prefix = [tool, "--tool", "memcheck", "--error-exitcode", "1"]
    return _run_pytest(ctx, details, "sanitizer", root, [SANITIZED_TEST_FILE], prefix, DESELECT)


def _run_pytest(
    ctx: Context, details: Dict[str, Any], name: str, root: Path, files, prefix, deselect
) -> Tuple[bool, str]:
    """Check ``name``: pytest on ``files`` (under ``prefix``, a wrapping tool), its JUnit
    report read back; passes when it exits 0 and ran a test."""
    xml, log = ctx.outdir / f"{name}.xml", ctx.outdir / f"{name}.log"
    cmd = [
        *prefix,
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        QUICK_DESELECT if ctx.quick else deselect,
        f"--junitxml={xml}",
        *files,
    ]
    details.update(command=shlex.join(cmd), cwd=str(root), log=log.name, junit=xml.name)
    # Before the check's own cap, so that the log says what ran (a killed pytest writes
    # no JUnit file).
    timeout = max(1.0, check_limit(name, ctx.quick) - 5)
    with open(log, "w") as out:
        try:
            rc = subprocess.run(
                cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return False, f"pytest stopped after {timeout:.0f} s (log: {log.name})"
    details["exit_code"] = rc
    result = parse_junit(xml)
    if result is None:
        return False, f"pytest exited {rc} without a readable {xml.name} (log: {log.name})"
    details.update(result)
    summary = (
        f"{result['passed']} passed, {result['failed']} failed, {result['errors']} "
        f"errors, {result['skipped']} skipped (pytest exit {rc})"
    )
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
        tile = (
            None
            if device.type == "cuda"
            else torch.ops.laperm.cuda_largest_block_tile(dtype, SM90_SMEM_OPTIN)
        )
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
    details["planned_on"] = (
        "this GPU"
        if device.type == "cuda"
        else "CPU tensors, cuda block tiles as on sm_90 (H100/H200)"
    )
    details["rows"] = []
    for preset in ctx.presets:
        for dtype in ctx.dtypes:
            counts = launch_counts(PRESETS[preset], SUPPORTED_DTYPES_BY_NAME[dtype], device)
            ctx.launches[(preset, dtype)] = counts
            details["rows"].append({"preset": preset, "dtype": dtype, **counts})
    return True, f"{len(details['rows'])} preset x dtype plans ({details['planned_on']})"


def theoretical_peak(props) -> Tuple[Optional[float], str]:
    """Peak memory bandwidth in GB/s from torch's device properties, and how it was found."""
    clock_khz = getattr(props, "memory_clock_rate", 0)  # kHz, as CUDA reports it
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None, (
            f"torch {torch.__version__} does not expose memory_clock_rate and memory_bus_width"
        )
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
    details.update(
        bytes=nbytes,
        median_s=seconds,
        copy_gb_per_s=ctx.copy_gb_per_s,
        peak_gb_per_s=ctx.peak_gb_per_s,
        peak_from=how,
    )
    summary = f"copy {ctx.copy_gb_per_s:.0f} GB/s (read + write, {nbytes >> 20} MiB)"
    if ctx.peak_gb_per_s:
        summary += (
            f", {ctx.copy_gb_per_s / ctx.peak_gb_per_s:.0%} of the theoretical "
            f"{ctx.peak_gb_per_s:.0f} GB/s"
        )
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
                results = run_benchmark(
                    preset,
                    dtype,
                    device,
                    torch.get_num_threads(),
                    ctx.repeat,
                    budget_s=BENCH_BUDGET_S,
                )
            except Exception as e:  # one broken combination must not hide the others
                errors.append(f"{preset} {dtype}: {type(e).__name__}: {e}")
                continue
            launches = ctx.launches.get((preset, dtype), {})
            for r in results:
                row = asdict(r)
                chosen = getattr(r, "chosen", None)  # auto: "cuda (trial: ...)"
                row["backend"] = (
                    chosen.split(" ", 1)[0] if chosen else None if r.method == "auto" else r.method
                )
                row["of_copy_bandwidth"] = _ratio(r.effective_gb_per_s, ctx.copy_gb_per_s)
                row["of_peak_bandwidth"] = _ratio(r.effective_gb_per_s, ctx.peak_gb_per_s)
                row["launches"] = launches.get(row["backend"])
                rows.append(row)
    details.update(repeat=ctx.repeat, rows=rows, errors=errors)
    mismatches = [
        f"{r['preset']} {r['dtype']} {r['method']}" for r in rows if r["check"] == "MISMATCH"
    ]
    details["mismatches"] = mismatches
    summary = (
        f"{len(rows)} results, {len(mismatches)} mismatches, {len(errors)} errors "
        f"(median of {ctx.repeat})"
    )
    return not mismatches and not errors, summary


def check_cuda_graph(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = _need_cuda_backend()
    ws, ss = make_model(GRAPH_SHAPES, torch.float32, device, seed=1)
    pristine = [w.clone() for w in ws]
    want = [rank_match_reference_(w.cpu(), s.cpu()) for w, s in zip(ws, ss)]
    plan = cuda_backend.plan_for(ws, ss)
    described = cuda_backend.describe_plan(plan)
    details.update(
        shapes=[list(s) for s in GRAPH_SHAPES],
        launches=[name for name, _, _ in described["launches"]],
        large_batches=len(described["large_batches"]),
    )

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
        net = torch.nn.Sequential(
            torch.nn.Linear(64, 300),
            torch.nn.ReLU(),
            torch.nn.Linear(300, 100),
            torch.nn.ReLU(),
            torch.nn.Linear(100, 10),
        ).to(device)
        opt = lk.LaPerm(torch.optim.Adam(net.parameters(), lr=1e-2), sync_period=3, backend=backend)
        x = torch.randn(32, 64, device=device)
        y = torch.randint(0, 10, (32,), device=device)
        for _ in range(7):  # syncs after steps 3 and 6
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return [p.detach().cpu() for p in net.parameters()]

    auto, ref = train("auto"), train("torch")
    differ = [i for i, (a, r) in enumerate(zip(auto, ref)) if not bitwise_equal(a, r)]
    details.update(
        steps=7, sync_period=3, available=lk.available_backends(device), differing_parameters=differ
    )
    if differ:
        return False, f"'auto' and 'torch' differ in parameters {differ} after 7 steps"
    return True, "'auto' and 'torch' bit-identical after 7 Adam steps (2 syncs)"


def check_dispatch(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    decisions = lk.dispatch_report()
    details["decisions"] = decisions
    bad = [
        f"{c['backend']} on {signature_text(d['signature'])}: {c['verdict']} {c['detail']}"
        for d in decisions
        for c in d["candidates"]
        if c["verdict"] in ("mismatch", "error")
    ]
    details["bad_candidates"] = bad
    if bad:
        return False, "; ".join(bad)
    if not decisions:
        return True, "no backend='auto' decision in this process"
    return True, f"{len(decisions)} decisions: " + ", ".join(
        f"{signature_text(d['signature'])} -> {d['backend']}" for d in decisions
    )


def signature_text(sig: Dict[str, Any]) -> str:
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
    ("sanitizer", check_sanitizer),
]


def check_limit(name: str, quick: bool) -> float:
    """Seconds the check ``name`` may run."""
    return CHECK_LIMITS_S.get(name, (DEFAULT_LIMIT_S,) * 2)[1 if quick else 0]


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raises CheckTimeout in this thread once ``seconds`` have passed (SIGALRM; where
    there is none, or off the main thread, no limit). The signal interrupts Python code
    only: a call that never returns (a hung kernel) is for the caller's outer timeout."""
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
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
