"""Fuzzing every backend that runs CPU tensors against the reference, bit for bit.

    python tests/reliability/fuzz.py                    # the full campaign: 10,000 cases a backend
    python tests/reliability/fuzz.py --cases 500 --seed 3 --backends cpu
    python tests/reliability/fuzz.py --replay cpu 1234  # one case again, by backend and number

Each case is a group of 1 to 12 tensors drawn from its own seeded generator (so any case
can be replayed alone): every dtype; row lengths at and around every kernel path
boundary (the CPU kernel's compact and wide paths, the CUDA warp class, each block tile,
the large class) and random ones; 1-D, 2-D and 4-D shapes, empty ones; every kind of
data of ``tests.helpers.make_values`` (NaN payloads, +-0, +-inf, subnormals, heavy ties);
non-contiguous layouts (transposed, strided, channels_last). Backends:

* ``cpu``: ``rank_match_many_(..., backend="cpu")``, the C++ kernel;
* ``cuda-plan``: the CUDA backend's host path (planner, plan checks, and the test-only
  CPU emulation of the kernels, ``laperm_testing::emulate_planned_``) with a random largest tile and
  large-batch size (the tiles as the extension exports them), so every class and batching
  shape occurs;
* ``torch``: the reference itself, held to the pure-Python oracle of
  ``tests/ops/test_reference.py`` on small cases.

``tests/reliability/test_fuzz.py`` runs a short campaign in the test suite.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import torch

# the repository root, for ``tests.helpers`` when run as a script
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import laperm_kernels as lk  # noqa: E402
from laperm_kernels.ops.backends import cuda  # noqa: E402
from laperm_kernels.ops.reference import rows_and_length  # noqa: E402
from tests.helpers import DTYPES, KINDS, bits, make_sorted_init, make_values, reference_result  # noqa: E402

BOUNDARIES = (
    0,
    1,
    2,
    31,
    32,
    33,
    63,
    64,
    65,
    255,
    256,
    257,
    511,
    512,
    1023,
    1024,
    2048,
    2049,
    3072,
    3073,
    4096,
    4097,
    6144,
    6145,
    8191,
    8192,
    8193,
    16383,
    16384,
    16385,
    20000,
)
MAX_CASE_ELEMENTS = 400_000
ORACLE_MAX_ELEMENTS = 2_000  # the torch backend is checked by a Python loop


# --- cases ------------------------------------------------------------------------------


def _length(rng: random.Random) -> int:
    if rng.random() < 0.6:
        return rng.choice(BOUNDARIES)
    return int(2 ** rng.uniform(0, 14.5))


def _shape(rng: random.Random, budget: int) -> Tuple[int, ...]:
    length = _length(rng)
    rows = rng.choice((0, 1, 1, 2, 3, 5, 8, 16, 40)) if rng.random() < 0.9 else 0
    rows = min(rows, max(1, budget // max(length, 1)))
    form = rng.random()
    if form < 0.15:
        return (length,)  # 1-D: one row
    if form < 0.35 and length % 9 == 0 and length:
        return (rows, length // 9, 3, 3)  # a convolution's weight
    return (rows, length)


def _layout(w: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """``w``'s values in a non-contiguous tensor of the same logical shape, sometimes."""
    choice = rng.random()
    if choice < 0.6 or w.numel() == 0:
        return w
    if choice < 0.75 and w.dim() == 2:
        return w.t().contiguous().t()  # column-major
    if choice < 0.9 and w.dim() >= 1:
        wide = torch.zeros(*w.shape[:-1], 2 * w.shape[-1], dtype=w.dtype)
        view = wide[..., ::2]  # every other element
        view.copy_(w)
        return view
    if w.dim() == 4:
        return w.contiguous(memory_format=torch.channels_last)
    return w


def make_case(backend: str, index: int, seed: int):
    """The weights and sorted_inits of case ``index`` (its own generators)."""
    case_seed = seed * 1_000_003 + index * 7919 + zlib.crc32(backend.encode()) % 1000
    rng = random.Random(case_seed)
    gen = torch.Generator().manual_seed(case_seed)
    budget = ORACLE_MAX_ELEMENTS if backend == "torch" else MAX_CASE_ELEMENTS
    ws, ss = [], []
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8, 12))):
        shape = _shape(rng, budget)
        n = math.prod(shape)
        if n > budget:
            continue
        budget -= n
        dtype = rng.choice(DTYPES)
        w = make_values(rng.choice(KINDS), shape, dtype, gen)
        if rng.random() < 0.5:
            s = make_sorted_init(shape, dtype, gen)  # random bits, unsorted
        else:
            s = lk.sort_rows(make_values(rng.choice(KINDS), shape, dtype, gen))
        ws.append(w if backend == "cuda-plan" else _layout(w, rng))
        ss.append(s)
    settings = {
        "max_block_tile": rng.choice(cuda.size_classes().block_tiles),
        "max_batch_items": rng.choice((1 << 12, 1 << 15, 1 << 18, 1 << 22)),
    }
    return ws, ss, settings


# --- backends ---------------------------------------------------------------------------


def _run_cpu(ws, ss, settings):
    lk.rank_match_many_(ws, ss, backend="cpu")


def _run_cuda_plan(ws, ss, settings):
    by_dtype: Dict[torch.dtype, Tuple[list, list]] = {}
    for w, s in zip(ws, ss):
        by_dtype.setdefault(w.dtype, ([], []))
        by_dtype[w.dtype][0].append(w)
        by_dtype[w.dtype][1].append(s)
    for group_ws, group_ss in by_dtype.values():
        plan = cuda.plan_for(group_ws, group_ss, **settings)
        torch.ops.laperm_testing.emulate_planned_(group_ws, group_ss, *plan)


def _run_torch(ws, ss, settings):
    lk.rank_match_many_(ws, ss, backend="torch")


def _oracle(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    from tests.ops.test_reference import oracle_rank_match

    rows = w.reshape(rows_and_length(w))
    return oracle_rank_match(rows, s.reshape(rows.shape)).reshape(w.shape)


BACKENDS: Dict[str, Tuple[Callable, Callable[[], bool]]] = {
    "cpu": (_run_cpu, lambda: "cpu" in lk.available_backends("cpu")),
    "cuda-plan": (_run_cuda_plan, lk._extension.is_loaded),
    "torch": (_run_torch, lambda: True),
}


def check_case(backend: str, index: int, seed: int) -> Optional[str]:
    """None if the backend's result equals the expected one bit for bit, else where not."""
    ws, ss, settings = make_case(backend, index, seed)
    expect = _oracle if backend == "torch" else reference_result
    want = [expect(w, s) for w, s in zip(ws, ss)]
    BACKENDS[backend][0](ws, ss, settings)  # in place, in the case's own layouts
    for i, (o, e) in enumerate(zip(ws, want)):
        if not torch.equal(bits(o), bits(e)):
            return (
                f"{backend} case {index} (seed {seed}): tensor {i} of {len(ws)}, shape "
                f"{tuple(o.shape)}, {o.dtype}, strides {o.stride()}, {settings}"
            )
    return None


def campaign(backends: List[str], cases: int, seed: int, log=print) -> Dict[str, dict]:
    """Runs ``cases`` cases on each backend; returns count, seconds and findings each."""
    report = {}
    for backend in backends:
        run, available = BACKENDS[backend]
        if not available():
            report[backend] = {"cases": 0, "seconds": 0.0, "findings": [], "skipped": True}
            log(f"fuzz: {backend}: not available here, skipped")
            continue
        start, findings = time.perf_counter(), []
        for index in range(cases):
            try:
                finding = check_case(backend, index, seed)
            except Exception as e:  # a crash is a finding too
                finding = f"{backend} case {index} (seed {seed}): {type(e).__name__}: {e}"
            if finding:
                findings.append(finding)
                log(f"fuzz: FINDING {finding}")
        seconds = time.perf_counter() - start
        report[backend] = {"cases": cases, "seconds": seconds, "findings": findings}
        log(f"fuzz: {backend}: {cases} cases in {seconds:.1f} s, {len(findings)} findings")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10_000, help="cases a backend")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument(
        "--replay", nargs=2, metavar=("BACKEND", "CASE"), help="run one case again (with --seed)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.replay:
        finding = check_case(args.replay[0], int(args.replay[1]), args.seed)
        print(finding or "fuzz: the case passes")
        return 1 if finding else 0
    report = campaign(args.backends, args.cases, args.seed)
    return 1 if any(r["findings"] for r in report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
