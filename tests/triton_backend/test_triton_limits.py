"""The triton backend's size limits and its all-or-nothing rule, without running a kernel.

* Size limits (docs/triton.md, "Limits"): ``triton_layout.plan_layout`` plans made-up row
  descriptions (addresses are never dereferenced) far beyond any memory: rows of 2^31 - 1
  elements, 3 x 2^30 rows, a million long rows. Tensors on the ``meta`` device check that the public
  entry point refuses before anything is planned or touched.
* All or nothing: with the kernels replaced by recorders, a call allocates its scratch
  and compiles every kernel before its first launch, and launches nothing when the
  allocation fails (the interpreter case ``scratch-oom`` of test_triton.py checks the
  same with the real kernels, bit for bit).

Needs triton importable (for the shipped configurations), not a GPU and not the interpreter.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from laperm_kernels.ops.backends.plan_cache import PlanCache
from laperm_kernels.ops.backends.triton import layout as tl

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="triton is not installed (pip install triton)",
)


@pytest.fixture
def tb():
    from laperm_kernels.ops.backends.triton import backend as tb

    assert tb._kernels() is not None, tb.unavailable_reason()
    return tb


@pytest.fixture
def tk(tb):
    return tb._kernels()


def layout(tb, tk, pieces, max_block=None, chunk=None):
    return tl.plan_layout(
        pieces,
        max_block or tk.MAX_BLOCK,
        chunk or tk.CHUNK,
        {b: rows for b, (rows, _) in tk.BLOCK_CONFIGS.items()},
        tb.SCRATCH_KEYS,
    )


def piece(rows, n, w=1 << 40, s=1 << 41, size=4):
    return (w, s, rows, n, n * size)


# --- the longest row ----------------------------------------------------------------------


def test_rows_longer_than_int32_are_refused(tb, tk):
    with pytest.raises(ValueError, match=r"2,147,483,648 elements .* at most 2,147,483,647"):
        layout(tb, tk, [piece(2, 100), piece(1, 2**31)])
    # empty tensors are fine whatever their row length
    assert layout(tb, tk, [piece(0, 2**40)]) == tl.Layout([], [], 0)


def test_longest_row_plans_within_int32(tb, tk):
    n = tl.MAX_ROW_LENGTH
    [batch] = layout(tb, tk, [piece(1, n)]).batches  # over SCRATCH_KEYS: a batch alone
    chunks = -(-n // tk.CHUNK)
    assert batch.keys == 2**31  # n rounded up to SEGMENT_KEYS
    assert len(batch.programs) == (chunks - 1).bit_length() == 19
    assert batch.programs == [chunks] * 19
    # the last chunk starts below 2^31 and so does every merge program's arithmetic
    assert (chunks - 1) * tk.CHUNK + tk.CHUNK - 1 <= 2**31 - 1
    assert layout(tb, tk, [piece(1, n)]).scratch_keys == 2 * 2**31  # two buffers


def test_meta_tensors_too_long_are_refused_before_anything(tb):
    w = torch.empty(1, 2**31, device="meta")
    with pytest.raises(ValueError, match="too long for the triton backend"):
        tb.run_rows([w], [torch.empty_like(w)])


# --- rows and programs per launch -----------------------------------------------------------


@pytest.mark.parametrize("n", [1, 64, 1000, 8192])
def test_block_launches_are_split_below_int32_rows(tb, tk, n):
    rows = 3 * tl.LAUNCH_ROWS + 5
    out = layout(tb, tk, [piece(rows - 7, n), piece(7, n, w=1 << 50, s=1 << 51)])
    assert [b.rows for b in out.blocks] == [tl.LAUNCH_ROWS] * 3 + [5]
    block = max(tl.MIN_BLOCK, 1 << (n - 1).bit_length())
    assert all(b.block == block for b in out.blocks)
    for b in out.blocks:
        assert sum(p[2] for p in b.pieces) == b.rows
        assert -(-b.rows // tk.BLOCK_CONFIGS[block][0]) <= tl.MAX_PROGRAMS
    # consecutive parts continue where the previous one stopped
    first, second = out.blocks[0].pieces[0], out.blocks[1].pieces[0]
    assert second[0] == first[0] + tl.LAUNCH_ROWS * n * 4
    # the second tensor straddles the last two: 2 rows, then 5 from its third row on
    assert [p[:3] for p in out.blocks[-1].pieces] == [
        ((1 << 50) + 2 * n * 4, (1 << 51) + 2 * n * 4, 5)
    ]
    assert out.blocks[-2].pieces[-1][:3] == (1 << 50, 1 << 51, 2)


def test_long_row_batches_are_bounded_and_longest_first(tb, tk):
    pieces = [piece(1_000_000, 8193), piece(3, 2**25 + 1), piece(5, 100_000)]
    out = layout(tb, tk, pieces)
    assert sum(p[2] for b in out.batches for p in b.pieces) == 1_000_008
    lengths = [p[3] for b in out.batches for p in b.pieces]
    assert lengths == sorted(lengths, reverse=True)
    for b in out.batches:
        rows = sum(p[2] for p in b.pieces)
        assert b.keys <= tb.SCRATCH_KEYS or rows == 1
        assert b.programs[0] == sum(p[2] * -(-p[3] // tk.CHUNK) for p in b.pieces)
        assert b.programs == sorted(b.programs, reverse=True)  # unmerged rows: a prefix
        assert max(b.programs) <= tl.MAX_PROGRAMS
    assert out.scratch_keys == max(b.keys * b.buffers for b in out.batches)
    assert out.scratch_keys == 2 * (2**25 + 16)  # the longest row, alone, two buffers


def test_programs_per_launch_are_checked(tb, tk, monkeypatch):
    monkeypatch.setattr(tb, "SCRATCH_KEYS", 1 << 50)  # one batch of 3 x 2^30 chunks
    with pytest.raises(ValueError, match="more than CUDA's grid allows"):
        layout(tb, tk, [piece(2**30, tk.MAX_BLOCK + 1)])


def test_the_programs_limit_is_exact(tb, tk, monkeypatch):
    # With the limit made small, exactly the limit plans and one program more is refused,
    # for a block launch and for a long-row batch.
    monkeypatch.setattr(tl, "MAX_PROGRAMS", 4)
    rows_per_program = tk.BLOCK_CONFIGS[64][0]
    assert len(layout(tb, tk, [piece(4 * rows_per_program, 64)]).blocks) == 1
    with pytest.raises(ValueError, match="5 programs"):
        layout(tb, tk, [piece(4 * rows_per_program + 1, 64)])
    n = 2 * tk.CHUNK  # two chunks a row
    assert layout(tb, tk, [piece(2, n)], max_block=tk.CHUNK).batches[0].programs[0] == 4
    with pytest.raises(ValueError, match="5 programs"):
        layout(tb, tk, [piece(1, 3 * tk.CHUNK), piece(1, n)], max_block=tk.CHUNK)


@pytest.mark.parametrize("max_block,chunk", [(32, 12), (32, 64), (32, 1), (2 * 8192, 16)])
def test_bad_settings_are_refused(tb, max_block, chunk):
    w = torch.randn(2, 40)
    with pytest.raises(ValueError, match="chunk|max_block"):
        tb.run_rows([w], [w.sort(1).values], max_block=max_block, chunk=chunk)


# --- all or nothing ---------------------------------------------------------------------


class Recorder:
    """Stands in for a Triton kernel: records warmups and launches in ``events``."""

    def __init__(self, name, events):
        self.name, self.events = name, events

    def warmup(self, *args, grid, **kwargs):
        self.events.append(("compile", self.name))

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.events.append(("launch", self.name))


@pytest.fixture
def recorded(tb, tk, monkeypatch):
    events = []
    for name in ("rank_match_block_kernel", "sort_chunks_kernel", "merge_runs_kernel"):
        monkeypatch.setattr(tk, name, Recorder(name, events))
    allocate = tb._empty_scratch

    def empty_scratch(keys, device):
        events.append(("allocate", keys))
        return allocate(keys, device)

    monkeypatch.setattr(tb, "_empty_scratch", empty_scratch)
    monkeypatch.setattr(tb, "_plans", PlanCache(16))
    yield events


def tensors():
    ws = [torch.randn(3, 20), torch.randn(2, 40), torch.randn(1, 100)]
    return ws, [w.sort(1).values for w in ws]


def test_call_allocates_and_compiles_before_its_first_launch(tb, recorded):
    ws, ss = tensors()
    tb.run_rows(ws, ss, max_block=32, chunk=16)
    kinds = [e[0] for e in recorded]
    first_launch = kinds.index("launch")
    launches = len(kinds) - first_launch
    # every kernel compiled (and loaded) as the plan is prepared, then the one allocation
    assert kinds[:first_launch] == ["compile"] * launches + ["allocate"]
    # rows of 40 and 100 in one batch: 1 sort + ceil(log2(7 chunks)) = 3 merge passes
    assert [e[1] for e in recorded[first_launch:]] == (
        ["rank_match_block_kernel", "sort_chunks_kernel"] + ["merge_runs_kernel"] * 3
    )
    # the scratch: both buffers of the batch, rows rounded up to 16 keys (112 + 2 x 48)
    assert recorded[launches] == ("allocate", 2 * (112 + 2 * 48))
    recorded.clear()
    tb.run_rows(ws, ss, max_block=32, chunk=16)  # cached plan: compiled already
    assert [e[0] for e in recorded] == ["allocate"] + ["launch"] * 5


def test_failed_allocation_launches_nothing_and_says_what_it_needed(tb, recorded, monkeypatch):
    def no_memory(keys, device):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 KiB")

    monkeypatch.setattr(tb, "_empty_scratch", no_memory)
    ws, ss = tensors()
    before = [w.clone() for w in ws]
    with pytest.raises(torch.OutOfMemoryError) as err:
        tb.run_rows(ws, ss, max_block=32, chunk=16)
    assert "launch" not in [e[0] for e in recorded]
    message = str(err.value)
    for part in (
        "3.2 KiB of scratch",
        "3 row(s) longer than 32",
        "the longest has 100",
        "Nothing was modified",
        "backend='torch'",
        "Tried to allocate",
    ):
        assert part in message, message
    for w, b in zip(ws, before):
        assert torch.equal(w, b)


def test_lower_scratch_cap_takes_effect_on_the_next_call(tb, recorded, monkeypatch):
    # what the out-of-memory message suggests: the cap is part of the plan's key
    ws, ss = tensors()
    tb.run_rows(ws, ss, max_block=32, chunk=16)
    monkeypatch.setattr(tb, "SCRATCH_KEYS", 112)  # batches [100], [40, 40]
    tb.run_rows(ws, ss, max_block=32, chunk=16)
    assert [e[1] for e in recorded if e[0] == "allocate"] == [2 * 208, 2 * 112]


def test_failed_compilation_launches_nothing(tb, tk, recorded, monkeypatch):
    def broken(*args, grid, **kwargs):
        raise RuntimeError("ptxas failed")

    monkeypatch.setattr(tk.merge_runs_kernel, "warmup", broken)
    ws, ss = tensors()
    with pytest.raises(RuntimeError, match="ptxas"):
        tb.run_rows(ws, ss, max_block=32, chunk=16)
    assert "launch" not in [e[0] for e in recorded]


# --- compilation ------------------------------------------------------------------------

# The plain int arguments of each kernel (the others are tables, scratch or constexprs).
INT_ARGUMENTS = {
    "rank_match_block_kernel": {"num_rows"},
    "sort_chunks_kernel": set(),
    "merge_runs_kernel": {"run"},
}


@pytest.mark.parametrize("kernel", sorted(INT_ARGUMENTS))
def test_kernels_are_not_specialised_on_row_counts_or_run_lengths(tk, kernel):
    # Triton specialises a plain int argument on its value (1, multiples of 16, the rest):
    # a block launch's row count would compile up to three variants of each kernel, which
    # take seconds each. One compile per (dtype, block) needs do_not_specialize.
    fn = getattr(tk, kernel)
    if not hasattr(fn, "params"):
        pytest.skip("the kernels are interpreted here (TRITON_INTERPRET=1)")
    unspecialised = {p.name for p in fn.params if p.do_not_specialize}
    assert unspecialised == INT_ARGUMENTS[kernel]


def test_prepare_allocates_the_scratch_and_its_launch_allocates_nothing(tb, recorded):
    # What lets the ops allocate every group's scratch before any group runs: preparing does
    # all but the launches; the launch it returns only launches.
    ws, ss = tensors()
    launch = tb.prepare_rows(ws, ss, max_block=32, chunk=16)
    kinds = [e[0] for e in recorded]
    assert "allocate" in kinds and "launch" not in kinds
    recorded.clear()
    launch()
    assert {e[0] for e in recorded} == {"launch"}
