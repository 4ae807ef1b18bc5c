"""DTensor placements that split rows across ranks, on 2 gloo ranks (CPU, loopback).

* FSDP2 over GPT-2's ``Conv1D`` (``[in, out]``, units on dim 1, sharded on dim 0: a tiny
  transformers GPT-2 from a config, or a stand-in module where transformers is missing)
  and over a ``ConvTranspose1d`` (``[in, out, k]``, also ``row_dim=1``);
* tensor parallelism: ``ColwiseParallel`` (``Shard(0)``: rows whole) then
  ``RowwiseParallel`` (``Shard(1)``: every row split) on an MLP.

Shards are uneven where the rows are moved (9 -> 5 + 4, 5 -> 3 + 2). At every sync, the
gathered weights after it must be, bit for bit, the reference rank match of the gathered
weights before it against the sorted rows of the gathered initial weights; under FSDP2
the whole trajectory must also equal one process's. A ``dcp.save`` / ``dcp.load`` resume
of each continues bit-identically. Checkpoint restores: an S saved replicated must be
redistributed to a sharded parameter's placements; a DTensor S of the wrong global shape
is refused, naming the parameter. (A 2-D FSDP2 x TP mesh and a resume onto another world
size: test_mesh_2d.py.)
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

WORLD = 2
K, STEPS, FIRST = 2, 6, 3  # syncs at 2, 4, 6; the checkpoint after step 3 (not a sync)
LAUNCH_TIMEOUT_S = 240
CASES = ("gpt2_fsdp2", "conv_transpose_fsdp2", "tp_mlp")


# --- the workers ------------------------------------------------------------------------


class StandInConv1D(torch.nn.Module):
    """GPT-2's Conv1D where transformers is missing: weight [in, out], y = x @ W + b."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_in, n_out) * 0.3)
        self.bias = torch.nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


class StandInGPT2(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(31, 9)
        self.h = torch.nn.ModuleList(
            [torch.nn.Sequential(StandInConv1D(9, 36), torch.nn.GELU(), StandInConv1D(36, 9))]
        )
        self.head = torch.nn.Linear(9, 31)

    def forward(self, input_ids, labels):
        x = self.wte(input_ids)
        for block in self.h:
            x = x + block(x)
        logits = self.head(x)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def _stand_in_groups(model):
    convs = [m.weight for m in model.modules() if isinstance(m, StandInConv1D)]
    rest = [p for p in model.parameters() if all(p is not c for c in convs)]
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        {"params": convs, "row_dim": 1, "param_names": [names[id(p)] for p in convs]},
        {"params": rest, "param_names": [names[id(p)] for p in rest]},
    ]


def _gpt2(seed: int):
    """(model, its blocks, groups(model), loss(model, t)): a tiny GPT-2 (n_embd 9, 3
    heads: Conv1D weights [9, 27], [9, 9], [9, 36], [36, 9]) without dropout."""
    import laperm_kernels as lk

    torch.manual_seed(seed)
    try:
        import transformers
    except ImportError:
        model = StandInGPT2()
        return model, list(model.h), _stand_in_groups, lambda m, ids: m(ids, ids)
    import warnings

    config = transformers.GPT2Config(
        vocab_size=31,
        n_positions=8,
        n_embd=9,
        n_layer=1,
        n_head=3,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.GPT2LMHeadModel(config)
    return (
        model,
        list(model.transformer.h),
        lk.param_groups,
        lambda m, ids: m(input_ids=ids, labels=ids).loss,
    )


def _conv_transpose(seed: int):
    import laperm_kernels as lk

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.ConvTranspose1d(6, 5, 3), torch.nn.Tanh())
    return model, [], lk.param_groups, lambda m, x: m(x).square().mean()


def _mlp(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5))
    return model, [], _named_group, lambda m, x: m(x).square().mean()


def _named_group(model):
    return [
        {
            "params": list(model.parameters()),
            "param_names": [n for n, _ in model.named_parameters()],
        }
    ]


def _batch(case: str, t: int):
    g = torch.Generator().manual_seed(t)  # the same batch t on every rank and in every run
    if case == "gpt2_fsdp2":
        return torch.randint(0, 31, (2, 8), generator=g)
    if case == "conv_transpose_fsdp2":
        return torch.randn(2, 6, 4, generator=g)
    return torch.randn(4, 6, generator=g)


def _build(case: str, mesh, seed: int, distributed: bool = True):
    """(model, LaPerm, loss): the case's model, sharded (or, if not ``distributed``, as
    one process holds it), and LaPerm(Adam) over its groups."""
    import laperm_kernels as lk

    make = {"gpt2_fsdp2": _gpt2, "conv_transpose_fsdp2": _conv_transpose, "tp_mlp": _mlp}[case]
    model, blocks, groups, loss = make(seed)
    if distributed and case == "tp_mlp":
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            parallelize_module,
        )

        parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    elif distributed:
        from torch.distributed.fsdp import fully_shard

        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    # groups after sharding: fully_shard and parallelize_module replace the parameters
    return model, lk.LaPerm(torch.optim.Adam(groups(model), lr=2e-2), sync_period=K), loss


def _case(case: str, mesh, outdir: str):
    model, opt, loss = _build(case, mesh, seed=0)
    weights = permuted(opt)
    out = {
        "init": {n: full(p) for n, (p, _) in weights.items()},
        "row_dim": {n: d for n, (_, d) in weights.items()},
        "placements": {n: str(p.placements) for n, (p, _) in weights.items()},
        "storage": {n: p.to_local().data_ptr() for n, (p, _) in weights.items()},
        "syncs": [],
    }
    train(model, opt, loss, lambda t: _batch(case, t), 1, STEPS, out["syncs"])
    out["storage_after"] = {n: p.to_local().data_ptr() for n, (p, _) in weights.items()}
    out["final"] = {n: full(p) for n, p in model.named_parameters()}

    if case != "tp_mlp":  # FSDP2 alone: one process's run, the same data
        plain, popt, ploss = _build(case, mesh, seed=0, distributed=False)
        out["single_process"] = []
        train(plain, popt, ploss, lambda t: _batch(case, t), 1, STEPS, out["single_process"])

    first, fopt, floss = _build(case, mesh, seed=0)
    train(first, fopt, floss, lambda t: _batch(case, t), 1, FIRST)
    path = os.path.join(outdir, f"ckpt-{case}")
    save(first, fopt, path)
    resumed, ropt, rloss = _build(case, mesh, seed=123)  # another init, then the checkpoint
    out["fresh_S"] = {n: ropt.sorted_inits[p].full_tensor() for n, (p, _) in permuted(ropt).items()}
    load(resumed, ropt, path)
    out["loaded_S"] = {
        n: ropt.sorted_inits[p].full_tensor() for n, (p, _) in permuted(ropt).items()
    }
    out["step_after_load"] = ropt.step_count
    train(resumed, ropt, rloss, lambda t: _batch(case, t), FIRST + 1, STEPS)
    out["resumed"] = {n: full(p) for n, p in resumed.named_parameters()}
    return out


def _restores(mesh, rank: int):
    """Loading S saved in other placements, and refusing one of the wrong global shape."""
    from torch import nn
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    import laperm_kernels as lk

    torch.manual_seed(0)
    saved_full, own_full = torch.randn(7, 6), torch.randn(7, 6)
    source = nn.Parameter(distribute_tensor(saved_full, mesh, [Replicate()]))
    sd = lk.LaPerm(torch.optim.SGD([source], lr=0.1)).state_dict()
    out = {"saved_placements": str(sd["state"][0]["sorted_init"].placements)}
    for name, placement, row_dim in (
        ("shard0", Shard(0), 0),
        ("shard1", Shard(1), 0),
        ("shard0_row_dim1", Shard(0), 1),
    ):
        p = nn.Parameter(distribute_tensor(own_full, mesh, [placement]))
        opt = lk.LaPerm(torch.optim.SGD([{"params": [p], "row_dim": row_dim}], lr=0.1))
        before = opt.sorted_inits[p].full_tensor()
        opt.load_state_dict(sd if row_dim == 0 else _transposed(sd, saved_full, mesh))
        s = opt.sorted_inits[p]
        out[name] = {
            "before": before,
            "loaded": s.full_tensor(),
            "local": s.to_local().clone(),
            "placements": str(s.placements),
        }
    p = nn.Parameter(distribute_tensor(own_full, mesh, [Shard(0)]))
    opt = lk.LaPerm(torch.optim.SGD([{"params": [p], "param_names": ["fc.weight"]}], lr=0.1))
    wrong = opt.state_dict()
    wrong["state"][0]["sorted_init"] = distribute_tensor(torch.randn(8, 6), mesh, [Shard(0)])
    kept = opt.sorted_inits[p]
    try:
        opt.load_state_dict(wrong)
        out["wrong_shape_error"] = None
    except ValueError as e:
        out["wrong_shape_error"] = str(e)
    out["wrong_shape_kept"] = opt.sorted_inits[p] is kept
    return out


def _transposed(sd, full, mesh):
    """``sd`` with S of the rows of ``full.T`` (a row_dim=1 parameter's rows are ``full``'s
    columns), replicated."""
    from torch.distributed.tensor import Replicate, distribute_tensor

    import laperm_kernels as lk

    s = lk.sort_rows(full.t().contiguous())
    return {**sd, "state": {0: {"sorted_init": distribute_tensor(s, mesh, [Replicate()])}}}


def _worker(rank: int, world: int, outdir: str) -> None:
    import time

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    results = {}
    for case in (*CASES, "restores"):
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results[case] = (
                    _restores(mesh, rank) if case == "restores" else _case(case, mesh, outdir)
                )
            results[case]["laperm_warnings"] = [
                str(w.message) for w in caught if "LaPerm" in str(w.message)
            ]
        except Exception:  # reported by the parent
            results[case] = {"error": traceback.format_exc()}
        results[case]["seconds"] = time.perf_counter() - start
        dist.barrier()
    try:
        import transformers  # noqa: F401

        results["gpt2"] = "transformers"
    except ImportError:
        results["gpt2"] = "stand-in"
    torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))


# --- the parent (pytest) ----------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    from laperm_kernels.ops.reference import rank_match_reference_, sort_rows_reference
    from tests.helpers import assert_bitwise_equal

    skip_without_fully_shard()

    @pytest.fixture(scope="module")
    def ranks(tmp_path_factory):
        outdir = tmp_path_factory.mktemp("laperm_row_split")
        return run_ranks(__file__, WORLD, outdir, LAUNCH_TIMEOUT_S)

    def _results(ranks, case):
        out = [r[case] for r in ranks]
        for rank, res in enumerate(out):
            assert "error" not in res, f"rank {rank}:\n{res['error']}"
        return out

    def _rows(w, row_dim):
        """A contiguous copy of ``w``'s rows (units on dim 0)."""
        return w.movedim(row_dim, 0).clone(memory_format=torch.contiguous_format)

    SPLIT = {
        "gpt2_fsdp2": "(Shard(dim=0),)",
        "conv_transpose_fsdp2": "(Shard(dim=0),)",
        "tp_mlp": "(Shard(dim=1),)",
    }

    @pytest.mark.parametrize("case", CASES)
    def test_every_sync_is_the_reference_rank_match_of_the_gathered_weights(ranks, case):
        r0, r1 = _results(ranks, case)
        row_split = [
            n
            for n, pl in r0["placements"].items()
            if pl == SPLIT[case] and (case != "tp_mlp" or n == "2.weight")
        ]
        assert row_split, r0["placements"]  # the case moves rows
        if case == "gpt2_fsdp2" and ranks[0]["gpt2"] == "transformers":
            assert {r0["row_dim"][n] for n in row_split} == {1}
            assert len(row_split) == 4  # c_attn, c_proj, c_fc, mlp c_proj
        assert r0["storage"] == r0["storage_after"]  # permuted in place
        assert r0["laperm_warnings"] == r1["laperm_warnings"] == []  # FSDP2 changed nothing
        assert len(r0["syncs"]) == STEPS // K
        for rec0, rec1 in zip(r0["syncs"], r1["syncs"]):
            for name, pre in rec0["pre"].items():
                what = f"{name} at the sync after step {rec0['step']}"
                d = r0["row_dim"][name]
                S = sort_rows_reference(_rows(r0["init"][name], d))
                expected = rank_match_reference_(_rows(pre, d), S)
                assert_bitwise_equal(_rows(rec0["post"][name], d), expected, what)
                assert not torch.equal(rec0["post"][name], pre), f"{what}: nothing moved"
                assert_bitwise_equal(rec1["post"][name], rec0["post"][name], what + ", rank 1")
        for name in r0["final"]:
            assert_bitwise_equal(r1["final"][name], r0["final"][name], f"{name}: rank 1 vs 0")

    @pytest.mark.parametrize("case", ["gpt2_fsdp2", "conv_transpose_fsdp2"])
    def test_fsdp2_trajectory_equals_one_process(ranks, case):
        r0, _ = _results(ranks, case)
        for rec, alone in zip(r0["syncs"], r0["single_process"]):
            for name in rec["post"]:
                assert_bitwise_equal(
                    rec["post"][name],
                    alone["post"][name],
                    f"{name} after step {rec['step']}: FSDP2 vs one process",
                )

    @pytest.mark.parametrize("case", CASES)
    def test_dcp_resume_is_bit_identical(ranks, case):
        for rank, res in enumerate(_results(ranks, case)):
            assert res["step_after_load"] == FIRST
            for name, S in res["loaded_S"].items():
                d = res["row_dim"][name]
                assert_bitwise_equal(S, sort_rows_reference(_rows(res["init"][name], d)), name)
                assert not torch.equal(S, res["fresh_S"][name])  # the load replaced it
            for name, want in res["final"].items():
                assert_bitwise_equal(res["resumed"][name], want, f"rank {rank}: {name}")

    def test_an_s_saved_replicated_is_redistributed_to_the_parameters_placements(ranks):
        torch.manual_seed(0)
        saved_full = torch.randn(7, 6)
        for rank, res in enumerate(_results(ranks, "restores")):
            assert res["saved_placements"] == "(Replicate(),)"
            for name, row_dim, placements in (
                ("shard0", 0, "(Shard(dim=0),)"),
                ("shard1", 0, "(Shard(dim=0),)"),
                ("shard0_row_dim1", 1, "(Shard(dim=0),)"),
            ):
                got = res[name]
                S = sort_rows_reference(_rows(saved_full, row_dim))
                assert got["placements"] == placements, name
                assert not torch.equal(got["before"], S), name  # the load must change S
                assert_bitwise_equal(got["loaded"], S, name)
                assert_bitwise_equal(got["local"], S.chunk(WORLD, 0)[rank], f"{name}, local")

    def test_a_dtensor_s_of_the_wrong_global_shape_is_refused(ranks):
        for res in _results(ranks, "restores"):
            assert (
                res["wrong_shape_error"]
                and "parameter 'fc.weight'" in res["wrong_shape_error"]
                and "(8, 6)" in res["wrong_shape_error"]
            ), res["wrong_shape_error"]
            assert res["wrong_shape_kept"]

    def test_run_times(ranks):
        """Each case's seconds in the workers (reported with -rP; a bound for CI)."""
        times = {case: round(ranks[0][case]["seconds"], 2) for case in (*CASES, "restores")}
        print(f"gloo row-split cases ({ranks[0]['gpt2']} GPT-2), seconds: {times}")
        assert all(t < 60 for t in times.values()), times


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(_worker)
