"""What a LaPerm sync costs when DTensor placements split rows: bytes moved, time, memory.

    python tools/dist_sync_cost.py [--world 2] [--preset tiny|base] [--repeat 10] [--json F]

Runs ``--world`` CPU processes on gloo (loopback), one intra-op thread each, for two
models: an MLP under tensor parallelism (``ColwiseParallel`` then ``RowwiseParallel``: the
second weight is ``Shard(1)``, its rows are moved) and GPT-2's ``Conv1D`` layers under
FSDP2 (``[in, out]`` sharded on dim 0, rows on dim 1: all four moved; and, for
comparison, sharded on dim 1 by FSDP2's ``shard_placement_fn``: none moved). ``tiny`` is the
tests' size, ``base`` GPT-2 small's widths (768, 3072; one layer). For every split weight,
a sync redistributes it to whole rows and back (laperm_kernels/optim/sharded_rows.py). Printed
per model, from rank 0:

* bytes each rank receives per sync, summed over the collectives a dispatch mode sees
  (an all-gather of ``in`` bytes into ``out`` bytes receives ``out - in``), and the
  largest single collective output (the transient buffer);
* median seconds of: the redistribution to whole rows, the rank match, the way back, and
  a whole ``opt.sync()``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_COLLECTIVES = ("all_gather", "all_to_all", "alltoall", "reduce_scatter", "all_reduce", "broadcast")
PRESETS = {
    "tiny": {"mlp": (6, 8, 5), "gpt2": (9, 3)},
    "base": {"mlp": (768, 3072, 768), "gpt2": (768, 12)},
}


class CollectiveBytes(TorchDispatchMode):
    """Records ``(op, input bytes, output bytes)`` of every collective dispatched."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if any(c in name for c in _COLLECTIVES):

            def size(x):
                return sum(
                    t.numel() * t.element_size()
                    for t in (x if isinstance(x, (list, tuple)) else [x])
                    if isinstance(t, torch.Tensor)
                )

            self.calls.append((name, size(args[0]) if args else 0, size(out)))
        return out


def _mlp(mesh, dims):
    from torch import nn
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(dims[0], dims[1]), nn.ReLU(), nn.Linear(dims[1], dims[2]))
    parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    return model, [{"params": list(model.parameters())}], "TP MLP"


def _gpt2(mesh, dims, units_sharded: bool = False):
    """GPT-2 under FSDP2; with ``units_sharded``, FSDP2 shards every Conv1D weight whose
    dim 1 divides evenly on that dim (``shard_placement_fn``), its unit dimension: rows
    stay whole, nothing moves."""
    import warnings

    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    import laperm_kernels as lk

    n_embd, n_head = dims
    torch.manual_seed(0)
    try:
        import transformers
    except ImportError:
        sys.exit("tools/dist_sync_cost.py: the GPT-2 case needs transformers")
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=n_embd, n_layer=1, n_head=n_head
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.GPT2LMHeadModel(config)
    units = {id(p) for g in lk.param_groups(model) if g.get("row_dim") == 1 for p in g["params"]}

    def placement(p):  # FSDP2 shards dims other than 0 evenly only
        even = p.shape[1] % mesh.size() == 0 if p.dim() > 1 else False
        return Shard(1) if units_sharded and id(p) in units and even else None

    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, shard_placement_fn=placement)
    fully_shard(model, mesh=mesh, shard_placement_fn=placement)
    return (
        model,
        lk.param_groups(model),
        (
            "GPT-2 Conv1D under FSDP2, sharded on dim 1"
            if units_sharded
            else "GPT-2 Conv1D under FSDP2"
        ),
    )


def _measure(model, groups, repeat: int):
    import laperm_kernels as lk
    from laperm_kernels.ops.rank_match import rank_match_groups_
    from laperm_kernels.optim.layouts import local_tensor, whole_row_placements
    from laperm_kernels.optim.sharded_rows import sync_rows

    opt = lk.LaPerm(torch.optim.SGD(groups, lr=0.0), sync_period=1, backend="cpu")
    opt.sync()  # the first-step check, the backend choice
    pairs = [
        (p, g.get("row_dim", 0))
        for g in opt.param_groups
        for p in g["params"]
        if p in opt.sorted_inits
    ]
    split = [(p, d) for p, d in pairs if whole_row_placements(p, d) is not None]
    inits = [local_tensor(opt.sorted_inits[p]) for p, _ in pairs]
    counter = CollectiveBytes()
    with counter:
        rows, write_back = sync_rows(pairs)
        rank_match_groups_(rows, inits, backend="cpu")
        write_back()
    times = {"to whole rows": [], "rank match": [], "back": [], "opt.sync()": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows, write_back = sync_rows(pairs)
        t1 = time.perf_counter()
        rank_match_groups_(rows, inits, backend="cpu")
        t2 = time.perf_counter()
        write_back()
        t3 = time.perf_counter()
        opt.sync()
        t4 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(dt)
    return {
        "permuted weights": len(pairs),
        "split weights": len(split),
        "split elements (whole)": sum(p.numel() for p, _ in split),
        "split bytes (whole)": sum(p.numel() * p.element_size() for p, _ in split),
        "collectives per sync": len(counter.calls),
        "bytes received per rank per sync": sum(o - i for _, i, o in counter.calls),
        "largest collective output (bytes)": max((o for _, _, o in counter.calls), default=0),
        "collective ops": sorted({n for n, _, _ in counter.calls}),
        "median seconds": {k: statistics.median(v) for k, v in times.items()},
    }


def _worker(rank: int, world: int, preset: str, repeat: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    mesh = init_device_mesh("cpu", (world,))
    results = {}
    gpt2 = PRESETS[preset]["gpt2"]
    for build in (
        lambda: _mlp(mesh, PRESETS[preset]["mlp"]),
        lambda: _gpt2(mesh, gpt2),
        lambda: _gpt2(mesh, gpt2, units_sharded=True),
    ):
        model, groups, name = build()
        results[name] = _measure(model, groups, repeat)
        dist.barrier()
    if rank == 0:
        with open(out, "w") as f:
            json.dump(
                {
                    "world": world,
                    "preset": preset,
                    "repeat": repeat,
                    "torch": torch.__version__,
                    "results": results,
                },
                f,
                indent=1,
            )
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="base")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", default="dist-sync-cost.json")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    if os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(r),
                str(args.world),
                args.preset,
                str(args.repeat),
                args.json,
            ],
            env=env,
        )
        for r in range(args.world)
    ]
    if any(p.wait() != 0 for p in procs):
        sys.exit("tools/dist_sync_cost.py: a worker failed")
    with open(args.json) as f:
        print(json.dumps(json.load(f), indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        main()
