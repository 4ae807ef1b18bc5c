"""Running out of memory, and the size limits: a failing call changes no weight.

Every op allocates all its scratch before it writes the first weight (csrc/scratch.h), so
an allocation failure raises ``torch.OutOfMemoryError`` saying how much was needed, with
every weight bit for bit unchanged. ``torch.ops.laperm_testing.fail_allocation(k)``
(test-only) makes the k-th scratch allocation of the next call fail as if memory had run
out; the tests fail each allocation in turn, for the CPU kernel and for the CUDA
backend's host path through the test-only CPU emulation of its kernels
(``laperm_testing::emulate_planned_``),
and one test lets a real allocation fail under an address-space cap in a child process.

Size limits are refused with a ``ValueError`` naming the argument, the size and the limit
before anything is touched; sizes too large to allocate here are planned as meta tensors
(the planner reads only shapes) or mapped from sparse files.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops import backends
from laperm_kernels.ops.backends import cpu, cuda
from tests.helpers import (
    assert_bitwise_equal,
    generator,
    make_values,
    needs_extension,
    num_threads,
    reference_result,
    tensor_group,
)

pytestmark = needs_extension

# The kernels' limits, as the extension exports them (csrc/cpu/row_kernel.h,
# csrc/cuda/size_classes.h).
_CPU = cpu.kernel_limits() if lk._extension.is_loaded() else None
SCRATCH_BYTES_PER_ELEMENT = _CPU.scratch_bytes_per_element if _CPU else 0
CPU_MAX_ROW = _CPU.max_row_length if _CPU else 0
_CLASSES = cuda.size_classes() if lk._extension.is_loaded() else None
CUDA_MAX_ROW = _CLASSES.max_batch_items if _CLASSES else 0
MAX_BLOCK_CLASS_ROWS = _CLASSES.max_block_class_rows if _CLASSES else 0
MAX_WARP_CLASS_ROWS = _CLASSES.max_warp_class_rows if _CLASSES else 0


@pytest.fixture(autouse=True)
def disarm():
    yield
    torch.ops.laperm_testing.fail_allocation(0)


@pytest.fixture
def threads(request):
    with num_threads(request.param):
        yield request.param


def group(shapes, dtype, seed=0):
    return tensor_group([(shape, dtype) for shape in shapes], seed=seed)


def reference(ws, ss):
    return [reference_result(w, s) for w, s in zip(ws, ss)]


def fail_each_allocation(call, ws):
    """Fails the k-th allocation of ``call()`` for k = 1, 2, ... until a call succeeds.
    Every failing call must raise torch.OutOfMemoryError naming bytes and leave ``ws``
    bit for bit unchanged. Returns the failure messages (one per allocation)."""
    before = [w.clone() for w in ws]
    messages = []
    for k in itertools.count(1):
        torch.ops.laperm_testing.fail_allocation(k)
        try:
            call()
        except torch.OutOfMemoryError as e:
            messages.append(str(e))
        else:
            return messages
        assert re.search(r"\d+ bytes", messages[-1]) and "No weight was modified" in messages[-1]
        for i, (w, b) in enumerate(zip(ws, before)):
            assert_bitwise_equal(w, b, f"tensor {i} after failing allocation {k}")
        assert k < 100, "the call never succeeded"


# --- the CPU kernel ---------------------------------------------------------------------

# A long row (the wide path), compact rows, tiny rows, a 1-D tensor and a non-contiguous
# weight (permuted in a contiguous copy that is never copied back on failure).
CPU_GROUP = [(1, 40000), (64, 300), (8, 5000), (3, 3, 3), (70,)]


@pytest.mark.parametrize("threads", [1, 4], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_kernel_is_all_or_nothing(threads, dtype):
    ws, ss = group(CPU_GROUP, dtype)
    ws.append(make_values("normal", (300, 64), dtype, generator(1)).t())
    ss.append(lk.sort_rows(make_values("normal", (64, 300), dtype, generator(2))))
    expected = reference(ws, ss)
    messages = fail_each_allocation(lambda: lk.rank_match_many_(ws, ss, backend="cpu"), ws)
    assert len(messages) == threads  # one scratch allocation per thread
    assert all("torch.set_num_threads" in m for m in messages)
    for i, (w, e) in enumerate(zip(ws, expected)):
        assert_bitwise_equal(w, e, f"tensor {i}")


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_cpu_scratch_is_sized_by_the_rows_each_thread_takes(threads):
    # Chunks go out largest first: the long row's chunk is the first thread's first, so
    # the other thread's scratch holds the short rows only (not two long rows' worth).
    long_row = 1 << 20
    ws, ss = group([(long_row,), (64, 300)], torch.float32)
    messages = fail_each_allocation(lambda: lk.rank_match_many_(ws, ss, backend="cpu"), ws)
    total = SCRATCH_BYTES_PER_ELEMENT * (long_row + 300)
    assert len(messages) == 2
    assert f"thread 1 of 2 needs {SCRATCH_BYTES_PER_ELEMENT * long_row} bytes" in messages[0]
    assert f"rows of up to {long_row} elements" in messages[0]
    assert f"thread 2 of 2 needs {SCRATCH_BYTES_PER_ELEMENT * 300} bytes" in messages[1]
    assert all(f"all threads {total} bytes" in m for m in messages)


def test_injection_is_one_shot_and_checked():
    ws, ss = group([(6, 100)], torch.float32)
    torch.ops.laperm_testing.fail_allocation(1)
    with pytest.raises(torch.OutOfMemoryError):
        lk.rank_match_many_(ws, ss, backend="cpu")
    lk.rank_match_many_(ws, ss, backend="cpu")  # the next call is not affected
    with pytest.raises(ValueError, match="k must be >= 0"):
        torch.ops.laperm_testing.fail_allocation(-1)


# The child lets the real allocation fail: a 1-D weight of 2^25 float32 (one row) needs
# 512 MiB of scratch, and the address space is capped at its current size plus 128 MiB.
_ADDRESS_SPACE_CHILD = textwrap.dedent("""
    import resource, sys, torch
    import laperm_kernels as lk

    torch.set_num_threads(2)
    n = 1 << 25
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, generator=gen)
    s = torch.randn(n, generator=gen).sort().values
    before = w.clone()
    # Everything but the scratch exists before the cap: the thread pool included.
    small = [torch.randn(64, 300) for _ in range(4)]
    lk.rank_match_many_(small, [lk.sort_rows(x) for x in small], backend="cpu")

    def vm_size():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))

    need = 16 * n
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm_size() + need // 4
    if hard != resource.RLIM_INFINITY and hard < cap:
        print("SKIP: hard RLIMIT_AS below", cap)
        sys.exit(0)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        lk.rank_match_(w, s, backend="cpu")
        message = None
    except torch.OutOfMemoryError as e:
        message = str(e)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert message is not None, "the call succeeded under the cap"
    assert f"needs {need} bytes" in message, message
    assert torch.equal(w.view(torch.int32), before.view(torch.int32)), "the weight changed"
    print("SURVIVED: out of memory raised, weight unchanged")
""")


@pytest.mark.skipif(
    not hasattr(__import__("resource"), "RLIMIT_AS") or not os.path.exists("/proc/self/status"),
    reason="needs resource.RLIMIT_AS and /proc/self/status (Linux)",
)
def test_real_allocation_failure_under_an_address_space_cap():
    child = subprocess.run(
        [sys.executable, "-c", _ADDRESS_SPACE_CHILD], capture_output=True, text=True, timeout=600
    )
    if child.stdout.startswith("SKIP"):
        pytest.skip(child.stdout.strip())
    assert child.returncode == 0, (
        f"the child died (exit {child.returncode}):\n{child.stdout}\n{child.stderr[-3000:]}"
    )
    assert "SURVIVED" in child.stdout, child.stdout + child.stderr


# --- the CUDA backend's host path, through its CPU emulation ----------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planned_launches_are_all_or_nothing(dtype):
    # Warp rows, block tiles, and large rows in batches of at most 20000 items (2, 2 and 1
    # rows of 9000), the row of 30000 a batch alone.
    ws, ss = group([(5, 40), (4, 300), (3, 5000), (5, 9000), (30000,)], dtype)
    expected = reference(ws, ss)
    plan = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 20000)
    assert [b[1] for b in cuda.describe_plan(plan)["large_batches"]] == [2, 2, 1, 1]
    messages = fail_each_allocation(
        lambda: torch.ops.laperm_testing.emulate_planned_(ws, ss, *plan), ws
    )
    # block-tile keys and order, large-row keys, columns and order: one buffer, before any
    # launch, sized for the largest tile and batch (the row of 30000 is one)
    assert len(messages) == 1
    assert "block tiles of up to 6144 and large-row batches of up to 30000" in messages[0]
    for i, (w, e) in enumerate(zip(ws, expected)):
        assert_bitwise_equal(w, e, f"tensor {i}")


@pytest.mark.skipif(not cuda.is_available(), reason="needs a CUDA device and the CUDA kernels")
def test_cuda_large_row_scratch_is_allocated_before_any_launch():
    ws, ss = group([(5, 40), (4, 300), (3, 9000)], torch.float32)
    expected = [e.cuda() for e in reference(ws, ss)]
    ws, ss = [w.cuda() for w in ws], [s.cuda() for s in ss]
    messages = fail_each_allocation(lambda: lk.rank_match_many_(ws, ss, backend="cuda"), ws)
    assert len(messages) == 1 and "large rows' scratch" in messages[0]
    for i, (w, e) in enumerate(zip(ws, expected)):
        assert_bitwise_equal(w, e, f"tensor {i}")


def test_plan_without_large_rows_allocates_for_its_tiles_only():
    ws, ss = group([(5, 40), (4, 300)], torch.float32)
    plan = torch.ops.laperm.cuda_row_plan(ws, ss, 8192, 1 << 22)
    messages = fail_each_allocation(
        lambda: torch.ops.laperm_testing.emulate_planned_(ws, ss, *plan), ws
    )
    assert (
        len(messages) == 1
        and "block tiles of up to 512 and large-row batches of up to 0" in messages[0]
    )


@pytest.fixture
def emulated_cuda(monkeypatch):
    """The cuda backend's Python path (plan, scratch, launch) on CPU tensors, its kernels
    swapped for their CPU emulation, registered as backend "emulated-cuda"; returns the
    list of (dtype of each plan) whose scratch was asked for."""
    asked = []

    def plan_scratch(plan, device):
        asked.append(torch.ops.laperm_testing.cuda_decode_plan(plan)[0])  # its dtype
        return torch.ops.laperm_testing.emulated_plan_scratch(plan)

    monkeypatch.setattr(
        cuda, "_kernels", cuda.Kernels(plan_scratch, torch.ops.laperm_testing.emulate_planned_)
    )
    monkeypatch.setattr(cuda, "largest_block_tile", lambda device, dtype: 8192)
    backend = types.SimpleNamespace(
        name="emulated-cuda",
        is_available=lambda: True,
        unavailable_reason=lambda: "",
        supports=lambda device, dtype: device.type == "cpu",
        prepare=cuda.prepare,
        run=cuda.run,
    )
    monkeypatch.setitem(backends.BACKENDS, "emulated-cuda", backend)
    return asked


def test_a_later_groups_scratch_failing_leaves_the_earlier_groups_untouched(
    emulated_cuda, monkeypatch
):
    # Two (device, dtype) groups, each with a large row: the float64 group's scratch runs
    # out after the float32 group's was allocated. Every group's scratch comes before any
    # group runs, so the float32 group was not permuted either.
    ws, ss = group([(3, 300), (2, 9000)], torch.float32)
    ws64, ss64 = group([(2, 9000), (4, 50)], torch.float64, seed=1)
    ws, ss = ws + ws64, ss + ss64
    expected = reference(ws, ss)
    before = [w.clone() for w in ws]
    real = cuda._kernels.plan_scratch

    def second_fails(plan, device):
        if emulated_cuda:
            raise torch.OutOfMemoryError("injected: the second group's scratch")
        return real(plan, device)

    monkeypatch.setattr(cuda, "_kernels", cuda._kernels._replace(plan_scratch=second_fails))
    with pytest.raises(torch.OutOfMemoryError, match="second group"):
        lk.rank_match_many_(ws, ss, backend="emulated-cuda")
    assert emulated_cuda == ["float32"]
    for i, (w, b) in enumerate(zip(ws, before)):
        assert_bitwise_equal(w, b, f"tensor {i}")
    monkeypatch.setattr(cuda, "_kernels", cuda._kernels._replace(plan_scratch=real))
    lk.rank_match_many_(ws, ss, backend="emulated-cuda")
    for i, (w, e) in enumerate(zip(ws, expected)):
        assert_bitwise_equal(w, e, f"tensor {i}")


# --- size limits ------------------------------------------------------------------------


def meta(*shape):
    return torch.empty(shape, device="meta")


def plan_meta(shapes, max_block_tile=8192, max_batch_items=1 << 22):
    ws = [meta(*s) for s in shapes]
    return torch.ops.laperm.cuda_row_plan(
        ws, [meta(*s) for s in shapes], max_block_tile, max_batch_items
    )


def test_cuda_rows_up_to_the_limit_are_planned():
    info = cuda.describe_plan(plan_meta([(4, 100), (CUDA_MAX_ROW,)]))
    assert info["large_batches"] == [(4, 1, CUDA_MAX_ROW, CUDA_MAX_ROW, 0)]


def test_cuda_rows_beyond_the_limit_are_refused():
    with pytest.raises(
        ValueError,
        match=rf"weights\[1\] has rows of {CUDA_MAX_ROW + 1} "
        rf"elements; the cuda backend's limit is {CUDA_MAX_ROW}",
    ):
        plan_meta([(4, 100), (CUDA_MAX_ROW + 1,)])
    with pytest.raises(ValueError, match=rf"weights\[0\] has rows of {1 << 32} elements"):
        plan_meta([(2, 1 << 16, 1 << 16)])


def test_cuda_launches_beyond_the_grid_limit_are_refused():
    # Checked before any table is built: these groups' tables would take 64-512 GiB.
    with pytest.raises(
        ValueError,
        match=rf"the group has {MAX_BLOCK_CLASS_ROWS + 1} rows in "
        rf"block tile 256; one launch takes at most "
        rf"{MAX_BLOCK_CLASS_ROWS}",
    ):
        plan_meta([(1 << 30, 100), ((1 << 30) - 1, 200), (1, 256), (3, 9000)])
    with pytest.raises(ValueError, match=rf"{MAX_WARP_CLASS_ROWS + 1} rows in the warp class"):
        plan_meta([(MAX_WARP_CLASS_ROWS + 1, 1)])
    with pytest.raises(ValueError, match="rows in block tile 8192"):
        plan_meta([(1 << 31, 8192)])


def test_cpu_rows_beyond_the_limit_are_refused(tmp_path):
    # Two sparse files mapped as tensors of 2^32 + 1 float16 (8 GiB each, no disk blocks):
    # the kernel refuses the row before it reads anything.
    n = CPU_MAX_ROW + 1
    tensors = []
    for name in ("w", "s"):
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(2 * n)
        try:
            tensors.append(torch.from_file(str(path), shared=True, size=n, dtype=torch.float16))
        except RuntimeError as e:
            pytest.skip(f"cannot map an 8 GiB sparse file here: {e}")
    w, s = tensors
    with pytest.raises(
        ValueError,
        match=rf"weights\[0\] has rows of {n} elements; the limit "
        rf"is {CPU_MAX_ROW}",
    ):
        lk.rank_match_(w, s, backend="cpu")
    assert not w[:4096].any()  # still the file's zeros
