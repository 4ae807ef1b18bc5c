"""LaPerm with 2 processes on gloo, CPU only, loopback only.

* DDP: every rank sees different data, so without DDP's gradient all-reduce the weights
  would diverge; with it, and with rank matching deterministic, every rank must hold the
  same weights bit for bit after every sync.
* DTensor (FSDP2-style): parameters sharded on dim 0 hold whole rows on each rank, so
  LaPerm rank-matches each local shard against that shard's own S, with no
  communication. Each rank's shard after a sync must equal the reference rank matching
  of the shard, and the gathered full tensor must be a row-wise permutation of the full
  initial tensor. (Placements that split rows: test_row_split.py.)

Both scenarios run in one launch of two worker processes (this file run as a script);
each rank saves what it saw, and the tests compare the ranks here in the parent.
"""

from __future__ import annotations

import os
import sys
import traceback

import torch

# the repository root, for ``tests.*`` when run as a script (the workers)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.distributed.dist_launch import run_ranks, worker_main  # noqa: E402

WORLD = 2
LAUNCH_TIMEOUT_S = 150
DDP_STEPS, DDP_K = 20, 5
DT_STEPS, DT_K = 6, 3


# --- the worker (runs in the child processes) -------------------------------------------


def _ddp_scenario(rank, backend):
    import copy

    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import laperm_kernels as lk

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    ddp = DDP(model)
    # S is taken after DDP has broadcast rank 0's weights (build the wrapper after DDP).
    opt = lk.LaPerm(torch.optim.Adam(ddp.parameters(), lr=1e-2), sync_period=DDP_K, backend=backend)
    data = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    out = {
        "init": init,
        "syncs": [],
        "local_grad": None,
        "S": {
            n: opt.sorted_inits[p].clone()
            for n, p in model.named_parameters()
            if p in opt.sorted_inits
        },
    }
    for t in range(1, DDP_STEPS + 1):
        x = torch.randn(16, 20, generator=data)
        y = torch.randint(0, 10, (16,), generator=data)
        if t == 1:  # what this rank's gradient would be on its own
            alone = copy.deepcopy(model)
            F.cross_entropy(alone(x), y).backward()
            out["local_grad"] = alone[0].weight.grad.clone()
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
        if t % DDP_K == 0:
            out["syncs"].append({n: p.detach().clone() for n, p in model.named_parameters()})
    out["step_count"] = opt.step_count
    return out


def _dtensor_scenario(rank, backend):
    from torch import nn

    import laperm_kernels as lk

    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    except ImportError as e:
        return {"skip": f"torch {torch.__version__}: no public DTensor API: {e!r}"}
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
    except Exception as e:  # noqa: BLE001 - reported as the skip reason
        return {"skip": f"torch {torch.__version__}: no CPU device mesh on gloo: {e!r}"}

    torch.manual_seed(0)  # the same full tensors on every rank
    fulls = [torch.randn(7, 5), torch.randn(4, 3, 2, 2)]  # 7 rows: uneven shards (4 + 3)
    params = [nn.Parameter(distribute_tensor(f, mesh, [Shard(0)])) for f in fulls]
    bias = nn.Parameter(distribute_tensor(torch.zeros(7), mesh, [Replicate()]))
    adam = torch.optim.Adam(params + [bias], lr=5e-2)
    opt = lk.LaPerm(adam, sync_period=DT_K, backend=backend)
    out = {
        "full_init": fulls,
        "records": [],
        "is_dtensor": [isinstance(p, DTensor) for p in params],
        "placements": [str(p.placements) for p in params],
        "S": [opt.sorted_inits[p].to_local().clone() for p in params],
        "S_types": [type(opt.sorted_inits[p]).__name__ for p in params],
        "bias_permuted": bias in opt.sorted_inits,
        "storage": [p.to_local().data_ptr() for p in params],
    }
    captured = {}

    def after_inner_step(optimizer, args, kwargs):  # before LaPerm's sync
        captured["pre"] = [p.to_local().detach().clone() for p in params]

    adam.register_step_post_hook(after_inner_step)
    data = torch.Generator().manual_seed(7)  # the same inputs on every rank
    for t in range(1, DT_STEPS + 1):
        x = distribute_tensor(torch.randn(5, 3, generator=data), mesh, [Replicate()])
        z = distribute_tensor(torch.randn(4, 3, 2, 2, generator=data), mesh, [Replicate()])
        opt.zero_grad()
        loss = torch.tanh(params[0] @ x).sum() + (params[1] * z).sin().sum() + (bias * bias).sum()
        loss.backward()
        opt.step()
        out["records"].append(
            {
                "step": t,
                "pre": captured["pre"],
                "post": [p.to_local().detach().clone() for p in params],
            }
        )
    out["full_after"] = [p.full_tensor().detach().clone() for p in params]
    out["is_dtensor_after"] = [isinstance(p, DTensor) for p in params]
    out["placements_after"] = [str(p.placements) for p in params]
    out["storage_after"] = [p.to_local().data_ptr() for p in params]
    out["state_dict_shapes"] = {
        i: tuple(st["sorted_init"].shape)
        for i, st in opt.state_dict()["state"].items()
        if "sorted_init" in st
    }
    # Partial holds pending sums, not values: refused, naming the parameter. (Placements
    # that split rows are permuted whole: tests/distributed/test_row_split.py.)
    from torch.distributed.tensor import Partial

    pending = nn.Parameter(DTensor.from_local(torch.randn(4, 6), mesh, [Partial()]))
    try:
        lk.LaPerm(
            torch.optim.SGD([{"params": [pending], "param_names": ["fc.weight"]}], lr=0.1),
            backend=backend,
        )
        out["partial_error"] = None
    except ValueError as e:
        out["partial_error"] = str(e)
    return out


def _worker(rank: int, world: int, outdir: str) -> None:
    import torch.distributed as dist

    import laperm_kernels as lk

    results = {"backends": lk.available_backends("cpu")}
    for backend in results["backends"]:
        for name, scenario in (("ddp", _ddp_scenario), ("dtensor", _dtensor_scenario)):
            try:
                results[(name, backend)] = scenario(rank, backend)
            except Exception:  # recorded for the parent's report
                results[(name, backend)] = {"error": traceback.format_exc()}
            dist.barrier()
    torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))


# --- the parent (pytest) ----------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    from laperm_kernels.ops.reference import rank_match_reference_, sort_rows_reference
    from tests.helpers import BACKENDS, assert_bitwise_equal

    @pytest.fixture(scope="module")
    def ranks(tmp_path_factory):
        outdir = tmp_path_factory.mktemp("laperm_dist")
        return run_ranks(__file__, WORLD, outdir, LAUNCH_TIMEOUT_S)

    def _scenario(ranks, name, backend):
        if backend not in ranks[0]["backends"]:
            pytest.skip(f"backend {backend!r} not available in the workers")
        results = [r[(name, backend)] for r in ranks]
        for rank, res in enumerate(results):
            assert "error" not in res, f"rank {rank}:\n{res['error']}"
        return results

    def _rows_sort_to(w: torch.Tensor, s: torch.Tensor) -> bool:
        rows = w.reshape(w.shape[0], -1)
        return torch.equal(rows.sort(1).values, s.reshape(rows.shape))

    @BACKENDS
    def test_ddp_ranks_identical_after_every_sync(ranks, backend):
        r0, r1 = _scenario(ranks, "ddp", backend)
        # Different data on each rank: alone, their gradients (and weights) would diverge.
        assert not torch.equal(r0["local_grad"], r1["local_grad"])
        assert r0["step_count"] == r1["step_count"] == DDP_STEPS
        assert len(r0["syncs"]) == len(r1["syncs"]) == DDP_STEPS // DDP_K
        assert sorted(r0["S"]) == ["0.weight", "2.weight"]
        for n in r0["S"]:
            assert_bitwise_equal(r0["S"][n], r1["S"][n], f"S of {n}")
            assert_bitwise_equal(r0["S"][n], sort_rows_reference(r0["init"][n]), f"S of {n}")
        for i, (w0, w1) in enumerate(zip(r0["syncs"], r1["syncs"])):
            for n in w0:
                assert_bitwise_equal(w0[n], w1[n], f"{n} at sync {i + 1}, rank 0 vs 1")
                if n in r0["S"]:
                    assert _rows_sort_to(w0[n], r0["S"][n]), (n, i)
        last = r0["syncs"][-1]
        assert not torch.equal(last["0.weight"], r0["init"]["0.weight"])  # it trained
        assert not torch.equal(last["0.bias"], r0["init"]["0.bias"])

    @BACKENDS
    def test_dtensor_shard0_permutes_local_shards(ranks, backend):
        results = _scenario(ranks, "dtensor", backend)
        if "skip" in results[0]:
            pytest.skip(results[0]["skip"])
        for rank, res in enumerate(results):
            assert res["is_dtensor"] == res["is_dtensor_after"] == [True, True]
            assert res["placements"] == res["placements_after"] == ["(Shard(dim=0),)"] * 2
            assert res["storage"] == res["storage_after"]  # permuted in place
            assert res["S_types"] == ["DTensor", "DTensor"]  # S is sharded like its weight
            assert not res["bias_permuted"]  # 1-D, replicated: skipped by default
            expected_S = [sort_rows_reference(f.chunk(WORLD, 0)[rank]) for f in res["full_init"]]
            assert [tuple(s.shape) for s in expected_S] == [
                (4 - rank, 5),
                (2, 3, 2, 2),
            ]  # 7 rows split 4 + 3
            assert res["state_dict_shapes"] == {0: (7, 5), 1: (4, 3, 2, 2)}  # whole shapes
            assert (
                res["partial_error"]
                and "parameter 'fc.weight' is a DTensor placed as (Partial(sum),)"
                in res["partial_error"]
            ), res["partial_error"]
            for s, e in zip(res["S"], expected_S):
                assert_bitwise_equal(s, e, f"rank {rank}: S of the local shard")
            moved = 0
            for rec in res["records"]:
                t = rec["step"]
                for i, (pre, post, s) in enumerate(zip(rec["pre"], rec["post"], expected_S)):
                    what = f"rank {rank}, param {i}, step {t}"
                    if t % DT_K == 0:
                        expected = rank_match_reference_(pre.clone(), s)
                        assert_bitwise_equal(post, expected, what)
                        assert _rows_sort_to(post, s), what
                        moved += not torch.equal(pre, post)
                    else:
                        assert_bitwise_equal(post, pre, what + " (no sync)")
                        assert not _rows_sort_to(post, s), what
            assert moved == 2 * (DT_STEPS // DT_K)
            # Globally: the gathered tensor's rows are permutations of the full initial rows.
            for full_after, full_init in zip(res["full_after"], res["full_init"]):
                assert _rows_sort_to(full_after, sort_rows_reference(full_init))
        for a, b in zip(results[0]["full_after"], results[1]["full_after"]):
            assert_bitwise_equal(a, b, "gathered tensors, rank 0 vs 1")


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(_worker)
