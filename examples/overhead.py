"""What LaPerm costs in wall time: the same MNIST training with Adam, LaPerm(Adam,
backend="cpu") and LaPerm(Adam, backend="torch"), timed.

    python examples/overhead.py --epochs 2 --repeats 9 --out examples/results/overhead

Each of ``--repeats`` rounds trains every variant from the same initial weights on the
same batches (mnist_models.py, mnist_common.py), rotating their order; no evaluation is
timed. Reports the median wall time of each variant and its ratio to Adam's, the median of
the per-round ratios ("paired"), the time of one sync (``LaPerm.sync()``: the rank
matching and check_finite's scan, median of 50) per backend and the ratio it predicts,
and the ratio of each LaPerm variant's median step to Adam's when the two take their
blocks of k steps in turn ("interleaved", ``--interleaved-steps`` each). Checks that both
backends end with bit-identical weights (exit status 1 if not). Writes ``overhead.json``
(every sample) to --out.
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from mnist_common import (
    check_args,
    environment,
    epoch_order,
    load_data,
    make_parser,
    train_epoch,
    train_step,
    write_json,
)
from mnist_models import make_initial_model
from torch import nn

import laperm_kernels as lk
from laperm_kernels import LaPerm


def backend_of(variant: str) -> str:
    """The backend a LaPerm variant "laperm-<backend>" names."""
    return variant.split("-", 1)[1]


def rotated(variants: List[str], turn: int) -> List[str]:
    """The variants in the order of turn ``turn``: each goes first in turn."""
    k = turn % len(variants)
    return variants[k:] + variants[:k]


def time_training(
    variants: List[str], init_model: nn.Module, x: torch.Tensor, y: torch.Tensor, args
) -> Dict[str, tuple]:
    """Per variant: the training wall times (one per repeat) and the final weights."""
    times: Dict[str, List[float]] = {v: [] for v in variants}
    finals: Dict[str, torch.Tensor] = {}
    for rep in range(args.repeats):
        for v in rotated(variants, rep):
            model = copy.deepcopy(init_model)
            opt = make_optimizer(v, model, args)
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=args.lr_decay)
            t0 = time.perf_counter()
            for epoch in range(1, args.epochs + 1):
                train_epoch(
                    model, opt, x, y, epoch_order(len(x), args.seed, epoch), args.batch_size
                )
                sched.step()
            times[v].append(time.perf_counter() - t0)
            finals[v] = torch.cat([p.detach().flatten() for p in model.parameters()])
        print(
            f"repeat {rep + 1}/{args.repeats}: "
            + "  ".join(f"{v} {times[v][-1]:.2f}s" for v in variants),
            flush=True,
        )
    return {v: (times[v], finals[v]) for v in variants}


def time_steps_interleaved(
    variants: List[str], init_model: nn.Module, x: torch.Tensor, y: torch.Tensor, args
) -> Dict[str, float]:
    """Per variant: median ms of k training steps (forward, backward, optimizer step; a
    LaPerm variant syncs once in them), the variants taking their blocks of k steps in
    turn on the same batches. The speed of a shared machine drifts over seconds; here every
    variant meets the same drift, so the ratio of these medians is far steadier than one of
    whole trainings."""
    models = {v: copy.deepcopy(init_model) for v in variants}
    opts = {v: make_optimizer(v, models[v], args) for v in variants}
    order = epoch_order(len(x), args.seed, 1)
    starts = range(0, len(order) - args.batch_size + 1, args.batch_size)
    samples: Dict[str, List[float]] = {v: [] for v in variants}
    for block in range(max(1, args.interleaved_steps // args.k)):
        for v in rotated(variants, block):
            t0 = time.perf_counter()
            for i in range(block * args.k, (block + 1) * args.k):
                start = starts[i % len(starts)]
                idx = order[start : start + args.batch_size]
                train_step(models[v], opts[v], x[idx], y[idx])
            samples[v].append(1000 * (time.perf_counter() - t0) / args.k)
    return {v: statistics.median(ts) for v, ts in samples.items()}


def make_optimizer(variant: str, model: nn.Module, args) -> torch.optim.Optimizer:
    """Adam, or LaPerm(Adam) with the backend a variant "laperm-<backend>" names."""
    inner = torch.optim.Adam(model.parameters(), lr=args.lr)
    if variant == "adam":
        return inner
    return LaPerm(inner, sync_period=args.k, backend=backend_of(variant))


def time_syncs(init_model: nn.Module, backends: List[str], repeat: int = 50) -> Dict[str, float]:
    """Median ms of one LaPerm sync: ``LaPerm.sync()`` over the model's parameters, as a
    due step runs it (the rank matching and check_finite's scan), on weights moved off
    their permutation of S the way a step of training moves them."""
    out = {}
    for b in backends:
        model = copy.deepcopy(init_model)
        params = list(model.parameters())
        opt = LaPerm(torch.optim.SGD(params, lr=0.0), backend=b)
        opt.sync()  # the first sync checks the weights against S; not timed
        g = torch.Generator().manual_seed(0)
        moved = [p.detach() + torch.randn(p.shape, generator=g) * 1e-3 for p in params]
        samples = []
        for _ in range(repeat):
            with torch.no_grad():
                for p, m in zip(params, moved):
                    p.copy_(m)
            t0 = time.perf_counter()
            opt.sync()
            samples.append(1000 * (time.perf_counter() - t0))
        out[b] = statistics.median(samples)
    return out


def interleaved_fields(pair: Optional[Tuple[float, float]]) -> Dict[str, Optional[float]]:
    """overhead.json's interleaved figures of a variant: (its ms a step, Adam's), or None
    for Adam itself."""
    laperm_ms, adam_ms = pair if pair is not None else (None, None)
    return {
        "interleaved_ms_per_step": laperm_ms,
        "interleaved_adam_ms_per_step": adam_ms,
        "interleaved_ratio_vs_adam": laperm_ms / adam_ms if pair is not None else None,
    }


def run_overhead(args) -> int:
    torch.set_num_threads(args.threads)
    x, y = load_data(args.model, args.seed, args.train_subset)["train"]
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    init_model = make_initial_model(args)
    backends = lk.available_backends("cpu")
    variants = ["adam"] + [f"laperm-{b}" for b in ("cpu", "torch") if b in backends]
    missing = [b for b in ("cpu", "torch") if b not in backends]
    print(
        f"overhead: {args.model}, {len(x)} examples x {args.epochs} epochs = {steps} steps, "
        f"batch {args.batch_size}, k={args.k}, threads={torch.get_num_threads()}, "
        f"{args.repeats} repeats; backends: {backends}"
        + (f" (missing: {missing})" if missing else ""),
        flush=True,
    )

    runs = time_training(variants, init_model, x, y, args)
    # Each LaPerm variant against Adam on its own: a slow variant between them would
    # change what the other two find in the caches.
    interleaved = {}  # LaPerm variant: (its median ms a step, Adam's beside it)
    for v in variants[1:]:
        ms = time_steps_interleaved(["adam", v], init_model, x, y, args)
        interleaved[v] = (ms[v], ms["adam"])
    times = {v: ts for v, (ts, _) in runs.items()}
    sync_ms = time_syncs(init_model, [backend_of(v) for v in variants[1:]])
    med = {v: statistics.median(ts) for v, ts in times.items()}
    paired = {
        v: statistics.median(t / a for t, a in zip(times[v], times["adam"])) for v in variants
    }
    syncs = steps // args.k
    # The sync cost alone, timed in isolation, predicts the ratio with far less noise than
    # whole-training timings on a busy machine: 1 + syncs * sync time / Adam's time.
    predicted = {
        v: 1.0 + syncs * sync_ms[backend_of(v)] / (1000 * med["adam"]) for v in variants[1:]
    }
    print(
        f"\n{'variant':<14}{'median s':>10}{'min s':>9}{'max s':>9}{'ms/step':>9}"
        f"{'vs Adam':>9}{'paired':>9}{'sync ms':>9}{'predicted':>11}{'interleaved':>19}"
    )
    for v in variants:
        tail = ""
        if v != "adam":
            laperm_ms, adam_ms = interleaved[v]
            tail = (
                f"{sync_ms[backend_of(v)]:>9.2f}{predicted[v]:>10.3f}x"
                f"{laperm_ms:>8.2f}/{adam_ms:.2f} {laperm_ms / adam_ms:.3f}x"
            )
        print(
            f"{v:<14}{med[v]:>10.2f}{min(times[v]):>9.2f}{max(times[v]):>9.2f}"
            f"{1000 * med[v] / steps:>9.2f}{med[v] / med['adam']:>8.3f}x"
            f"{paired[v]:>8.3f}x" + tail
        )
    print(
        f"(vs Adam: ratio of medians; paired: median over repeats of the ratio within a "
        f"repeat; predicted: 1 + {syncs} syncs x sync ms / Adam's median time;\n"
        f"interleaved: median ms a step of LaPerm / of Adam over blocks of k steps, the "
        f"two taking their blocks in turn, {args.interleaved_steps} steps each, and the ratio)"
    )
    same = {v: bool(torch.equal(runs[v][1], runs[variants[1]][1])) for v in variants[1:]}
    print(f"LaPerm backends end with bit-identical weights: {same}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "overhead.json",
        {
            "config": {**vars(args), "steps": steps, "n_train": len(x)},
            "environment": environment(),
            "variants": {
                v: {
                    "times_s": times[v],
                    "median_s": med[v],
                    "ms_per_step": 1000 * med[v] / steps,
                    "ratio_vs_adam_median": med[v] / med["adam"],
                    "median_of_paired_ratios": paired[v],
                    "predicted_ratio_from_sync_ms": predicted.get(v),
                    **interleaved_fields(interleaved.get(v)),
                }
                for v in variants
            },
            "syncs": syncs,
            "sync_ms": sync_ms,
            "laperm_backends_bit_identical": same,
        },
    )
    print(f"wrote {out / 'overhead.json'}")
    return 0 if all(same.values()) else 1


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0], 2, "epochs per timed training")
    p.add_argument(
        "--repeats", type=int, default=5, help="timed trainings of each variant, in rotating order"
    )
    p.add_argument(
        "--interleaved-steps",
        type=int,
        default=400,
        help="steps each variant takes in the interleaved timing (blocks of k, in turn)",
    )
    args = p.parse_args(argv)
    if args.repeats < 1 or args.interleaved_steps < 1:
        p.error("--repeats and --interleaved-steps must be >= 1")
    return check_args(p, args)


def main(argv=None) -> int:
    return run_overhead(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
