"""Which rows each of 2 gloo ranks holds when a sync moves split rows whole
(laperm_kernels/optim/sharded_rows.py, layouts.py), checked row by row against the whole
tensors, with even shards and uneven ones (5 units -> 3 + 2, 7 -> 4 + 3).

The workers run in stages, every layout through a stage before the next, and save what
they recorded after each layout: this rank's rows, its part of S (no collective after the
move) and S's global shape, then rows written back (a redistribution back), then a LaPerm
sync. A misplaced row fails the assertion of its stage, naming the layout and the rank;
where a bug makes the ranks' collectives disagree in size (gloo then aborts the process),
the stages before are still checked and the tests from the one that aborted on fail with
the ranks' logs. The training runs over the same layouts: test_row_split.py.
"""

from __future__ import annotations

import os
import sys
import traceback

import torch

# the repository root, for ``tests.*`` when run as a script (the workers)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.distributed.dist_launch import launch, worker_main  # noqa: E402

WORLD = 2
LAUNCH_TIMEOUT_S = 120
STAGES = ("rows", "S", "S_shape", "written_back", "synced")
# name: (whole shape, the placement's sharded dim, row_dim)
LAYOUTS = {  # even shards first: a bug that aborts gloo on uneven ones shows on them first
    "fsdp2_conv1d_even_shards": ((6, 4), 0, 1),  # 4 units -> 2 + 2
    "rowwise_parallel_linear": ((5, 9), 1, 0),  # RowwiseParallel: Shard(1), rows split
    "fsdp2_conv1d": ((9, 5), 0, 1),  # GPT-2 Conv1D [in, out] under FSDP2: Shard(0)
    "fsdp2_square_conv1d": ((5, 5), 0, 1),  # the same, square: no shape tells rows apart
    "fsdp2_conv_transpose": ((6, 5, 3), 0, 1),  # ConvTranspose1d [in, out, k]: Shard(0)
    "shard_of_a_kernel_dim": ((5, 2, 7), 2, 0),  # any other dim split: Shard(2)
    "rows_kept_whole": ((7, 4), 0, 0),  # Shard(0) of the units: no move
}


def _whole(shape, seed: int) -> torch.Tensor:
    """The same distinct values on every rank."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- the workers ------------------------------------------------------------------------


def _parameter(mesh, shape, dim: int, seed: int = 0):
    from torch import nn
    from torch.distributed.tensor import Shard, distribute_tensor

    return nn.Parameter(distribute_tensor(_whole(shape, seed), mesh, [Shard(dim)]))


def _stage(stage: str, mesh, shape, dim: int, row_dim: int) -> torch.Tensor:
    import laperm_kernels as lk
    from laperm_kernels.optim.sharded_rows import sync_rows, whole_rows

    p = _parameter(mesh, shape, dim)
    if stage == "rows":  # this rank's rows, after the move
        return whole_rows(p, row_dim).clone()
    if stage == "written_back":  # every row reversed, in this rank's rows, then put back
        with torch.no_grad():
            rows, write_back = sync_rows([(p, row_dim)])
            rows[0].copy_(rows[0].flip(1))
            write_back()
        return p.full_tensor()
    opt = lk.LaPerm(
        torch.optim.SGD([{"params": [p], "row_dim": row_dim}], lr=0.1), check_finite=False
    )
    if stage == "S":  # this rank's part of S
        return opt.sorted_inits[p].to_local().clone()
    if stage == "S_shape":  # the whole S's, as its DTensor says (what a checkpoint saves)
        return torch.tensor(opt.sorted_inits[p].shape)
    opt.sync()  # past the first-step check
    with torch.no_grad():
        p.to_local().copy_(_parameter(mesh, shape, dim, seed=1).to_local())
    opt.sync()
    return p.full_tensor()


def _worker(rank: int, world: int, outdir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    results = {}
    for stage in STAGES:
        for name, layout in LAYOUTS.items():
            try:
                results[stage, name] = _stage(stage, mesh, *layout)
            except Exception:  # reported by the parent
                results[stage, name] = traceback.format_exc()
            dist.barrier()
            torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))  # what came so far


# --- the parent (pytest) ----------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    from laperm_kernels.ops.reference import rank_match_reference_, sort_rows_reference
    from tests.helpers import assert_bitwise_equal

    pytest.importorskip("torch.distributed.tensor")

    @pytest.fixture(scope="module")
    def ranks(tmp_path_factory):
        """(each rank's saved results, the launch's report): the workers may have stopped
        early, the results then hold the stages they finished."""
        outdir = tmp_path_factory.mktemp("laperm_split_rows")
        codes, report = launch(__file__, WORLD, outdir, LAUNCH_TIMEOUT_S)
        saved = [outdir / f"rank{r}.pt" for r in range(WORLD)]
        results = [torch.load(f, weights_only=False) if f.exists() else {} for f in saved]
        return results, f"exit codes {codes}\n{report}"

    def _recorded(ranks, stage: str, name: str) -> list:
        """Every rank's tensor of ``stage`` for layout ``name``; fails the test where a
        rank raised or stopped before it."""
        results, report = ranks
        out = []
        for rank, res in enumerate(results):
            if (stage, name) not in res:
                pytest.fail(f"rank {rank} stopped before stage {stage!r} of {name}:\n{report}")
            got = res[stage, name]
            assert isinstance(got, torch.Tensor), f"{stage} of {name}, rank {rank}:\n{got}"
            out.append(got)
        return out

    def _rows(w, row_dim):
        return w.movedim(row_dim, 0).contiguous()

    @pytest.mark.parametrize("name", list(LAYOUTS))
    def test_each_rank_holds_its_own_rows(ranks, name):
        shape, _, row_dim = LAYOUTS[name]
        rows = _rows(_whole(shape, 0), row_dim).chunk(WORLD)
        for rank, got in enumerate(_recorded(ranks, "rows", name)):
            assert_bitwise_equal(got, rows[rank], f"{name}, rank {rank}: its rows")

    @pytest.mark.parametrize("name", list(LAYOUTS))
    def test_each_rank_holds_its_part_of_s(ranks, name):
        shape, _, row_dim = LAYOUTS[name]
        S = sort_rows_reference(_rows(_whole(shape, 0), row_dim)).chunk(WORLD)
        for rank, got in enumerate(_recorded(ranks, "S", name)):
            assert_bitwise_equal(got, S[rank], f"{name}, rank {rank}: its part of S")

    @pytest.mark.parametrize("name", list(LAYOUTS))
    def test_s_is_a_dtensor_of_the_whole_rows_shape(ranks, name):
        shape, _, row_dim = LAYOUTS[name]
        rows_shape = _rows(_whole(shape, 0), row_dim).shape
        for rank, got in enumerate(_recorded(ranks, "S_shape", name)):
            assert got.tolist() == list(rows_shape), f"{name}, rank {rank}: S's global shape"

    @pytest.mark.parametrize("name", list(LAYOUTS))
    def test_rows_written_back_land_in_their_own_place(ranks, name):
        shape, _, row_dim = LAYOUTS[name]
        expected = _rows(_whole(shape, 0), row_dim).flip(1).movedim(0, row_dim).contiguous()
        for rank, got in enumerate(_recorded(ranks, "written_back", name)):
            assert_bitwise_equal(got, expected, f"{name}, rank {rank}: the weight written back")

    @pytest.mark.parametrize("name", list(LAYOUTS))
    def test_a_sync_is_the_reference_rank_match_of_the_whole_weight(ranks, name):
        shape, _, row_dim = LAYOUTS[name]
        S = sort_rows_reference(_rows(_whole(shape, 0), row_dim))
        expected = rank_match_reference_(_rows(_whole(shape, 1), row_dim), S)
        for rank, got in enumerate(_recorded(ranks, "synced", name)):
            assert_bitwise_equal(_rows(got, row_dim), expected, f"{name}, rank {rank}: a sync")


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(_worker)
