"""Each instruction-set build of the CPU kernel gives the reference's bits.

The kernel is compiled three times (generic, AVX2, AVX-512) and one build is picked once
per process; LAPERM_CPU_ISA=generic|avx2 caps the pick. So each cap needs its own
process: the inputs go to a child through a file, the child rank-matches them with the
C++ backend, and the parent compares its output with the reference.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_bitwise_equal, needs_extension, reference_result, tensor_group

pytestmark = needs_extension

# Mirrors csrc/cpu/isa_dispatch.cpp: the features each build is compiled for.
_ISA_FEATURES = {
    "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"},
    "avx2": {"avx2", "bmi2", "fma"},
}

# Rows down every path (insertion sort; compact words with the tie fix-up and its
# fall-back; wide words, 2 and 3 radix passes), every dtype. Each build has its own SIMD
# code (LAPERM_SIMD_LEVEL: prefix sums, tie scans), so every cap runs every case.
CASES = [
    ((2, 4096), torch.float32, "extreme"),
    ((1, 20000), torch.float32, "normal"),
    ((3, 31), torch.float32, "special"),
    ((5, 1009), torch.bfloat16, "special"),
    ((8, 3, 3, 3), torch.float16, "ties"),
    ((4, 2048), torch.float32, "near_one"),
    ((2, 4096), torch.float64, "near_one"),
    ((3, 300), torch.float16, "random_bits"),
    ((2, 70001), torch.float32, "random_bits"),
    ((70001,), torch.float64, "special"),
    ((1, 65536), torch.bfloat16, "random_bits"),
    ((64, 300), torch.float32, "pruned"),
    # Compact rows at each radix digit width (8 to 11 bits: 256 to 2,048 counters a pass,
    # prefix-summed 16 or 4 at a time), whose last pass scatters S and whose fix-up
    # rescatters the reordered tie runs.
    ((3, 33), torch.float64, "ties"),
    ((2, 511), torch.float32, "normal"),
    ((2, 512), torch.float32, "near_one"),
    ((2, 1023), torch.float64, "normal"),
    ((2, 2047), torch.float32, "two_valued"),
    ((2, 2048), torch.float32, "normal"),
    ((2, 4608), torch.float32, "normal"),
    ((3, 1000), torch.float32, "constant"),  # every coordinate equal: no pass runs
    ((3, 16384), torch.float32, "extreme"),  # long tie runs: back to the wide path
]

_CHILD = """
import sys, torch, laperm_kernels as lk
ws, ss = torch.load(sys.argv[1])
lk.rank_match_many_(ws, ss, backend="cpu")
torch.save({"isa": torch.ops.laperm.cpu_kernel_isa(), "weights": ws}, sys.argv[2])
"""


def _cpu_flags() -> set:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _expected_isa(cap: "str | None") -> str:
    """The build isa_dispatch.cpp must pick on this CPU under LAPERM_CPU_ISA=cap."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic"
    flags = _cpu_flags()
    allowed = {
        None: ["avx512", "avx2"],
        "avx512": ["avx512", "avx2"],
        "avx2": ["avx2"],
        "generic": [],
    }[cap]
    return next((isa for isa in allowed if _ISA_FEATURES[isa] <= flags), "generic")


@pytest.mark.parametrize("cap", ["generic", "avx2", None], ids=str)
def test_each_isa_build_matches_reference(cap, tmp_path):
    ws, ss = tensor_group(CASES, seed=40)
    torch.save((ws, ss), tmp_path / "in.pt")

    env = {k: v for k, v in os.environ.items() if k != "LAPERM_CPU_ISA"}
    if cap is not None:
        env["LAPERM_CPU_ISA"] = cap
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = torch.load(tmp_path / "out.pt")

    assert result["isa"] == _expected_isa(cap)
    for (shape, dtype, kind), w, s, out in zip(CASES, ws, ss, result["weights"]):
        assert_bitwise_equal(out, reference_result(w, s), f"{result['isa']} {shape} {dtype} {kind}")
