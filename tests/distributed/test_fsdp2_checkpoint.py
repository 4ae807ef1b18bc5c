"""LaPerm under FSDP2 (``fully_shard``) with torch.distributed.checkpoint, on a CPU mesh.

Two ranks train a sharded MLP, save model and optimizer with ``dcp.save`` (through
``get_model_state_dict`` / ``get_optimizer_state_dict``), and a fresh model, initialised
differently, resumes from the checkpoint (``dcp.load`` + ``set_*_state_dict``): after as
many steps again its weights must be bit for bit those of the uninterrupted run, with an
even (32 rows: 16 + 16) and an uneven (33 rows: 17 + 16) split of the first layer's
units. Then one process (a world of one) resumes from the two ranks' checkpoint: the
sorted initial weights are resharded onto it, equal to those of the original
initialisation, and every row after further syncs is a permutation of them.
"""

from __future__ import annotations

import os
import sys
import traceback

import torch

# the repository root, for ``tests.*`` when run as a script (the workers)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.distributed.dist_launch import run_ranks, skip_without_fully_shard, worker_main  # noqa: E402
from tests.distributed.dist_steps import full, load, save  # noqa: E402

K, FIRST = 3, 5  # syncs every 3 steps; the checkpoint after step 5 (not a sync)
HIDDEN = {"even": 32, "uneven": 33}
LAUNCH_TIMEOUT_S = 240


# --- the workers ------------------------------------------------------------------------


def _build(mesh, hidden: int, seed: int):
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    import laperm_kernels as lk

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, 4))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=K)


def _train(model, opt, first: int, last: int) -> None:
    import torch.nn.functional as F

    for t in range(first, last + 1):  # the same batch t on every rank and in every run
        g = torch.Generator().manual_seed(t)
        x, y = torch.randn(8, 10, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def _whole(model):
    return {n: full(p) for n, p in model.named_parameters()}


def _resume_case(mesh, hidden: int, outdir: str, case: str):
    end = 2 * FIRST + 2  # ends on a sync step (12)
    model, opt = _build(mesh, hidden, seed=0)
    _train(model, opt, 1, end)
    uninterrupted = _whole(model)

    model, opt = _build(mesh, hidden, seed=0)
    _train(model, opt, 1, FIRST)
    local_rows = {
        n: tuple(opt.sorted_inits[p].to_local().shape)
        for n, p in model.named_parameters()
        if p in opt.sorted_inits
    }
    save(model, opt, os.path.join(outdir, f"ckpt-{case}"))
    resumed, ropt = _build(mesh, hidden, seed=123)  # another init, then the checkpoint
    load(resumed, ropt, os.path.join(outdir, f"ckpt-{case}"))
    step_after_load = ropt.step_count
    _train(resumed, ropt, FIRST + 1, end)
    return {
        "uninterrupted": uninterrupted,
        "resumed": _whole(resumed),
        "step_after_load": step_after_load,
        "local_rows": local_rows,
    }


def _reshard_case(mesh, hidden: int, outdir: str):
    """A world of one resumes from the two ranks' checkpoint."""
    from torch import nn

    import laperm_kernels as lk

    torch.manual_seed(0)  # the original initialisation, whole, for the expected S
    init = nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, 4))
    expected_S = {n: lk.sort_rows(p.detach()) for n, p in init.named_parameters() if p.dim() >= 2}
    model, opt = _build(mesh, hidden, seed=123)
    load(model, opt, os.path.join(outdir, "ckpt-uneven"))
    named = dict(model.named_parameters())
    S_loaded = {n: opt.sorted_inits[named[n]].full_tensor() for n in expected_S}
    _train(model, opt, FIRST + 1, 3 * K)  # syncs at steps 6 and 9
    return {
        "expected_S": expected_S,
        "S_loaded": S_loaded,
        "step": opt.step_count,
        "weights": {n: named[n].full_tensor().detach() for n in expected_S},
    }


def _worker(rank: int, world: int, outdir: str, mode: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    results = {}
    cases = HIDDEN.items() if mode == "resume" else [("reshard", HIDDEN["uneven"])]
    for case, hidden in cases:
        try:
            results[case] = (
                _resume_case(mesh, hidden, outdir, case)
                if mode == "resume"
                else _reshard_case(mesh, hidden, outdir)
            )
        except Exception:  # reported by the parent
            results[case] = {"error": traceback.format_exc()}
        dist.barrier()
    torch.save(results, os.path.join(outdir, f"{mode}-rank{rank}.pt"))


# --- the parent (pytest) ----------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    from tests.helpers import assert_bitwise_equal

    skip_without_fully_shard()

    @pytest.fixture(scope="module")
    def checkpoints(tmp_path_factory):
        outdir = tmp_path_factory.mktemp("laperm_fsdp2")
        results = {}
        for mode, world in (("resume", 2), ("reshard", 1)):  # reshard reads resume's files
            results[mode] = run_ranks(
                __file__, world, outdir, LAUNCH_TIMEOUT_S, f"{mode}-rank{{rank}}.pt", [mode]
            )
        return results

    def _case(checkpoints, mode, case):
        out = [r[case] for r in checkpoints[mode]]
        for rank, res in enumerate(out):
            assert "error" not in res, f"rank {rank}:\n{res['error']}"
        return out

    @pytest.mark.parametrize("case", list(HIDDEN))
    def test_resume_from_a_distributed_checkpoint_is_bit_identical(checkpoints, case):
        for rank, res in enumerate(_case(checkpoints, "resume", case)):
            assert res["step_after_load"] == FIRST
            first = HIDDEN[case]
            assert res["local_rows"]["0.weight"] == (
                (first + 1) // 2 if rank == 0 else first // 2,
                10,
            )
            for name, want in res["uninterrupted"].items():
                assert_bitwise_equal(res["resumed"][name], want, f"rank {rank}: {name}")

    def test_two_ranks_reshard_onto_one(checkpoints):
        [res] = _case(checkpoints, "reshard", "reshard")
        assert res["step"] == 3 * K
        for name, S in res["expected_S"].items():
            assert_bitwise_equal(res["S_loaded"][name], S, f"S of {name}, resharded")
            rows = res["weights"][name]
            assert torch.equal(rows.sort(dim=1).values, S), name  # each row: a permutation


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(_worker)
