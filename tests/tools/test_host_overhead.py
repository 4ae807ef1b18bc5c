"""The benchmark's host-overhead line (bench/host_overhead.py): every figure is
there and is a time, the sync's cost is the difference of the two steps, and the bench
prints the line and writes the figures to its JSON. (How large they are is for the
benchmark to show, not for a test to assert.)"""

from __future__ import annotations

import json

import torch

from bench import host_overhead
from bench.__main__ import main


def test_measure_times_every_part_and_the_line_says_them():
    us = host_overhead.measure(torch.device("cpu"), rounds=2, calls=3)
    assert set(us) == {
        "op",
        "rank_match_many_",
        "inner_step",
        "laperm_step",
        "sync_above_inner_step",
    }
    assert all(v > 0 for k, v in us.items() if k != "sync_above_inner_step")
    assert us["sync_above_inner_step"] == us["laperm_step"] - us["inner_step"]
    text = host_overhead.line(us, torch.device("cpu"))
    for figure in (us["rank_match_many_"], us["op"], us["laperm_step"], us["inner_step"]):
        assert f"{figure:.1f} us" in text


def test_the_benchmark_prints_and_saves_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        host_overhead,
        "measure",
        lambda device: {
            "op": 1.0,
            "rank_match_many_": 2.0,
            "inner_step": 3.0,
            "laperm_step": 7.5,
            "sync_above_inner_step": 4.5,
        },
    )
    out = tmp_path / "r.json"
    args = "--preset lenet-300-100 --repeat 1 --threads 1 --backends cpu --json".split()
    assert main([*args, str(out)]) == 0
    assert "a sync costs 4.5 us above the inner step" in capsys.readouterr().out
    assert json.loads(out.read_text())["host_overhead_us"]["laperm_step"] == 7.5
