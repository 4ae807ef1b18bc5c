"""bench.gpucheck: the whole command, which without a GPU skips every GPU check
and exits 0, and its pure parts: JUnit parsing, the pytest step on a
stand-in test file, report formatting, and a failing check making the exit code 1."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

import laperm_kernels as lk
from bench.gpucheck import __main__ as cli
from bench.gpucheck import checks as gc
from bench.gpucheck import context, junit, report, speed, steps, suite
from bench.presets import resnet50

GPU_CHECKS = ("backends", "gpu-tests", "copy-bandwidth", "benchmark", "cuda-graph", "laperm-steps")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_end_to_end(tmp_path):
    # Small enough to stay quick on a GPU machine too, where the checks really run.
    cmd = [
        sys.executable,
        "-m",
        "bench.gpucheck",
        str(tmp_path / "out"),
        "--skip-tests",
        "--preset",
        "lenet-300-100",
        "--dtype",
        "float32",
        "--repeat",
        "1",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    markdown = (tmp_path / "out" / "report.md").read_text()
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert report["verdict"] == "PASS" and set(status.values()) <= {"PASS", "SKIPPED"}, status
    assert list(status) == [name for name, _ in gc.CHECKS]
    assert report["machine"]["torch"].startswith(torch.__version__)
    assert "## Machine" in markdown and "| launch-plans | PASS |" in markdown
    if not torch.cuda.is_available():
        for c in report["checks"]:
            if c["name"] in GPU_CHECKS:
                assert c["status"] == "SKIPPED" and "no CUDA device" in c["summary"], c
                assert f"| {c['name']} | SKIPPED | " in markdown


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="6">
<testcase classname="tests.cuda_backend.test_cuda" name="test_ok" time="0.1"/>
<testcase classname="tests.cuda_backend.test_cuda" name="test_ok2" time="0.1"><system-out>x</system-out></testcase>
<testcase classname="tests.cuda_backend.test_cuda" name="test_bad"><failure message="assert 1 == 2&#10;more">tb</failure></testcase>
<testcase classname="tests.cuda_backend.test_cuda" name="test_teardown"><failure message="f"/><error message="e"/></testcase>
<testcase classname="" name="tests.cuda_backend.test_broken"><error message="collection failure"/></testcase>
<testcase classname="tests.triton_backend.test_triton" name="test_a"><skipped type="pytest.skip" message="needs a GPU"/></testcase>
<testcase classname="tests.triton_backend.test_triton" name="test_b"><skipped type="pytest.skip" message="needs a GPU"/></testcase>
</testsuite></testsuites>"""


def test_parse_junit(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(JUNIT)
    got = junit.parse_junit(path)
    assert {k: got[k] for k in ("passed", "failed", "errors", "skipped")} == {
        "passed": 2,
        "failed": 2,
        "errors": 1,
        "skipped": 2,
    }
    assert got["failures"][0] == "tests.cuda_backend.test_cuda::test_bad: assert 1 == 2"
    assert got["failures"][2] == "tests.cuda_backend.test_broken: collection failure"
    assert got["skip_reasons"] == {"needs a GPU": 2}
    # a bare <testsuite> root (older pytest, other tools)
    path.write_text('<testsuite><testcase classname="a" name="b"/></testsuite>')
    assert junit.parse_junit(path)["passed"] == 1


def test_parse_junit_missing_or_corrupt(tmp_path):
    assert junit.parse_junit(tmp_path / "absent.xml") is None
    (tmp_path / "bad.xml").write_text("<testsuites><testcase")  # pytest killed mid-write
    assert junit.parse_junit(tmp_path / "bad.xml") is None


def _context(tmp_path, **kw):
    return context.Context(
        tmp_path, repeat=1, presets=["lenet-300-100"], dtypes=["float32"], run_tests=True, **kw
    )


def test_gpu_tests_step_on_a_stand_in_file(tmp_path, monkeypatch):
    # The pytest subprocess, JUnit file and log, pointed at a tiny test file of our own.
    (tmp_path / "tests" / "cuda").mkdir(parents=True)
    (tmp_path / "tests" / "cuda" / "test_x.py").write_text(
        "import pytest\n"
        "def test_pass(): pass\n"
        "def test_fail(): assert False, 'wrong'\n"
        "@pytest.mark.skip(reason='not here')\n"
        "def test_skip(): pass\n"
        "def test_interpreter(): assert False  # deselected\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(context, "need_gpu", lambda: torch.device("cpu"))
    monkeypatch.setattr(context, "source_checkout", lambda: tmp_path)
    monkeypatch.setattr(
        suite,
        "GPU_TEST_FILES",
        ("tests/cuda_backend/test_x.py", "tests/cuda_backend/test_absent.py"),
    )
    check = gc.run_check("gpu-tests", suite.check_gpu_tests, _context(out))
    assert check.status == "FAIL", check
    assert check.summary.startswith("1 passed, 1 failed, 0 errors, 1 skipped (pytest exit 1)")
    assert check.details["skip_reasons"] == {"not here": 1}
    assert "test_fail" in (out / "gpu-tests.log").read_text()


def test_gpu_tests_skip_without_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "need_gpu", lambda: torch.device("cpu"))
    monkeypatch.setattr(context, "source_checkout", lambda: None)
    check = gc.run_check("gpu-tests", suite.check_gpu_tests, _context(tmp_path))
    assert (check.status, check.summary) == (
        "SKIPPED",
        "no source checkout (no tests/ beside laperm_kernels/)",
    )


def test_a_failing_check_fails_the_run(tmp_path, monkeypatch):
    def boom(ctx, details):
        raise RuntimeError("device lost")

    def skip(ctx, details):
        raise context.Skip("not here")

    monkeypatch.setenv("LAPERM_CACHE_DIR", str(tmp_path / "cache"))  # main() sets it
    monkeypatch.setattr(
        gc,
        "CHECKS",
        [
            ("fine", lambda ctx, d: (True, "ok")),
            ("wrong", lambda ctx, d: (False, "3 differ")),
            ("boom", boom),
            ("skip", skip),
        ],
    )
    assert cli.main([str(tmp_path)]) == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "FAIL"
    assert [(c["status"], c["summary"]) for c in report["checks"]] == [
        ("PASS", "ok"),
        ("FAIL", "3 differ"),
        ("FAIL", "RuntimeError: device lost"),
        ("SKIPPED", "not here"),
    ]
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# laperm-kernels GPU check: FAIL (1 PASS, 2 FAIL, 1 SKIPPED)")
    assert "RuntimeError: device lost" in markdown.split("## boom: FAIL")[1]  # the traceback


def test_skipped_checks_do_not_fail_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPERM_CACHE_DIR", str(tmp_path / "cache"))

    def skip(ctx, details):
        raise context.Skip("no CUDA device")

    monkeypatch.setattr(gc, "CHECKS", [("fine", lambda ctx, d: (True, "ok")), ("skip", skip)])
    assert cli.main([str(tmp_path)]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["verdict"] == "PASS"


def test_report_tables_with_missing_values():
    row = {
        "preset": "resnet50",
        "dtype": "float32",
        "method": "auto",
        "backend": None,
        "elements_per_s": None,
        "effective_gb_per_s": None,
        "of_copy_bandwidth": None,
        "of_peak_bandwidth": None,
        "speedup_vs_torch": None,
        "launches": None,
        "check": "MISMATCH",
        "first_call_s": 0.25,
    }
    fast = {
        **row,
        "method": "cuda",
        "backend": "cuda",
        "elements_per_s": 3.3e10,
        "effective_gb_per_s": 396.0,
        "of_copy_bandwidth": 0.1,
        "of_peak_bandwidth": None,
        "speedup_vs_torch": 2.0,
        "launches": 7,
        "check": "bit-identical",
    }
    decision = {
        "signature": {
            "device": "cuda:0",
            "dtype": "float32",
            "shapes": [list(s) for s in resnet50()],
        },
        "backend": "cuda",
        "source": "trial",
        "candidates": [
            {"backend": "cuda", "verdict": "bit-identical", "seconds": 8e-4, "detail": ""},
            {"backend": "triton", "verdict": "error", "seconds": None, "detail": "out of | memory"},
        ],
    }
    checks = [
        context.Check(
            "benchmark",
            "FAIL",
            "1 mismatch",
            1.0,
            {"rows": [row, fast], "errors": ["mlp float64: ValueError: x"]},
        ),
        context.Check("dispatch", "FAIL", "", 0.0, {"decisions": [decision]}),
    ]
    markdown = report.render_markdown({"GPU": "none"}, checks, "python -m x")
    assert (
        "| resnet50 | float32 | auto (first call 250.0 ms) | - | - | - | - | - | - | MISMATCH |"
    ) in markdown
    assert "| resnet50 | float32 | cuda | 33000.0 | 396.0 | 10.0% | - | 2.00x | 7 |" in markdown
    assert "- ERROR mlp float64: ValueError: x" in markdown
    assert (
        "| resnet50 float32 on cuda:0 | cuda | trial | cuda bit-identical 0.800 ms; "
        "triton error: out of \\| memory |"
    ) in markdown


def test_dispatch_check_fails_on_a_mismatching_candidate(monkeypatch):
    decision = {
        "signature": {"device": "cuda:0", "dtype": "float16", "shapes": [[4, 5]]},
        "backend": "cuda",
        "source": "trial",
        "candidates": [
            {
                "backend": "triton",
                "verdict": "mismatch",
                "seconds": None,
                "detail": "tensor 0 row 1",
            }
        ],
    }
    monkeypatch.setattr(lk, "dispatch_report", lambda: [decision])
    passed, summary = steps.check_dispatch(None, {})
    assert not passed
    assert summary == "triton on 1 tensors float16 on cuda:0: mismatch tensor 0 row 1"


def test_theoretical_peak():
    h100 = types.SimpleNamespace(memory_clock_rate=2_619_000, memory_bus_width=5120)  # kHz, bits
    peak, how = speed.theoretical_peak(h100)
    assert round(peak) == 3352 and how == "2 x 2619 MHz x 5120-bit bus"
    peak, how = speed.theoretical_peak(types.SimpleNamespace(name="old torch"))
    assert peak is None and "does not expose memory_clock_rate" in how


@pytest.mark.skipif(not lk._extension.is_loaded(), reason="needs the C++ extension")
def test_launch_counts_of_resnet50_as_documented():
    counts = speed.launch_counts(resnet50(), torch.float32, torch.device("cpu"))
    assert counts["cuda"] == 7  # docs/cuda.md: "ResNet-50 ... 7 launches"
    if importlib.util.find_spec("triton") is not None:
        assert counts["triton"] == 8  # docs/triton.md: "ResNet-50 ... is 8 launches"


def test_gpu_checks_run_their_logic_on_the_cpu(tmp_path, monkeypatch):
    # The benchmark, LaPerm and dispatch checks with the CPU standing in for the GPU: the
    # real bench Results, auto's choice and the report tables, end to end.
    monkeypatch.setenv("LAPERM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(context, "need_gpu", lambda: torch.device("cpu"))
    ctx = _context(tmp_path)
    checks = [
        gc.run_check(name, fn, ctx)
        for name, fn in gc.CHECKS
        if name in ("launch-plans", "benchmark", "laperm-steps", "dispatch")
    ]
    assert [c.status for c in checks] == ["PASS"] * 4, [(c.name, c.summary) for c in checks]
    rows = {r["method"]: r for r in checks[1].details["rows"]}
    assert {"torch", "auto"} <= set(rows) and rows["torch"]["check"] == "bit-identical"
    assert rows["auto"]["backend"] in lk.available_backends("cpu")
    assert "lenet-300-100 float32 on cpu" in checks[3].summary  # auto's trial, reported
    markdown = report.render_markdown({}, checks, "x")
    assert "| lenet-300-100 | float32 | auto (" in markdown


# --- --quick, time caps, --time-budget -----------------------------------------------------


def test_quick_end_to_end(tmp_path):
    # Without a GPU the GPU checks skip; --quick's selection shows in what was planned.
    cmd = [
        sys.executable,
        "-m",
        "bench.gpucheck",
        str(tmp_path),
        "--quick",
        "--skip-tests",
        "--repeat",
        "1",
        "--time-budget",
        "300",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == [name for name, _ in gc.CHECKS]
    for name in gc.QUICK_SKIPS:
        assert (checks[name]["status"], checks[name]["summary"]) == ("SKIPPED", "--quick")
    assert checks["launch-plans"]["status"] == "PASS"
    assert [(r["preset"], r["dtype"]) for r in checks["launch-plans"]["details"]["rows"]] == [
        ("resnet50", "float32")
    ]
    for c in checks.values():  # every cap within the budget, and what the quick run uses
        assert 0 < c["limit_s"] <= min(300, gc.check_limit(c["name"], quick=True)), c
    assert "| cap s |" in (tmp_path / "report.md").read_text()


def test_quick_defaults_and_explicit_choices():
    args = cli.parse_args(["out", "--quick"])
    assert (args.preset, args.dtype, args.quick) == (["resnet50"], ["float32"], True)
    args = cli.parse_args(["out", "--quick", "--preset", "conv4", "--dtype", "float16"])
    assert (args.preset, args.dtype) == (["conv4"], ["float16"])
    args = cli.parse_args(["out"])
    assert args.preset == sorted(cli.PRESETS) and args.dtype == list(speed.DTYPES)
    with pytest.raises(SystemExit):
        cli.parse_args(["out", "--time-budget", "0"])


def test_quick_runs_the_backends_test_files_only(tmp_path, monkeypatch):
    (tmp_path / "tests").mkdir()
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / "tests" / name).write_text("def test_ok(): pass\n")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(context, "need_gpu", lambda: torch.device("cpu"))
    monkeypatch.setattr(context, "source_checkout", lambda: tmp_path)
    monkeypatch.setattr(suite, "GPU_TEST_FILES", ("tests/test_a.py", "tests/test_b.py"))
    monkeypatch.setattr(suite, "QUICK_TEST_FILES", ("tests/test_a.py",))
    ctx = _context(out, quick=True)
    check = gc.run_check("gpu-tests", suite.check_gpu_tests, ctx)
    assert check.status == "PASS", check
    assert check.details["command"].endswith(
        f"-k '{suite.QUICK_DESELECT}' --junitxml={out / 'gpu-tests.xml'} tests/test_a.py"
    )
    assert check.summary.startswith("1 passed, 0 failed")


def test_quick_deselects_only_triton_cases_other_cases_cover():
    # Which GPU cases --quick keeps (collected without running, here or on a GPU)
    files = [os.path.join(ROOT, f) for f in suite.QUICK_TEST_FILES]
    ids = {}
    for name, expr in (("full", suite.DESELECT), ("quick", suite.QUICK_DESELECT)):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "--co",
                "-p",
                "no:cacheprovider",
                "-k",
                expr,
                *files,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        ids[name] = {line.split("::", 1)[1] for line in proc.stdout.splitlines() if "::" in line}
    left_out = ids["full"] - ids["quick"]
    assert ids["quick"] < ids["full"] and all(t.startswith("test_gpu_bitwise[") for t in left_out)
    kept = {t for t in ids["quick"] if t.startswith("test_gpu_bitwise[")}
    for dtype in ("float32", "float16", "bfloat16"):  # every tile and the long rows, each dtype
        for preset in ("buckets", "long-rows"):
            assert f"test_gpu_bitwise[normal-{preset}-torch.{dtype}]" in kept
    assert "test_gpu_bitwise[normal-resnet50-torch.float32]" in kept
    assert not any("mlp" in t for t in kept)


def test_a_check_past_its_cap_fails_and_the_next_runs(tmp_path, monkeypatch):
    def sleeps(ctx, details):
        time.sleep(30)
        return True, "slept"

    def swallows(ctx, details):  # a check's own `except Exception` does not hide the cap
        try:
            while True:
                time.sleep(0.01)
        except Exception:
            return True, "swallowed"

    monkeypatch.setenv("LAPERM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(
        gc,
        "CHECKS",
        [("sleeps", sleeps), ("swallows", swallows), ("fine", lambda ctx, d: (True, "ok"))],
    )
    monkeypatch.setattr(context, "CHECK_LIMITS_S", {"sleeps": (0.3, 0.3), "swallows": (0.3, 0.3)})
    start = time.monotonic()
    assert cli.main([str(tmp_path)]) == 1
    assert time.monotonic() - start < 10
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left behind
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(c["status"], c["summary"]) for c in report["checks"]] == [
        ("FAIL", "sleeps reached its time cap of 0.3 s"),
        ("FAIL", "swallows reached its time cap of 0.3 s"),
        ("PASS", "ok"),
    ]


def test_time_budget_cuts_the_caps(tmp_path, monkeypatch):
    def sleeps(ctx, details):
        time.sleep(30)
        return True, "slept"

    monkeypatch.setenv("LAPERM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(gc, "CHECKS", [("first", sleeps), ("second", sleeps)])
    start = time.monotonic()
    assert cli.main([str(tmp_path), "--time-budget", "0.5"]) == 1
    assert time.monotonic() - start < 10
    report = json.loads((tmp_path / "report.json").read_text())
    first, second = report["checks"]
    assert first["status"] == "FAIL" and "time cap of 0.5" in first["summary"]
    assert second == {
        **second,
        "status": "FAIL",
        "limit_s": 0.0,
        "summary": "second did not start: no time left of the --time-budget",
    }


def test_gpu_tests_past_the_cap_fail_with_the_log(tmp_path, monkeypatch):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_slow.py").write_text(
        "import time\ndef test_slow(): time.sleep(60)\n"
    )
    monkeypatch.setattr(context, "need_gpu", lambda: torch.device("cpu"))
    monkeypatch.setattr(context, "source_checkout", lambda: tmp_path)
    monkeypatch.setattr(suite, "GPU_TEST_FILES", ("tests/test_slow.py",))
    monkeypatch.setattr(context, "CHECK_LIMITS_S", {"gpu-tests": (8, 8)})
    start = time.monotonic()
    check = gc.run_check("gpu-tests", suite.check_gpu_tests, _context(tmp_path))
    assert time.monotonic() - start < 20
    assert (check.status, check.summary) == (
        "FAIL",
        "pytest stopped after 3 s (log: gpu-tests.log)",
    )


def test_the_script_takes_quick_and_refuses_unknown_options(tmp_path):
    script = os.path.join(ROOT, "tools", "gpu_build_and_check.sh")
    proc = subprocess.run(["bash", script, "--bogus"], capture_output=True, text=True)
    assert (
        proc.returncode == 2
        and "usage: bash tools/gpu_build_and_check.sh [--quick] [OUTDIR]" in proc.stderr
    )
    if torch.cuda.is_available():
        return
    # parsed, then stopped at the first requirement this machine lacks, before building
    env = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    proc = subprocess.run(
        ["bash", script, "--quick", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**env, "PYTHON": sys.executable},
    )
    want = (
        "has no CUDA build of torch"
        if torch.version.cuda is None
        else "cannot read the GPU's compute capability"
    )
    assert proc.returncode == 1 and want in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "build.log").exists()


def test_the_sanitizer_check_wraps_the_stream_test_in_the_tool(tmp_path, monkeypatch):
    # A stand-in compute-sanitizer that records its options and runs what follows them.
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_streams.py").write_text("def test_ok(): pass\n")
    tool_dir = tmp_path / "bin"
    tool_dir.mkdir()
    tool = tool_dir / "compute-sanitizer"
    tool.write_text(f'#!/bin/sh\necho "$1 $2 $3 $4" > {tmp_path}/tool-args\nshift 4\nexec "$@"\n')
    tool.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(context, "need_gpu", lambda: torch.device("cpu"))
    monkeypatch.setattr(context, "source_checkout", lambda: tmp_path)
    monkeypatch.setattr(suite, "SANITIZED_TEST_FILE", "tests/test_streams.py")
    monkeypatch.setenv("PATH", f"{tool_dir}:{os.environ['PATH']}")
    check = gc.run_check("sanitizer", suite.check_sanitizer, _context(out))
    assert check.status == "PASS", check
    assert (tmp_path / "tool-args").read_text().split() == [
        "--tool",
        "memcheck",
        "--error-exitcode",
        "1",
    ]
    assert check.summary.startswith("1 passed, 0 failed") and (out / "sanitizer.log").exists()


def test_the_sanitizer_check_skips_without_the_tool(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "need_gpu", lambda: torch.device("cpu"))
    monkeypatch.setattr(context, "source_checkout", lambda: tmp_path)
    monkeypatch.setattr(suite.shutil, "which", lambda *a, **k: None)
    check = gc.run_check("sanitizer", suite.check_sanitizer, _context(tmp_path))
    assert check.status == "SKIPPED" and "compute-sanitizer not found" in check.summary
