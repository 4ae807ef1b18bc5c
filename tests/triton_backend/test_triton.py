"""The "triton" backend, bit for bit against the reference.

Three parts:

* Interpreter cases: the real kernels on CPU tensors under ``TRITON_INTERPRET=1``. The
  variable must be set before triton is imported (``@triton.jit`` reads it), so the cases
  run in worker subprocesses (this file run as a script with ``--worker``; two where there
  are two cores), which report each case's result as JSON; each case is then one pytest
  test. Shapes are small (the
  interpreter runs tl.sort's network in Python) but reach every code path: rows shorter
  than a block, exactly one block, several rows per program, long rows (``max_block``/
  ``chunk`` made small) of 2, 3, 4, 5, 7, 8, 13 and 17 chunks, so that every shape of merge
  pass appears (odd run counts, partial last chunks, rows of different pass counts in one
  batch), several scratch batches, a failed scratch allocation (nothing modified), the
  plan cache, every supported dtype, ties, NaN payloads, +-0, +-inf, subnormals.
* GPU cases: large shapes (ResNet-50, the 4096x11008 MLP, rows of up to 2^22 + 1
  elements) when ``torch.cuda.is_available()``; skipped otherwise.
* Without triton: ``import laperm_kernels`` works and ``backend="triton"`` says how to
  install it (runs whether or not triton is installed).

tests/triton_backend/test_triton_limits.py checks the size limits and the order of allocation,
compilation and launches without running a kernel.

Everything needing triton skips cleanly when it is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (pip install triton)"
)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))  # the repository root, for ``tests.helpers``


# --- interpreter cases (run by the worker subprocess) ----------------------------------

INTERPRETER_DTYPES = ("float32", "float16", "bfloat16")

# Rows <= 64 (one bucket, 32 rows per program), 65..128 (exactly 64 and 128 included):
# many kinds of data in one rank_match_many_ call, as a model's layers would go.
BLOCK_TENSORS = [
    ((40, 1), "normal"),
    ((3, 7), "special"),
    ((5, 64), "ties"),
    ((2, 65), "signed_zeros"),
    ((4, 100), "random_bits"),
    ((3, 128), "special"),
    ((2, 3, 5), "near_one"),
    ((3, 20), "extreme"),
    ((2, 50), "constant"),
    ((2, 30), "two_valued"),
    ((2, 40), "sorted"),
    ((2, 40), "reversed"),
    ((2, 40), "pruned"),
    ((9,), "special"),
    ((0, 5), "normal"),
    ((3, 0), "normal"),
]

# With max_block=32 and chunk=16: rows up to 32 in one block, longer rows merge-sorted in
# chunks of 16: 3 chunks exactly (48), 4 (64), 7 (100) and 13 (200), partial last chunks,
# a 1-element tail (33), every data kind.
CHUNKED_TENSORS = [
    ((2, 48), "special"),
    ((1, 200), "ties"),
    ((3, 33), "random_bits"),
    ((2, 37), "signed_zeros"),
    ((2, 32), "special"),
    ((2, 64), "extreme"),
    ((1, 100), "near_one"),
]

# With max_block=8 and chunk=8: rows of 2 (13: a short last chunk; 16), 3 (24), 5 (37),
# 8 (64) and 17 (129, a 1-element tail) chunks: pairs of full runs, a short last run, a
# lone odd run carried through one pass (3 chunks), two (5) or four (17), and rows of 1,
# 2, 3 and 5 passes in one batch (later passes launch a prefix of its rows, longest first).
MERGE_TENSORS = [
    ((2, 5), "special"),
    ((3, 13), "ties"),
    ((2, 16), "special"),
    ((2, 24), "signed_zeros"),
    ((2, 37), "special"),
    ((1, 64), "random_bits"),
    ((1, 129), "ties"),
]


def _check(tensors, dtype, seed, run):
    """Makes W/S for ``tensors``, runs ``run(ws, ss)`` and compares with the reference."""
    from tests.helpers import assert_bitwise_equal, reference_result, tensor_group

    ws, ss = tensor_group([(shape, dtype, kind) for shape, kind in tensors], seed=seed)
    expected = [reference_result(w, s) for w, s in zip(ws, ss)]
    out = [w.clone() for w in ws]
    run(out, ss)
    for (shape, kind), o, e in zip(tensors, out, expected):
        assert_bitwise_equal(o, e, f"{dtype} {kind} {shape}")
    return ws, ss, out, expected


def case_block(dtype):
    import laperm_kernels as lk

    _check(BLOCK_TENSORS, dtype, 1, lambda ws, ss: lk.rank_match_many_(ws, ss, backend="triton"))


def case_chunked(dtype):
    from laperm_kernels.ops.backends.triton import backend as tb

    _check(CHUNKED_TENSORS, dtype, 2, lambda ws, ss: tb.run_rows(ws, ss, max_block=32, chunk=16))


def case_merge_passes():
    from laperm_kernels.ops.backends.triton import backend as tb

    _check(
        MERGE_TENSORS, torch.float32, 6, lambda ws, ss: tb.run_rows(ws, ss, max_block=8, chunk=8)
    )
    # Rows of 2 chunks only: one pass, which scatters straight from the sorted chunks, and
    # one scratch buffer (segments of 16 keys: 3 x 16).
    tensors = [((2, 16), "near_one"), ((1, 11), "special")]
    ws, ss, out, _ = _check(
        tensors, torch.bfloat16, 7, lambda ws, ss: tb.run_rows(ws, ss, max_block=8, chunk=8)
    )
    assert tb._plan(tb._kernels(), out, ss, 8, 8).scratch_keys == 48


def case_scratch_batches():
    # Scratch of 144 keys (segments of 48 and 208): batches [200] (a row longer than the
    # cap gets a batch of its own), [48, 48, 33] (rows of two tensors), [33, 33] (a
    # tensor's rows split across batches); each batch is sort + merge passes.
    from laperm_kernels.ops.backends.triton import backend as tb

    cap = tb.SCRATCH_KEYS
    tb.SCRATCH_KEYS = 144
    try:
        _check(
            CHUNKED_TENSORS[:3],
            torch.float32,
            3,
            lambda ws, ss: tb.run_rows(ws, ss, max_block=32, chunk=16),
        )
    finally:
        tb.SCRATCH_KEYS = cap


def case_scratch_oom():
    # Groups of block rows and long rows whose scratch allocation fails: OutOfMemoryError
    # saying what was needed, and every weight bit for bit unchanged (a call launches its
    # block kernels first). Through the public API with the shipped configuration (rows of
    # 8,193 are 3 chunks of 4,096; nothing runs), then with small chunks, where the same
    # call then runs for real.
    import laperm_kernels as lk
    from laperm_kernels.ops.backends.triton import backend as tb
    from tests.helpers import assert_bitwise_equal, reference_result, tensor_group

    def no_memory(keys, device):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    def fails(tensors, run, needed):
        ws, ss = tensor_group([(shape, torch.float16, kind) for shape, kind in tensors], seed=8)
        out = [w.clone() for w in ws]
        allocate, tb._empty_scratch = tb._empty_scratch, no_memory
        try:
            run(out, ss)
        except torch.OutOfMemoryError as e:
            for part in (needed, "Nothing was modified", "(injected)"):
                assert part in str(e), str(e)
        else:
            raise AssertionError("the injected allocation failure did not raise")
        finally:
            tb._empty_scratch = allocate
        for (shape, kind), o, w in zip(tensors, out, ws):
            assert_bitwise_equal(o, w, f"after the failed call: {kind} {shape}")
        return ws, ss, out

    fails(
        [((3, 20), "special"), ((2, 8193), "ties"), ((1, 60), "signed_zeros")],
        lambda ws, ss: lk.rank_match_many_(ws, ss, backend="triton"),
        "256.5 KiB of scratch on cpu for 2 row(s) longer than 8192",
    )
    tensors = [((3, 20), "special"), ((2, 40), "ties"), ((1, 100), "signed_zeros")]
    small = lambda ws, ss: tb.run_rows(ws, ss, max_block=32, chunk=16)  # noqa: E731
    ws, ss, out = fails(tensors, small, "3.2 KiB of scratch on cpu for 3 row(s)")
    small(out, ss)
    for (shape, kind), o, w, s in zip(tensors, out, ws, ss):
        assert_bitwise_equal(o, reference_result(w, s), f"{kind} {shape}")


def case_bigger_tiles():
    # Buckets 512 (4 rows per program) and 1024 (2 rows per program), one row each short.
    import laperm_kernels as lk

    _check(
        [((5, 300), "special"), ((3, 1024), "ties")],
        torch.float32,
        4,
        lambda ws, ss: lk.rank_match_many_(ws, ss, backend="triton"),
    )


def case_single_tensor_api_and_cache():
    # rank_match_ on one tensor; then again on the same tensors (same addresses: the cached
    # row tables are reused) after restoring W in place.
    import laperm_kernels as lk
    from laperm_kernels.ops.backends.triton import backend as tb
    from tests.helpers import assert_bitwise_equal

    ws, ss, out, expected = _check(
        [((6, 70), "special")],
        torch.bfloat16,
        5,
        lambda ws, ss: lk.rank_match_(ws[0], ss[0], backend="triton"),
    )
    cached = len(tb._plans)
    version = out[0]._version
    out[0].copy_(ws[0])
    lk.rank_match_(out[0], ss[0], backend="triton")
    assert len(tb._plans) == cached, "the second call should reuse the cached plan"
    assert out[0]._version > version + 1, "the kernel write must bump the version counter"
    assert_bitwise_equal(out[0], expected[0], "cached plan")


def case_dispatch():
    # float64 is not supported: explicit "triton" says so; "auto" on CUDA tries triton
    # right after the CUDA C++ kernels.
    import laperm_kernels as lk
    from laperm_kernels.ops import backends

    w = torch.randn(2, 8, dtype=torch.float64)
    try:
        lk.rank_match_(w, w.clone().sort(1).values, backend="triton")
    except ValueError as e:
        assert "does not support torch.float64" in str(e), str(e)
    else:
        raise AssertionError("float64 should be refused by the triton backend")
    assert backends.AUTO_ORDER["cuda"][:2] == ["cuda", "triton"]
    assert "triton" in lk.available_backends()


INTERPRETER_CASES = {
    **{f"block-{d}": (case_block, d) for d in INTERPRETER_DTYPES},
    **{f"chunked-{d}": (case_chunked, d) for d in INTERPRETER_DTYPES},
    "merge-passes": (case_merge_passes,),
    "scratch-batches": (case_scratch_batches,),
    "scratch-oom": (case_scratch_oom,),
    "bigger-tiles": (case_bigger_tiles,),
    "single-tensor-api-and-cache": (case_single_tensor_api_and_cache,),
    "dispatch": (case_dispatch,),
}


def _worker(names) -> None:
    """Runs interpreter cases in this process (TRITON_INTERPRET=1 already set); prints
    one JSON object {case: "ok" or the error}."""
    import time
    import traceback

    assert os.environ.get("TRITON_INTERPRET") == "1"
    results = {}
    for name in names:
        fn, *args = INTERPRETER_CASES[name]
        args = [getattr(torch, a) if isinstance(a, str) else a for a in args]
        start = time.perf_counter()
        try:
            fn(*args)
            results[name] = "ok"
        except BaseException:  # reported to the parent test, which fails with it
            results[name] = traceback.format_exc()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps(results))


@pytest.fixture(scope="module")
def interpreter_results():
    # The cases take about a minute in all, evenly spread: one worker a core (at most
    # two), the cases dealt out alternately, all running while this process waits.
    env = dict(os.environ, TRITON_INTERPRET="1")
    names = list(INTERPRETER_CASES)
    workers = max(1, min(2, len(os.sched_getaffinity(0))))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", *names[k::workers]],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(workers)
    ]
    results = {}
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=1200)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("interpreter worker timed out after 1200 s")
        if proc.returncode != 0 or not out.strip():
            pytest.fail(f"interpreter worker failed (rc {proc.returncode}):\n{err[-4000:]}")
        results.update(json.loads(out.strip().splitlines()[-1]))
    return results


@needs_triton
@pytest.mark.parametrize("case", list(INTERPRETER_CASES))
def test_interpreter(case, interpreter_results):
    result = interpreter_results[case]
    assert result == "ok", result


# --- without triton ---------------------------------------------------------------------


def test_without_triton_import_works_and_error_says_how_to_install():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail
        "import torch, laperm_kernels as lk\n"
        "assert 'triton' not in lk.available_backends()\n"
        "w = torch.randn(2, 3)\n"
        "assert lk.rank_match_(w.clone(), w.sort(1).values) is not None\n"
        "try:\n"
        "    lk.rank_match_(w, w.sort(1).values, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    assert 'pip install triton' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('backend=triton without triton did not raise')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


# --- GPU cases --------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(
    not (
        HAS_TRITON and torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
    ),
    reason="needs triton and a CUDA device",
)

GPU_SHAPES = {
    "resnet50": None,  # bench.presets
    "mlp-4096x11008": None,
    "buckets": [
        (1000, 1),
        (300, 63),
        (300, 64),
        (300, 65),
        (100, 1024),
        (64, 4096),
        (16, 8192),
        (8, 8193),
        (8, 16384),
    ],
    "long-rows": [(4, 16385), (4, 65536), (2, 100_000), (3, 20_000), (1, (1 << 22) + 1)],
}


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("preset", list(GPU_SHAPES))
@pytest.mark.parametrize("kind", ["normal", "special", "ties"])
def test_gpu_bitwise(preset, dtype, kind):
    import laperm_kernels as lk
    from bench.presets import PRESETS
    from tests.helpers import assert_bitwise_equal, reference_result, tensor_group

    shapes = GPU_SHAPES[preset] or PRESETS[preset]
    ws, ss = tensor_group([(s, dtype) for s in shapes], kind, seed=7)
    # the reference on CPU copies: CUDA's float sort misorders NaNs (the reference's
    # integer keys avoid it, but the oracle of a GPU test should not depend on that)
    expected = [reference_result(w, s) for w, s in zip(ws, ss)]
    ws, ss = [w.cuda() for w in ws], [s.cuda() for s in ss]
    out = [w.clone() for w in ws]
    assert lk.ops.rank_match_groups_(out, ss, backend="triton").used[0][2] == "triton"
    for shape, o, e in zip(shapes, out, expected):
        assert_bitwise_equal(o.cpu(), e, f"{preset} {shape}")
    auto = [w.clone() for w in ws]
    [(_, _, chosen)] = lk.ops.rank_match_groups_(auto, ss).used  # auto: whichever its trial chose
    assert chosen in lk.available_backends("cuda")
    for shape, a, e in zip(shapes, auto, expected):
        assert_bitwise_equal(a.cpu(), e, f"auto ({chosen}) {preset} {shape}")


@needs_gpu
def test_gpu_failed_scratch_allocation_changes_nothing(monkeypatch):
    import laperm_kernels as lk
    from laperm_kernels.ops.backends.triton import backend as tb

    def no_memory(keys, device):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(tb, "_empty_scratch", no_memory)
    ws = [torch.randn(64, 1000, device="cuda"), torch.randn(8, 20_000, device="cuda")]
    ss = [lk.sort_rows(w) for w in ws]
    before = [w.clone() for w in ws]
    with pytest.raises(torch.OutOfMemoryError, match="Nothing was modified"):
        lk.rank_match_many_(ws, ss, backend="triton")
    torch.cuda.synchronize()
    for w, b in zip(ws, before):
        assert torch.equal(w.view(torch.int32), b.view(torch.int32))


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.path.insert(0, ROOT)
    _worker(sys.argv[2:])
