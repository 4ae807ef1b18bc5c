"""The benchmark's own bit-for-bit check: a method that gives a wrong result is reported
as a mismatch, never as a number, and the command exits non-zero."""

from __future__ import annotations

import types

import pytest
import torch

from bench.__main__ import main
from bench.results import run_benchmark
from laperm_kernels.ops import backends


def _off_by_one_row(ws, ss):
    backends.BACKENDS["torch"].run(ws, ss)
    ws[-1][0] = ws[-1][0].roll(1)  # right values, one row rotated


@pytest.fixture
def wrong_backend(monkeypatch):
    module = types.SimpleNamespace(
        name="wrong",
        run=_off_by_one_row,
        is_available=lambda: True,
        unavailable_reason=lambda: "",
        supports=lambda device, dtype: device.type == "cpu",
    )
    monkeypatch.setitem(backends.BACKENDS, "wrong", module)
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ["wrong", *backends.AUTO_ORDER["cpu"]])
    monkeypatch.setenv("LAPERM_AUTOTUNE", "0")  # auto would drop it: keep it for this test


def test_a_wrong_method_is_a_mismatch(wrong_backend):
    results = {
        r.method: r for r in run_benchmark("lenet-300-100", "float32", torch.device("cpu"), 1, 1)
    }
    assert results["wrong"].check == "MISMATCH" and results["wrong"].elements_per_s is None
    assert results["torch"].check == "bit-identical"


def test_the_command_exits_non_zero_on_a_mismatch(wrong_backend, capsys):
    code = main("--preset lenet-300-100 --repeat 1 --threads 1 --backends torch wrong".split())
    assert code == 1
    assert "wrong differs from the reference" in capsys.readouterr().err
