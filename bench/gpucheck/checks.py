"""The checks of laperm-gpucheck, in order (``CHECKS``), and how one runs: each returns
(passed, summary) or raises :class:`Skip`, and runs under its time cap (``run_check``)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

from .context import FAIL, PASS, SKIPPED, Check, CheckTimeout, Context, Skip, check_limit
from .speed import check_benchmark, check_copy_bandwidth, check_launch_plans
from .steps import check_cuda_graph, check_dispatch, check_laperm_steps
from .suite import check_backends, check_gpu_tests, check_sanitizer

QUICK_SKIPS = ("cuda-graph", "laperm-steps", "sanitizer")


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
