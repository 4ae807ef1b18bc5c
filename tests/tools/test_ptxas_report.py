"""tools/ptxas_report.py: the CI gate on register spills in our CUDA kernels."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import sys

import pytest

_TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "ptxas_report.py"
_spec = importlib.util.spec_from_file_location("ptxas_report", _TOOL)
ptxas_report = importlib.util.module_from_spec(_spec)
sys.modules["ptxas_report"] = ptxas_report  # dataclasses look their module up
_spec.loader.exec_module(ptxas_report)

OURS = "_ZN6laperm4cuda21rank_match_block_rowsINS_11FloatFormatIjLj2139095040ELj2143289344EEELi512ELi16EEEvPKNS0_7RowDescE"
CUB = "_ZN3cub6detail30DeviceSegmentedRadixSortKernelEv"


def _log(name: str, arch: str, regs: int, spill: int = 0, smem: int = 0) -> str:
    used = f"Used {regs} registers, used 1 barriers" + (f", {smem} bytes smem" if smem else "")
    return (
        f"ptxas info    : Compiling entry function '{name}' for '{arch}'\n"
        f"ptxas info    : Function properties for {name}\n"
        f"    {spill} bytes stack frame, {spill} bytes spill stores, {spill} bytes spill loads\n"
        f"ptxas info    : {used}, 360 bytes cmem[0]\n"
    )


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "kernels.log"
    path.write_text(text)
    return str(path)


def test_parses_every_kernel_and_arch():
    records = ptxas_report.parse(
        _log(OURS, "sm_80", 100)
        + _log(OURS, "sm_90", 95)
        + _log(CUB, "sm_90", 80, spill=24, smem=26176)
    )
    assert [(r.arch, r.registers, r.spill_stores, r.ours) for r in records] == [
        ("sm_80", 100, 0, True),
        ("sm_90", 95, 0, True),
        ("sm_90", 80, 24, False),
    ]
    assert records[2].smem == 26176 and records[2].stack == 24


@pytest.mark.skipif(shutil.which("c++filt") is None, reason="needs c++filt")
def test_names_are_demangled_and_formats_named():
    name = ptxas_report.shorten(ptxas_report.demangle([OURS])[OURS])
    assert name == "rank_match_block_rows<float32, 512, 16>"


def test_a_spill_in_our_kernel_fails(tmp_path, capsys):
    assert ptxas_report.main([_write(tmp_path, _log(OURS, "sm_90", 64, spill=8))]) == 1
    assert "spills on sm_90" in capsys.readouterr().err


def test_a_spill_in_a_third_party_kernel_is_reported_only(tmp_path, capsys):
    assert (
        ptxas_report.main(
            [_write(tmp_path, _log(OURS, "sm_90", 64) + _log(CUB, "sm_90", 80, spill=24))]
        )
        == 0
    )
    assert "third-party kernel spills (not failing)" in capsys.readouterr().out


def test_an_empty_log_fails(tmp_path, capsys):
    assert ptxas_report.main([_write(tmp_path, "nvcc: nothing compiled\n")]) == 1
    assert "no 'Compiling entry function' records" in capsys.readouterr().err
