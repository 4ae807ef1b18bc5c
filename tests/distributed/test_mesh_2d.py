"""LaPerm on a 2-D mesh of 4 gloo ranks, FSDP2 x tensor parallelism (torchtitan's layout),
then a resume of its checkpoint on 2 ranks (tensor parallelism alone).

On the ("dp", "tp") mesh, ``ColwiseParallel`` + FSDP2 place the first Linear's weight
``(_StridedShard(0), Shard(0))`` (rows whole) and ``RowwiseParallel`` + FSDP2 the second's
``(Shard(0), Shard(1))`` (rows split on "tp"; its 5 rows are moved whole to
``(Shard(0), Shard(0))``: 2 + 1 and 1 + 1 rows, uneven). At every sync the gathered
weights after it must be the reference rank match of the gathered weights before it; a
``dcp.save`` / ``dcp.load`` resume continues bit-identically. Then 2 ranks resume from the
4 ranks' checkpoint: S resharded onto them equals the sorted rows of the original
initialisation, and every row after further syncs is a permutation of it.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings

import torch

# the repository root, for ``tests.*`` when run as a script (the workers)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.distributed.dist_launch import run_ranks, skip_without_fully_shard, worker_main  # noqa: E402
from tests.distributed.dist_steps import full, load, permuted, save, train  # noqa: E402

K, STEPS, FIRST = 2, 6, 3
LAUNCH_TIMEOUT_S = 240


def _build(mesh, seed: int):
    """A 6 -> 8 -> 5 MLP, tensor-parallel on mesh "tp" and, on a 2-D mesh, FSDP2 on "dp"."""
    from torch import nn
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    import laperm_kernels as lk

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    tp = mesh["tp"] if mesh.ndim == 2 else mesh
    parallelize_module(model, tp, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    if mesh.ndim == 2:
        fully_shard(model, mesh=mesh["dp"])
    groups = [
        {
            "params": list(model.parameters()),
            "param_names": [n for n, _ in model.named_parameters()],
        }
    ]
    return (
        model,
        lk.LaPerm(torch.optim.Adam(groups, lr=2e-2), sync_period=K),
        lambda m, x: m(x).square().mean(),
    )


def _batch(t: int) -> torch.Tensor:
    return torch.randn(4, 6, generator=torch.Generator().manual_seed(t))  # same on every rank


def _mesh_case(mesh, outdir: str):
    model, opt, loss = _build(mesh, seed=0)
    weights = permuted(opt)
    out = {
        "init": {n: full(p) for n, (p, _) in weights.items()},
        "placements": {n: str(p.placements) for n, (p, _) in weights.items()},
        "S_placements": {n: str(opt.sorted_inits[p].placements) for n, (p, _) in weights.items()},
        "syncs": [],
    }
    train(model, opt, loss, _batch, 1, STEPS, out["syncs"])
    out["final"] = {n: full(p) for n, p in model.named_parameters()}

    first, fopt, floss = _build(mesh, seed=0)
    train(first, fopt, floss, _batch, 1, FIRST)
    path = os.path.join(outdir, "ckpt-2d")
    save(first, fopt, path)
    resumed, ropt, rloss = _build(mesh, seed=123)
    load(resumed, ropt, path)
    out["step_after_load"] = ropt.step_count
    train(resumed, ropt, rloss, _batch, FIRST + 1, STEPS)
    out["resumed"] = {n: full(p) for n, p in resumed.named_parameters()}
    return out


def _reshard_case(mesh, outdir: str):
    """2 ranks resume from the 4 ranks' checkpoint."""
    model, opt, loss = _build(mesh, seed=123)
    load(model, opt, os.path.join(outdir, "ckpt-2d"))
    weights = permuted(opt)
    out = {
        "S_loaded": {n: opt.sorted_inits[p].full_tensor() for n, (p, _) in weights.items()},
        "S_placements": {n: str(opt.sorted_inits[p].placements) for n, (p, _) in weights.items()},
        "step_after_load": opt.step_count,
    }
    train(model, opt, loss, _batch, FIRST + 1, STEPS)  # syncs at 4 and 6
    out["weights"] = {n: full(p) for n, (p, _) in weights.items()}
    return out


def _worker(rank: int, world: int, outdir: str) -> None:
    import time

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if world == 4:
                res = _mesh_case(
                    init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp")), outdir
                )
            else:
                res = _reshard_case(
                    init_device_mesh("cpu", (world,), mesh_dim_names=("tp",)), outdir
                )
        res["laperm_warnings"] = [str(w.message) for w in caught if "LaPerm" in str(w.message)]
    except Exception:  # reported by the parent
        res = {"error": traceback.format_exc()}
    res["seconds"] = time.perf_counter() - start
    dist.barrier()
    torch.save(res, os.path.join(outdir, f"world{world}-rank{rank}.pt"))


# --- the parent (pytest) ----------------------------------------------------------------

if __name__ != "__main__":
    import time

    import pytest

    from laperm_kernels.ops.reference import rank_match_reference_, sort_rows_reference
    from tests.helpers import assert_bitwise_equal

    skip_without_fully_shard()

    @pytest.fixture(scope="module")
    def worlds(tmp_path_factory):
        outdir = tmp_path_factory.mktemp("laperm_mesh_2d")
        results = {}
        for world in (4, 2):  # the 2 ranks read the 4 ranks' checkpoint
            start = time.perf_counter()
            results[world] = run_ranks(
                __file__, world, outdir, LAUNCH_TIMEOUT_S, f"world{world}-rank{{rank}}.pt"
            )
            results[f"launch{world}"] = time.perf_counter() - start
        return results

    def _results(worlds, world):
        for rank, res in enumerate(worlds[world]):
            assert "error" not in res, f"rank {rank}:\n{res['error']}"
        return worlds[world]

    def test_2d_mesh_every_sync_is_the_reference_rank_match(worlds):
        results = _results(worlds, 4)
        r0 = results[0]
        assert all(res["laperm_warnings"] == [] for res in results)
        assert r0["placements"] == {
            "0.weight": "(_StridedShard(dim=0, sf=2), Shard(dim=0))",
            "2.weight": "(Shard(dim=0), Shard(dim=1))",
        }
        assert r0["S_placements"]["2.weight"] == "(Shard(dim=0), Shard(dim=0))"
        for rec in r0["syncs"]:
            for name, pre in rec["pre"].items():
                S = sort_rows_reference(r0["init"][name])
                expected = rank_match_reference_(pre.clone(), S)
                what = f"{name} at the sync after step {rec['step']}"
                assert_bitwise_equal(rec["post"][name], expected, what)
                assert not torch.equal(rec["post"][name], pre), f"{what}: nothing moved"
        for rank, res in enumerate(results[1:], 1):
            for name, want in r0["final"].items():
                assert_bitwise_equal(res["final"][name], want, f"{name}: rank {rank} vs 0")

    def test_2d_mesh_dcp_resume_is_bit_identical(worlds):
        for rank, res in enumerate(_results(worlds, 4)):
            assert res["step_after_load"] == FIRST
            for name, want in res["final"].items():
                assert_bitwise_equal(res["resumed"][name], want, f"rank {rank}: {name}")

    def test_resume_on_another_world_size(worlds):
        init = _results(worlds, 4)[0]["init"]
        for rank, res in enumerate(_results(worlds, 2)):
            assert res["step_after_load"] == FIRST and res["laperm_warnings"] == []
            assert res["S_placements"] == {
                "0.weight": "(Shard(dim=0),)",
                "2.weight": "(Shard(dim=0),)",
            }
            for name, S in res["S_loaded"].items():
                want = sort_rows_reference(init[name])
                assert_bitwise_equal(S, want, f"rank {rank}: S of {name}, resharded 4 -> 2")
                w = res["weights"][name]
                assert torch.equal(w.sort(dim=1).values, want), name  # rows: permutations
                assert not torch.equal(w, init[name]), name

    def test_run_times(worlds):
        times = {
            "4 ranks: train, resume (s)": round(worlds[4][0]["seconds"], 2),
            "2 ranks: reshard (s)": round(worlds[2][0]["seconds"], 2),
            "launches (s)": (round(worlds["launch4"], 1), round(worlds["launch2"], 1)),
        }
        print(f"gloo 2-D mesh: {times}")
        assert worlds[4][0]["seconds"] < 120, times


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(_worker)
