"""What every check shares: its result (:class:`Check`), the run's :class:`Context`,
:class:`Skip` and the time cap's :class:`CheckTimeout`, and what a check needs of the
machine (a GPU, the cuda backend, the source checkout)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from laperm_kernels.ops.backends import cuda as cuda_backend
from laperm_kernels.ops.timing import DeviceTimer

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"


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


def need_gpu() -> torch.device:
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise Skip(f"no CUDA device: torch {torch.__version__} is a CPU build")
        raise Skip("no CUDA device (torch.cuda.is_available() is False)")
    return torch.device("cuda", torch.cuda.current_device())


def need_cuda_backend() -> torch.device:
    device = need_gpu()
    if not cuda_backend.is_available():
        raise Skip(f"the cuda backend is unavailable: {cuda_backend.unavailable_reason()}")
    return device


def source_checkout() -> Optional[Path]:
    """The repository root holding tests/ beside this package, or None (an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "tests").is_dir() and (root / "laperm_kernels").is_dir() else None


def cuda_seconds(fn: Callable[[], object], calls: int = 1) -> float:
    """Seconds per call of ``fn`` run ``calls`` times back to back, by CUDA events."""
    timer = DeviceTimer(torch.device("cuda"))
    timer.start()
    for _ in range(calls):
        fn()
    return timer.stop() / calls


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


def check_limit(name: str, quick: bool) -> float:
    """Seconds the check ``name`` may run."""
    return CHECK_LIMITS_S.get(name, (DEFAULT_LIMIT_S,) * 2)[1 if quick else 0]
