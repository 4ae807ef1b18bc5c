"""Before/after on one machine: the same measurements of two checkouts, rounds interleaved.

    python tools/ab_compare.py BEFORE_DIR AFTER_DIR [--rounds 6] [--threads 1 2]

Each checkout must hold its built extension (``python setup.py build_ext --inplace``).
Every round runs one child process per checkout, in ABBA order (so neither always goes
first), with PYTHONPATH set to that checkout. A child measures through the public API
only, so any version can be measured:

* host: ``rank_match_many_`` over 54 tensors of 2x3 (ResNet-50's count, ``backend="auto"``),
  and an SGD step (lr 0) and a LaPerm(SGD) step that syncs every step over them as
  parameters (µs per call, median of 15 batches of 200 calls);
* rows: ``rank_match_many_(backend="cpu")`` over ResNet-50's and LeNet-300-100's weight
  rows (float32), in million elements a second, at each thread count;
* sync: ``LaPerm.sync()`` (``backend="cpu"``, check_finite on) over LeNet-300-100's
  weights as parameters, moved off their permutation of S before each sync as a step of
  training moves them (ms, median of 41), at each thread count.

Prints, per figure, each checkout's median over rounds and the ratio after/before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROW_MODELS = ("resnet50", "lenet-300-100")


def _per_call_us(fn, calls: int = 200, batches: int = 15) -> float:
    for _ in range(20):
        fn()
    samples = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(samples)


def _sync_ms(shapes: list, gen) -> float:
    import torch

    import laperm_kernels as lk

    params = [torch.nn.Parameter(torch.rand(s, generator=gen) - 0.5) for s in shapes]
    laperm = lk.LaPerm(torch.optim.SGD(params, lr=0.0), backend="cpu")
    laperm.sync()  # the first sync checks the weights against S: not timed
    moved = [p.detach() + torch.randn(p.shape, generator=gen) * 1e-3 for p in params]
    samples = []
    for _ in range(41):
        with torch.no_grad():
            for p, m in zip(params, moved):
                p.copy_(m)
        t0 = time.perf_counter()
        laperm.sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def child(threads: list, shapes: dict) -> dict:
    import torch

    import laperm_kernels as lk

    out = {}
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(2, 3, generator=gen) for _ in range(54)]
    ss = [lk.sort_rows(w) for w in ws]
    out["host: rank_match_many_ (us)"] = _per_call_us(lambda: lk.rank_match_many_(ws, ss))
    params = [[torch.nn.Parameter(w.clone()) for w in ws] for _ in range(2)]
    for group in params:
        for p in group:
            p.grad = torch.zeros_like(p)
    sgd = torch.optim.SGD(params[0], lr=0.0)
    laperm = lk.LaPerm(torch.optim.SGD(params[1], lr=0.0), sync_period=1)
    inner, step = _per_call_us(sgd.step), _per_call_us(laperm.step)
    out["host: SGD step (us)"] = inner
    out["host: LaPerm(SGD) step, k=1 (us)"] = step
    out["host: sync above the inner step (us)"] = step - inner
    for model, model_shapes in shapes.items():
        weights = [torch.randn(s, generator=gen) for s in model_shapes]
        inits = [lk.sort_rows(w) for w in weights]
        elements = sum(w.numel() for w in weights)
        for n in threads:
            torch.set_num_threads(n)
            us = _per_call_us(
                lambda w=weights, s=inits: lk.rank_match_many_(w, s, backend="cpu"),
                calls=3,
                batches=7,
            )
            out[f"rows: {model}, {n} thread(s) (M elem/s)"] = elements / us
    for n in threads:
        torch.set_num_threads(n)
        out[f"sync: lenet-300-100, {n} thread(s) (ms)"] = _sync_ms(shapes["lenet-300-100"], gen)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(spec["threads"], spec["shapes"])))
        return 0
    sys.path.insert(0, str(args.after))
    try:
        from bench.presets import PRESETS
    except ImportError:  # a checkout from before the benchmark became a package
        from laperm_kernels.presets import PRESETS
    spec = json.dumps({"threads": args.threads, "shapes": {m: PRESETS[m] for m in ROW_MODELS}})
    results = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for name in order:
            root = getattr(args, name).resolve()
            env = {**os.environ, "PYTHONPATH": str(root)}
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "-", "-", "--child", spec],
                env=env,
                cwd=root,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.exit(f"{name} ({root}) failed:\n{done.stderr}")
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'figure':48s} {'before':>10s} {'after':>10s} {'after/before':>13s}")
    for figure in results["after"][0]:
        b = statistics.median(x[figure] for x in results["before"])
        a = statistics.median(x[figure] for x in results["after"])
        print(f"{figure:48s} {b:10.4g} {a:10.4g} {a / b:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
