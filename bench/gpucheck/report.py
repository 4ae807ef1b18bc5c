"""laperm-gpucheck's report: the machine it ran on, and report.md and report.json."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

import laperm_kernels as lk
from laperm_kernels import _extension
from laperm_kernels.ops import decision_store

from ..machine import machine_info as bench_machine_info
from .context import FAIL, PASS, SKIPPED, Check, source_checkout
from .steps import signature_text

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
    """The benchmark's description of the machine (bench/machine.py:
    versions, the CPU and the C++ kernel's instruction set, the GPU's name), and what a
    qualification adds: where the package and its build come from, the backends, and the
    GPU's details."""
    root = source_checkout()
    info = bench_machine_info()
    info.update(
        {
            "host": platform.node(),
            "python executable": sys.executable,
            "cuda": torch.version.cuda or "none: a CPU build",
            "triton": _version("triton"),
            "laperm-kernels": f"{lk.__version__} ({Path(lk.__file__).parent})",
            "source checkout": str(root) if root else "none",
        }
    )
    if os.environ.get("LAPERM_GPUCHECK_BUILD"):  # set by tools/gpu_build_and_check.sh
        info["build"] = os.environ["LAPERM_GPUCHECK_BUILD"]
    if root is not None:
        info["git commit"] = (
            _command_output(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root)
            or "unknown"
        )
    if _extension.is_loaded():
        info["compiled backends"] = ", ".join(torch.ops.laperm.compiled_backends())
    else:
        info["compiled backends"] = f"none: {_extension.load_error()}"
    info["available backends"] = ", ".join(lk.available_backends()) or "none"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info["gpus"] = (
            f"{torch.cuda.device_count()} visible, using cuda:{torch.cuda.current_device()}"
        )
        info["compute capability"] = f"{props.major}.{props.minor} (sm_{props.major}{props.minor})"
        info["GPU memory"] = (
            f"{props.total_memory / 2**30:.1f} GiB, {props.multi_processor_count} SMs"
        )
        driver = _command_output(
            [
                "nvidia-smi",
                "--query-gpu=driver_version",
                "--format=csv,noheader",
                "-i",
                str(torch.cuda.current_device()),
            ]
        )
        info["driver"] = driver.splitlines()[0] if driver else "unknown (no nvidia-smi)"
        info["torch CUDA arch list"] = " ".join(torch.cuda.get_arch_list())
    else:
        info["gpu"] = "none: " + (
            f"torch {torch.__version__} is a CPU build"
            if torch.version.cuda is None
            else "torch.cuda.is_available() is False"
        )
    return info


# --- the report -----------------------------------------------------------------------


def verdict(checks: List[Check]) -> str:
    return FAIL if any(c.status == FAIL for c in checks) else PASS


def tally(checks: List[Check]) -> str:
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
    elif check.name in ("gpu-tests", "sanitizer") and "command" in d:
        lines += [f"`{d['command']}` in `{d['cwd']}`; log `{d['log']}`, JUnit `{d['junit']}`."]
        lines += [""] + [f"- FAILED {f}" for f in d.get("failures", [])]
        lines += [f"- skipped {n}x: {reason}" for reason, n in d.get("skip_reasons", {}).items()]
    elif check.name == "launch-plans" and "rows" in d:
        lines += [f"Launches per call, planned on {d['planned_on']}.", ""]
        lines += _table(
            ["preset", "dtype", "cuda", "triton"],
            [[r["preset"], r["dtype"], _count(r["cuda"]), _count(r["triton"])] for r in d["rows"]],
        )
        lines += [
            "",
            "cuda: one launch per size class plus one per large batch (a batch is a "
            "gather, CUB's sort kernels and a scatter); triton: one per block bucket plus "
            "one per batch of long rows (a chunk sort, then one merge pass per "
            "doubling of the sorted runs).",
        ]
    elif check.name == "copy-bandwidth" and "bytes" in d:
        peak = (
            f"{d['peak_gb_per_s']:.0f} GB/s ({d['peak_from']})"
            if d["peak_gb_per_s"]
            else f"unknown: {d['peak_from']}"
        )
        lines += [
            f"- `dst.copy_(src)` of {d['bytes'] >> 20} MiB: median {d['median_s'] * 1e3:.3f}"
            f" ms of 10, {d['copy_gb_per_s']:.0f} GB/s counting bytes read and written",
            f"- theoretical peak: {peak}",
        ]
    elif check.name == "benchmark" and "rows" in d:
        lines += _table(
            [
                "preset",
                "dtype",
                "method",
                "M elem/s",
                "GB/s",
                "of copy",
                "of peak",
                "vs torch",
                "launches",
                "check",
            ],
            [
                [
                    r["preset"],
                    r["dtype"],
                    _method_cell(r),
                    _fmt(r["elements_per_s"], ".1f", 1e-6),
                    _fmt(r["effective_gb_per_s"], ".1f"),
                    _fmt(r["of_copy_bandwidth"], ".1%"),
                    _fmt(r["of_peak_bandwidth"], ".1%"),
                    _fmt(r["speedup_vs_torch"], ".2f", suffix="x"),
                    _count(r["launches"]),
                    r["check"],
                ]
                for r in d["rows"]
            ],
        )
        lines += [
            "",
            "GB/s counts 3 x itemsize per element (read W, read S, write W); "
            '"of copy" is against the copy-bandwidth check, "of peak" against the '
            "theoretical peak; launches as in launch-plans.",
        ]
        lines += [f"- ERROR {e}" for e in d.get("errors", [])]
    elif check.name == "cuda-graph" and "shapes" in d:
        lines += [
            f"- shapes {d['shapes']}; launches {d['launches']} + {d['large_batches']} large batches"
        ]
        if "replay_us" in d:
            lines += [
                f"- a sync: graph replay {d['replay_us']:.1f} us, eager planned call "
                f"{d['eager_us']:.1f} us (CUDA events, mean of 20 back to back)"
            ]
    elif check.name == "laperm-steps" and "steps" in d:
        lines += [
            f"- LaPerm(Adam), sync_period {d['sync_period']}, {d['steps']} steps; "
            f"backends available on this device: {d['available']}"
        ]
    elif check.name == "dispatch" and d.get("decisions"):
        lines += _table(
            ["group", "backend", "source", "candidates"],
            [
                [
                    signature_text(x["signature"]),
                    x["backend"],
                    x["source"],
                    "; ".join(decision_store.Verdict(**c).text() for c in x["candidates"]),
                ]
                for x in d["decisions"]
            ],
        )
    if "traceback" in d:
        lines += ["```", d["traceback"].rstrip(), "```"]
    return lines


def render_markdown(info: Dict[str, str], checks: List[Check], command: str) -> str:
    total = sum(c.seconds for c in checks)
    lines = [
        f"# laperm-kernels GPU check: {verdict(checks)} ({tally(checks)})",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, `{command}`: the "
        f"checks took {total:.1f} s.",
        "",
        "## Machine",
        "",
    ]
    lines += _table(["", ""], [[k, v] for k, v in info.items()])
    lines += ["", "## Checks", ""]
    lines += _table(
        ["check", "status", "seconds", "cap s", "result"],
        [[c.name, c.status, f"{c.seconds:.1f}", _fmt(c.limit_s, "g"), c.summary] for c in checks],
    )
    for c in checks:
        body = _details_md(c)
        if body:
            lines += ["", f"## {c.name}: {c.status}", "", *body]
    return "\n".join(lines) + "\n"


def write_report(outdir: Path, info: Dict[str, str], checks: List[Check], command: str) -> None:
    report = {
        "verdict": verdict(checks),
        "command": command,
        "machine": info,
        "checks": [asdict(c) for c in checks],
    }
    (outdir / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (outdir / "report.md").write_text(render_markdown(info, checks, command))
