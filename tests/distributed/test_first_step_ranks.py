"""LaPerm's first-step check across 2 gloo ranks (laperm_kernels/optim/first_step.py).

* DDP in the wrong order: every rank initialises with its own seed and builds LaPerm
  before ``DDP(model)``, whose broadcast then gives every rank rank 0's weights. Each
  rank's S came from its own initialisation, so before the check the ranks differed
  after the first sync. Now the first step notices the change on rank 1, every rank takes
  S again from the broadcast weights, and the ranks stay bit-identical at every sync.
* Ranks that start from different weights without anything to make them equal: a
  ValueError on every rank at the first step, naming the parameter, before the inner
  step writes anything; ``check_ranks=False`` lets them run (different models on purpose).
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings

import torch

# the repository root, for ``tests.*`` when run as a script (the workers)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.distributed.dist_launch import run_ranks, worker_main  # noqa: E402

WORLD = 2
K, STEPS = 3, 9
LAUNCH_TIMEOUT_S = 120


def _model(seed: int):
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))


def _batch(rank: int, t: int):
    g = torch.Generator().manual_seed(100 * t + rank)  # different data on every rank
    return torch.randn(8, 10, generator=g), torch.randint(0, 4, (8,), generator=g)


def _ddp_wrong_order(rank: int):
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    import laperm_kernels as lk

    model = _model(seed=rank)  # per-rank seeds
    opt = lk.LaPerm(torch.optim.Adam(lk.param_groups(model), lr=1e-2), sync_period=K)
    ddp = DDP(model)  # broadcasts rank 0's weights
    out = {"init": {n: p.detach().clone() for n, p in model.named_parameters()}, "syncs": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(1, STEPS + 1):
            x, y = _batch(rank, t)
            opt.zero_grad()
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
            if t == 1:
                out["S"] = {
                    n: opt.sorted_inits[p].clone()
                    for n, p in model.named_parameters()
                    if p in opt.sorted_inits
                }
            if t % K == 0:
                out["syncs"].append({n: p.detach().clone() for n, p in model.named_parameters()})
    out["warnings"] = [str(w.message) for w in caught if "LaPerm" in str(w.message)]
    return out


def _ranks_differ(rank: int, check_ranks: bool):
    import torch.nn.functional as F

    import laperm_kernels as lk

    model = _model(seed=rank)  # nothing makes them equal
    opt = lk.LaPerm(
        torch.optim.Adam(lk.param_groups(model), lr=1e-2), sync_period=K, check_ranks=check_ranks
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = _batch(rank, 1)
    F.cross_entropy(model(x), y).backward()
    out = {"error": None}
    try:
        opt.step()
    except ValueError as e:
        out["error"] = str(e)
    out["unchanged"] = all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    out["step_count"] = opt.step_count
    return out


def _worker(rank: int, world: int, outdir: str) -> None:
    import time

    import torch.distributed as dist

    results = {}
    cases = {
        "ddp_wrong_order": lambda: _ddp_wrong_order(rank),
        "differ": lambda: _ranks_differ(rank, True),
        "differ_unchecked": lambda: _ranks_differ(rank, False),
    }
    for name, case in cases.items():
        start = time.perf_counter()
        try:
            results[name] = case()
        except Exception:  # reported by the parent
            results[name] = {"failure": traceback.format_exc()}
        results[name]["seconds"] = time.perf_counter() - start
        dist.barrier()
    torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))


# --- the parent (pytest) ----------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    from laperm_kernels.ops.reference import sort_rows_reference
    from tests.helpers import assert_bitwise_equal

    @pytest.fixture(scope="module")
    def ranks(tmp_path_factory):
        outdir = tmp_path_factory.mktemp("laperm_first_step")
        return run_ranks(__file__, WORLD, outdir, LAUNCH_TIMEOUT_S)

    def _results(ranks, case):
        out = [r[case] for r in ranks]
        for rank, res in enumerate(out):
            assert "failure" not in res, f"rank {rank}:\n{res['failure']}"
        return out

    def test_ddp_built_after_laperm_stays_identical_across_ranks(ranks):
        r0, r1 = _results(ranks, "ddp_wrong_order")
        for name in r0["init"]:  # DDP's broadcast: rank 0's initialisation everywhere
            assert_bitwise_equal(r1["init"][name], r0["init"][name], name)
        assert len(r0["syncs"]) == STEPS // K
        for i, (w0, w1) in enumerate(zip(r0["syncs"], r1["syncs"])):
            for name in w0:
                diff = (w1[name] - w0[name]).abs().max().item()
                assert_bitwise_equal(
                    w1[name], w0[name], f"{name} at sync {i + 1} (max |rank1 - rank0| = {diff})"
                )
        for name in ("0.weight", "2.weight"):  # S: rank 0's initialisation, on every rank
            want = sort_rows_reference(r0["init"][name])
            assert_bitwise_equal(r0["S"][name], want, f"rank 0: S of {name}")
            assert_bitwise_equal(r1["S"][name], want, f"rank 1: S of {name}")
        assert r0["warnings"] == []  # rank 0's weights did not change
        [warning] = r1["warnings"]
        assert "parameter '0.weight', parameter '2.weight' changed in place" in warning, warning
        assert "taken again" in warning

    def test_ranks_with_different_weights_are_refused_at_the_first_step(ranks):
        for rank, res in enumerate(_results(ranks, "differ")):
            assert (
                res["error"]
                and "parameter '0.weight' differs between rank 0 and rank 1" in res["error"]
                and "check_ranks=False" in res["error"]
            ), res["error"]
            assert res["unchanged"] and res["step_count"] == 0, rank  # nothing written

    def test_check_ranks_false_lets_different_models_run(ranks):
        for res in _results(ranks, "differ_unchecked"):
            assert res["error"] is None
            assert not res["unchanged"] and res["step_count"] == 1

    def test_run_times(ranks):
        times = {case: round(ranks[0][case]["seconds"], 2) for case in ranks[0]}
        print(f"gloo first-step cases, seconds: {times}")
        assert all(t < 60 for t in times.values()), times


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(_worker)
