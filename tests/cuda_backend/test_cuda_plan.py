"""The CUDA backend's plan pipeline, tested on the CPU (no GPU needed).

``laperm::cuda_row_plan`` (csrc/cuda/host/plan.cpp) decides everything the CUDA kernels
are given: size classes, the row-descriptor table, large-row batches and their scratch
offsets. The test-only ``laperm_testing::emulate_planned_`` runs a plan on CPU tensors
through a CPU emulation of the kernels' specification (csrc/testing/emulated_launcher.cpp:
the warp class's ranking rule is the kernel's own source, the block class pads its tile,
the large class sorts segments bounded by the offsets table), after the same checks as
``rank_match_planned_``. These tests check the plans' structure and that executing them
is bit-identical to the PyTorch reference. The size classes are read from the extension
(``cuda.size_classes()``), the one source of them.
"""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from bench.presets import resnet50, transformer_mlp
from laperm_kernels.ops.backends import cuda
from laperm_kernels.ops.reference import rows_and_length
from tests.helpers import DTYPES, KINDS, assert_bitwise_equal, tensor_group

pytestmark = pytest.mark.skipif(
    not lk._extension.is_loaded(), reason=f"C++ extension not loaded: {lk._extension.load_error()}"
)

CLASSES = cuda.size_classes() if lk._extension.is_loaded() else None
WARP_MAX = CLASSES.warp_max_length if CLASSES else None
TILES = CLASSES.block_tiles if CLASSES else ()
LAYOUT = cuda.plan_layout() if lk._extension.is_loaded() else None
emulate_planned = torch.ops.laperm_testing.emulate_planned_ if CLASSES else None
BOUNDARY_LENGTHS = (
    1,
    2,
    31,
    32,
    33,
    63,
    64,
    65,
    100,
    255,
    256,
    257,
    300,
    600,
    1500,
    2304,
    3072,
    3073,
    4608,
    6144,
    6145,
    8192,
    8193,
    11008,
)


def expected_class(length: int, max_block_tile: int) -> str:
    if length <= WARP_MAX:
        return "warp"
    for tile in TILES:
        if tile > max_block_tile:
            break
        if length <= tile:
            return f"block{tile}"
    return "large"


def run_planned(ws, ss, max_block_tile=8192, max_batch_items=1 << 22):
    """Rank-matches copies of ws through plan + CPU emulation; returns them and the plan."""
    out = [w.clone() for w in ws]
    plan = torch.ops.laperm.cuda_row_plan(out, ss, max_block_tile, max_batch_items)
    emulate_planned(out, ss, *plan)
    return out, plan


def reference(ws, ss):
    out = [w.clone() for w in ws]
    lk.rank_match_many_(out, ss, backend="torch")
    return out


def assert_all_equal(actual, expected, what=""):
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_bitwise_equal(a, e, f"{what} tensor {i}")


# --- executing plans: bit-identical to the reference ------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_class_matches_reference(dtype, kind):
    # one call holding a row of every boundary length: every class in one plan
    specs = [((3, n), dtype) for n in BOUNDARY_LENGTHS if n <= 8193] + [((2, 3, 5, 5), dtype)]
    ws, ss = tensor_group(specs, seed=KINDS.index(kind), kind=kind)
    out, plan = run_planned(ws, ss, max_batch_items=20000)
    assert_all_equal(out, reference(ws, ss), f"{kind} {dtype}")
    classes = {name for name, _, _ in cuda.describe_plan(plan)["launches"]}
    assert classes == {"warp", *(f"block{t}" for t in TILES)}
    assert cuda.describe_plan(plan)["large_batches"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_rows_across_batches(dtype):
    # 7 rows of 9000 in batches of at most 20000 items (2 rows each), plus one row of
    # 25000 > max_batch_items that gets a batch of its own
    ws, ss = tensor_group([((7, 9000), dtype), ((25000,), dtype)], seed=3, kind="ties")
    out, plan = run_planned(ws, ss, max_batch_items=20000)
    assert_all_equal(out, reference(ws, ss))
    batches = cuda.describe_plan(plan)["large_batches"]
    assert [b[1] for b in batches] == [2, 2, 2, 1, 1]
    assert batches[-1][2] == 25000


def test_million_element_row():
    # a 1-D tensor is one row: 2^20 + 3 elements, alone in a batch beyond the bound
    ws, ss = tensor_group(
        [(((1 << 20) + 3,), torch.float32), ((2, 70000), torch.float32)], "ties", seed=11
    )
    out, plan = run_planned(ws, ss, max_batch_items=1 << 18)
    assert_all_equal(out, reference(ws, ss))
    batches = cuda.describe_plan(plan)["large_batches"]
    assert [(b[1], b[2]) for b in batches] == [(1, (1 << 20) + 3), (2, 140000)]


def test_rows_sorted_device_wide_are_batches_alone():
    # rows one short of the device-wide sort share batches; rows at it get one each, which
    # the kernels sort with cub::DeviceRadixSort (size_classes.h: sorts_device_wide)
    n = CLASSES.device_sort_min_length
    ws, ss = tensor_group(
        [((3, n - 1), torch.float32), ((2, n), torch.float32), ((2, 9000), torch.float32)],
        seed=12,
        kind="ties",
    )
    out, plan = run_planned(ws, ss, max_batch_items=1 << 22)
    assert_all_equal(out, reference(ws, ss))
    batches = cuda.describe_plan(plan)["large_batches"]
    assert [(b[1], b[3]) for b in batches] == [(3, n - 1), (1, n), (1, n), (2, 9000)]


@pytest.mark.parametrize("max_block_tile", [0, 255, 1024])
def test_smaller_devices_route_long_rows_to_large(max_block_tile):
    ws, ss = tensor_group(
        [((4, 300), torch.float64), ((2, 2000), torch.float64), ((5, 40), torch.float64)],
        seed=4,
        kind="special",
    )
    out, plan = run_planned(ws, ss, max_block_tile=max_block_tile, max_batch_items=3000)
    assert_all_equal(out, reference(ws, ss))
    launches = cuda.describe_plan(plan)["launches"]
    assert all(int(name[5:]) <= max_block_tile for name, _, _ in launches if name != "warp")


def test_model_with_empty_and_1d_tensors():
    specs = [
        ((0, 5), torch.float32),
        ((4, 0), torch.float32),
        ((16, 3, 3, 3), torch.float32),
        ((70,), torch.float32),
        ((1, 1), torch.float32),
        ((10, 784), torch.float32),
    ]
    ws, ss = tensor_group(specs, seed=5, kind="random_bits")
    out, plan = run_planned(ws, ss)
    assert_all_equal(out, reference(ws, ss))
    assert cuda.describe_plan(plan)["rows"] == 16 + 1 + 1 + 10  # empty tensors: no rows


# --- the size classes, as the extension exports them ------------------------------------


def test_size_classes_hang_together():
    c = CLASSES
    assert c.warp_max_length == 64  # two elements a lane of one warp
    assert list(c.block_tiles) == sorted(set(c.block_tiles)) and c.block_tiles[0] > 64
    assert all(t == th * it for t, th, it in zip(c.block_tiles, c.block_threads, c.block_items))
    assert c.block_tiles[-1] <= 65536  # 16-bit columns in the block kernel
    assert c.max_batch_items == (1 << 31) - 1  # CUB's int item counts
    assert 0 < c.default_batch_items <= c.max_batch_items
    assert c.max_warp_class_rows == 8 * c.max_block_class_rows  # 8 warps a block
    assert c.device_sort_min_length > c.block_tiles[-1]
    layout = LAYOUT
    plan = torch.ops.laperm.cuda_row_plan(*tensor_group([((2, 100), torch.float32)]), 8192, 1 << 22)
    assert int(plan[0][0]) == layout.magic
    assert plan[0].numel() == layout.header_words + layout.tensor_words + layout.launch_words


def test_decode_plan_reads_what_the_planner_wrote():
    ws, ss = tensor_group(
        [((4, 40), torch.float16), ((3, 300), torch.float16), ((2, 20000), torch.float16)], seed=2
    )
    plan = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 30000)
    info = cuda.describe_plan(plan)
    assert info["dtype"] == "float16" and info["tensors"] == 3 and info["rows"] == 9
    assert info["launches"] == [("warp", 0, 4), ("block512", 4, 3)]
    assert info["large_batches"] == [(7, 1, 20000, 20000, 0), (8, 1, 20000, 20000, 2)]
    assert info["max_batch_items"] == 20000


# --- plan structure ---------------------------------------------------------------------


def _expected_rows(ws, ss):
    rows = []
    for w, s in zip(ws, ss):
        n_rows, n = rows_and_length(w)
        if n_rows == 0 or n == 0:
            continue
        step = n * w.element_size()
        rows += [(w.data_ptr() + r * step, s.data_ptr() + r * step, n) for r in range(n_rows)]
    return rows


@pytest.mark.parametrize("max_block_tile", [8192, 2048])
def test_row_table_holds_every_row_once_in_its_class(max_block_tile):
    specs = [((5, n), torch.float16) for n in (1, 64, 65, 3000, 5000, 8192, 9000, 40000)]
    ws, ss = tensor_group(specs, seed=6)
    plan = torch.ops.laperm.cuda_row_plan(ws, ss, max_block_tile, 50000)
    words, rows, offsets = plan
    info = cuda.describe_plan(plan)
    table = rows.tolist()
    assert sorted((w, s, n) for w, s, n, _ in table) == sorted(_expected_rows(ws, ss))
    assert info["rows"] == len(table) and info["tensors"] == len(ws)

    covered = []
    for name, begin, count in info["launches"]:  # on-chip classes: every row fits its class
        for _, _, n, scratch in table[begin : begin + count]:
            assert expected_class(n, max_block_tile) == name and scratch == -1
        covered += range(begin, begin + count)
    for begin, count, items, longest, first_offset in info["large_batches"]:
        batch = table[begin : begin + count]
        assert all(expected_class(n, max_block_tile) == "large" for _, _, n, _ in batch)
        starts = [scratch for _, _, _, scratch in batch]
        prefix = [sum(n for _, _, n, _ in batch[:i]) for i in range(count)]
        assert starts == prefix  # packed segments
        assert offsets[first_offset : first_offset + count + 1].tolist() == prefix + [items]
        assert items == sum(n for _, _, n, _ in batch) and longest == max(n for _, _, n, _ in batch)
        assert items <= max(50000, longest)
        assert count == 1 or longest < CLASSES.device_sort_min_length  # long rows sort alone
        covered += range(begin, begin + count)
    assert sorted(covered) == list(range(len(table)))  # each row launched once


def test_resnet50_is_a_handful_of_launches():
    ws = [torch.empty(shape) for shape in resnet50()]
    ss = [torch.empty(shape) for shape in resnet50()]
    info = cuda.describe_plan(torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 1 << 22))
    assert len(info["launches"]) + len(info["large_batches"]) <= 8
    assert not info["large_batches"]  # its longest row is 4608
    assert info["rows"] == sum(shape[0] for shape in resnet50())


def test_mlp_rows_are_batched_under_the_bound():
    (shape,) = transformer_mlp()  # (4096, 11008): longer than the largest tile
    ws, ss = [torch.empty(shape)], [torch.empty(shape)]
    limit = 1 << 22
    info = cuda.describe_plan(torch.ops.laperm.cuda_row_plan(ws, ss, 8192, limit))
    per_batch = limit // shape[1]
    assert not info["launches"]
    rest = [shape[0] % per_batch] if shape[0] % per_batch else []
    assert [b[1] for b in info["large_batches"]] == [per_batch] * (shape[0] // per_batch) + rest
    assert info["max_batch_items"] == per_batch * shape[1] <= limit


def test_many_short_large_rows_respect_the_row_limit():
    # 70000 rows of 8193 elements in one tensor would exceed 65535 rows per batch only with
    # a huge item bound; check the row cap with max_block_tile=0 and rows of 65 instead
    w = torch.empty(70000, 65)
    info = cuda.describe_plan(torch.ops.laperm.cuda_row_plan([w], [w.clone()], 0, (1 << 31) - 1))
    assert [b[1] for b in info["large_batches"]] == [65535, 70000 - 65535]


@pytest.mark.parametrize("dtype", DTYPES)
def test_largest_block_tile_follows_shared_memory(dtype):
    key_bytes = torch.finfo(dtype).bits // 8

    threads = dict(zip(TILES, CLASSES.block_threads))

    def need(tile):  # size_classes.h's bound
        return tile * max(key_bytes, 2) + threads[tile] * 40

    for smem in (0, 8 * 1024, 48 * 1024, 99 * 1024, 163 * 1024, 227 * 1024):
        fitting = [t for t in TILES if need(t) <= smem]
        got = torch.ops.laperm.cuda_largest_block_tile(dtype, smem)
        assert got == (max(fitting) if fitting else 0), smem
    # every device we build for (sm_80: 163 KiB, sm_86/89: 99 KiB) sorts 8192 on chip
    assert torch.ops.laperm.cuda_largest_block_tile(dtype, 99 * 1024) == 8192
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.laperm.cuda_largest_block_tile(torch.int32, 1 << 20)


# --- checks: nothing runs on a plan that does not fit -----------------------------------


def _pair():
    return tensor_group([((4, 100), torch.float32), ((3, 9000), torch.float32)], seed=7)


def _unchanged(ws, before):
    return all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(ws, before))


def test_plan_for_other_tensors_is_refused():
    ws, ss = _pair()
    plan = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 1 << 22)
    clones = [w.clone() for w in ws]
    before = [w.clone() for w in clones]
    with pytest.raises(ValueError, match="plan was made for other tensors"):
        emulate_planned(clones, ss, *plan)
    reshaped = [ws[0].view(2, 200), ws[1]]
    with pytest.raises(ValueError, match="plan was made for other tensors"):
        emulate_planned(reshaped, [ss[0].view(2, 200), ss[1]], *plan)
    with pytest.raises(ValueError, match="plan was made for other tensors"):
        emulate_planned(ws[:1], ss[:1], *plan)
    assert _unchanged(clones, before)


@pytest.mark.parametrize("corrupt", ["magic", "truncated", "launch_range", "batch_range"])
def test_corrupted_plan_words_are_refused(corrupt):
    ws, ss = _pair()
    words, rows, offsets = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 1 << 22)
    words = words.clone()
    first_launch = LAYOUT.header_words + LAYOUT.tensor_words * len(ws)
    if corrupt == "magic":
        words[0] += 1
    elif corrupt == "truncated":
        words = words[:-1].clone()
    elif corrupt == "launch_range":
        words[first_launch + 2] = 10**6  # first launch's row count
    else:
        words[-LAYOUT.batch_words + 1] = 10**6  # last batch's row count
    before = [w.clone() for w in ws]
    with pytest.raises(ValueError, match="not a plan made by laperm::cuda_row_plan"):
        emulate_planned(ws, ss, words, rows, offsets)
    with pytest.raises(ValueError, match="not a plan made by laperm::cuda_row_plan"):
        torch.ops.laperm_testing.cuda_decode_plan(words)
    assert _unchanged(ws, before)


def test_plan_words_beyond_the_launch_limits_are_refused():
    # A launch of more block rows than a grid holds (2^31 - 1), consistent with forged
    # table sizes: decode_plan refuses it by the planner's limit, before the tables' check.
    ws, ss = _pair()
    words, rows, offsets = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 1 << 22)
    words = words.clone()
    num_rows = 5  # header: [magic, type, tensors, launches,
    words[num_rows] = 1 << 32  #   batches, rows, offsets, batch items]
    launch = LAYOUT.header_words + LAYOUT.tensor_words * len(ws)  # first: block tile 256
    assert int(words[launch]) == 0
    words[launch + 2] = 1 << 31  # its row count
    before = [w.clone() for w in ws]
    with pytest.raises(ValueError, match="a launch is out of range"):
        emulate_planned(ws, ss, words, rows, offsets)
    assert _unchanged(ws, before)


def test_tables_of_the_wrong_kind_are_refused():
    ws, ss = _pair()
    words, rows, offsets = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 1 << 22)
    with pytest.raises(ValueError, match="rows must be the plan's int64 row table"):
        emulate_planned(ws, ss, words, rows[1:], offsets)
    with pytest.raises(ValueError, match="rows must be"):
        emulate_planned(ws, ss, words, rows.to(torch.int32), offsets)
    with pytest.raises(ValueError, match="segment_offsets must be the plan's int32 table"):
        emulate_planned(ws, ss, words, rows, offsets.long())
    with pytest.raises(ValueError, match="plan must be the 1-D int64 CPU tensor"):
        emulate_planned(ws, ss, words.float(), rows, offsets)


def test_bad_groups_and_limits_are_refused():
    ws, ss = _pair()
    plan_op = torch.ops.laperm.cuda_row_plan
    with pytest.raises(ValueError, match="weights is empty"):
        plan_op([], [], 8192, 1 << 22)
    with pytest.raises(TypeError, match="must have weights\\[0\\]'s dtype"):
        plan_op([ws[0], ws[1].double()], [ss[0], ss[1].double()], 8192, 1 << 22)
    with pytest.raises(ValueError, match="must be contiguous"):
        plan_op([ws[0].t()], [ss[0].t()], 8192, 1 << 22)
    with pytest.raises(ValueError, match="shape"):
        plan_op([ws[0]], [ss[1]], 8192, 1 << 22)
    with pytest.raises(TypeError, match="dtype"):
        plan_op([ws[0].int()], [ss[0].int()], 8192, 1 << 22)
    for bad in (0, -1, 1 << 31):
        with pytest.raises(ValueError, match="max_batch_items"):
            plan_op(ws, ss, 8192, bad)
    with pytest.raises(ValueError, match="max_block_tile"):
        plan_op(ws, ss, -1, 1 << 22)


# --- the operator ---------------------------------------------------------------------


def test_planned_op_refuses_cpu_tensors():
    ws, ss = tensor_group([((6, 100), torch.float32)], seed=8)
    plan = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 1 << 22)
    before = [w.clone() for w in ws]
    with pytest.raises(
        ValueError, match="rank_match_planned_ runs the CUDA kernels: weights must be CUDA tensors"
    ):
        torch.ops.laperm.rank_match_planned_(ws, ss, *plan)
    assert _unchanged(ws, before)


def test_fake_kernel_of_the_planned_op():
    # (opcheck of the op itself runs with the GPU tests: it needs the CUDA kernel)
    ws, ss = tensor_group([((6, 100), torch.float32), ((2, 3000), torch.float32)], seed=8)
    plan = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 1 << 22)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = [mode.from_tensor(t) for t in (*ws, *ss, *plan)]
        assert torch.ops.laperm.rank_match_planned_(fake[:2], fake[2:4], *fake[4:]) is None


def test_plan_cache_returns_the_same_plan():
    ws, ss = tensor_group([((6, 100), torch.float32)], seed=10)
    first = cuda.plan_for(ws, ss, max_block_tile=8192)
    assert cuda.plan_for(ws, ss, max_block_tile=8192) is first
    assert cuda.plan_for(ws, ss, max_block_tile=4096) is not first


# --- availability without a GPU ---------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_cuda_backend_is_unavailable_with_a_reason():
    assert "cuda" not in lk.available_backends()
    reason = cuda.unavailable_reason()
    assert (
        ("no CUDA device" in reason) if cuda.compiled() else ("without the CUDA kernels" in reason)
    )
    w = torch.randn(3, 10)
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
        lk.rank_match_(w, lk.sort_rows(w), backend="cuda")
    # compiled() from the op's own registration, not from the list it reports
    has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(
        "laperm::rank_match_planned_", "CUDA"
    )
    assert cuda.compiled() == has_cuda_kernel
