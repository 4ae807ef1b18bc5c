"""The CPU side of what `python -m bench.gpucheck` runs, timed on this machine
(no GPU needed): the part of the GPU checks' time that is not GPU work, for the budget in
docs/cuda.md ("first GPU run").

    python tools/gpucheck_host_costs.py [--quick]

- gpu-tests: the GPU tests make their tensors and the reference results on the CPU
  (tests/cuda_backend/test_cuda.py's ``model`` and ``expected``, test_triton.py's
  test_gpu_bitwise): each is timed here as the test does it, with CPU tensors.
- benchmark: ``bench.results.make_model`` per preset and dtype (the weights are drawn on the CPU,
  then copied to the device; the expected result and the timed runs are GPU work).

Prints one line per part and the totals. Other costs (interpreter start, torch import,
CUDA context, the GPU work itself) are not measured here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _timed(rows, label, fn, *args):
    start = time.perf_counter()
    fn(*args)
    rows.append((label, time.perf_counter() - start))
    print(f"{label:60s} {rows[-1][1]:7.2f} s", flush=True)


def gpu_tests(rows, quick):
    from bench.presets import PRESETS, resnet50, transformer_mlp
    from tests.cuda_backend import test_cuda as tc
    from tests.helpers import (
        DTYPES,
        KINDS,
        generator,
        make_sorted_init,
        make_values,
        reference_result,
    )
    from tests.triton_backend import test_triton as tt

    def cuda_case(specs, seed=0, kind="normal"):
        ws, ss = tc.model(specs, seed=seed, kind=kind, device="cpu")
        tc.expected(ws, ss)

    def every_kind(dtype):
        for k, kind in enumerate(KINDS):
            cuda_case([((3, n), dtype) for n in tc.LENGTHS], k, kind)

    for dtype in DTYPES:
        _timed(rows, f"test_cuda every_size_class {dtype} x {len(KINDS)} kinds", every_kind, dtype)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        _timed(
            rows, f"test_cuda resnet50_sync {dtype}", cuda_case, [(s, dtype) for s in resnet50()], 1
        )
    _timed(
        rows,
        "test_cuda mlp_4096x11008",
        cuda_case,
        [(s, torch.float32) for s in transformer_mlp()],
        2,
    )
    for dtype in DTYPES:
        _timed(
            rows,
            f"test_cuda long_rows {dtype}",
            cuda_case,
            [((1 << 20,), dtype), ((3, 300000), dtype), ((7, 20000), dtype)],
            3,
            "ties",
        )

    def triton_cases(shapes, dtype):
        for kind in ("normal", "special", "ties"):
            gen = generator(7)
            ws = [make_values(kind, s, dtype, gen) for s in shapes]
            ss = [make_sorted_init(s, dtype, gen) for s in shapes]
            [reference_result(w, s) for w, s in zip(ws, ss)]

    for preset, shapes in tt.GPU_SHAPES.items():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            _timed(
                rows,
                f"test_triton gpu_bitwise {preset} {dtype} x 3 kinds",
                triton_cases,
                shapes or PRESETS[preset],
                dtype,
            )


def benchmark(rows, quick):
    from bench.presets import PRESETS
    from bench.results import make_model
    from laperm_kernels.ops.reference import SUPPORTED_DTYPES_BY_NAME

    presets = ["resnet50"] if quick else sorted(PRESETS)
    dtypes = ["float32"] if quick else list(SUPPORTED_DTYPES_BY_NAME)
    for preset in presets:
        for dtype in dtypes:
            _timed(
                rows,
                f"benchmark make_model {preset} {dtype}",
                make_model,
                PRESETS[preset],
                SUPPORTED_DTYPES_BY_NAME[dtype],
                "cpu",
            )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="gpucheck --quick's benchmark only")
    args = p.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs",
        flush=True,
    )
    tests, bench_rows = [], []
    gpu_tests(tests, args.quick)
    benchmark(bench_rows, args.quick)
    print(
        f"gpu-tests host side: {sum(t for _, t in tests):.1f} s; benchmark host side: "
        f"{sum(t for _, t in bench_rows):.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
