"""``rank_match_``: every backend bit-identical to the reference, for every shape, dtype,
kind of data and memory layout, in place on the caller's tensor."""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from tests.helpers import (
    BACKENDS,
    DTYPES,
    KERNELS,
    KINDS,
    NAN_BITS,
    assert_bitwise_equal,
    bits,
    from_bits,
    generator,
    make_sorted_init,
    make_values,
    reference_result,
    run_backend,
)

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))

SHAPES = [
    # 1-D: one row
    (0,),
    (1,),
    (2,),
    (3,),
    (31,),
    (65535,),
    (70001,),
    # no rows, empty rows, rows of 1-3
    (0, 5),
    (5, 0),
    (4, 1),
    (4, 2),
    (4, 3),
    # primes, and both sides of the insertion-sort limit (32)
    (3, 31),
    (3, 32),
    (3, 33),
    (3, 64),
    (3, 65),
    (3, 127),
    (2, 257),
    (2, 1009),
    # real rows: ResNet-50 (4,608 = 512*3*3), LLaMA MLP down projection (11,008)
    (2, 4096),
    (2, 4608),
    (1, 11008),
    # both sides of the compact (32-bit word) path's limit, 16,384
    (1, 16384),
    (1, 16385),
    # rows of >= 65,536 take three radix passes
    (1, 65536),
    (2, 70001),
    # 3-D and conv weights: rows are reshape(shape[0], -1)
    (4, 5, 6),
    (3, 0, 4),
    (8, 3, 3, 3),
    (4, 64, 3, 3),
]

# Rows that reach every path of the CPU kernel (csrc/cpu/row_kernel_impl.h): insertion
# sort of 64-bit words (<= 32); the compact path, 32-bit words and a tie fix-up
# (33..16,384), with its fall-back to the wide path when values crowd into few
# coordinates (the "extreme" and "random_bits" kinds); the wide path, 64-bit words, two
# radix passes (16,385..65,535) or three (>= 65,536).
PATH_SHAPES = [(5, 7), (4, 32), (4, 33), (3, 257), (2, 1100), (2, 4096), (1, 16385), (70001,)]


@KERNELS
@dtypes
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_match_reference(backend, dtype, shape):
    gen = generator(1)
    w = make_values("special", shape, dtype, gen)
    s = make_sorted_init(shape, dtype, gen)
    assert_bitwise_equal(run_backend(backend, w, s), reference_result(w, s), f"{shape}")


@KERNELS
@dtypes
@pytest.mark.parametrize("kind", KINDS)
def test_kinds_of_data_match_reference(backend, dtype, kind):
    gen = generator(2)
    for shape in PATH_SHAPES:
        w = make_values(kind, shape, dtype, gen)
        s = make_sorted_init(shape, dtype, gen)
        assert_bitwise_equal(run_backend(backend, w, s), reference_result(w, s), f"{shape}")


@BACKENDS
@dtypes
def test_nan_payloads_and_signed_zeros_tie(backend, dtype):
    """Rows of NaNs of many bit patterns, zeros of both signs and +-1, repeated: all NaNs
    tie (after everything) and -0.0 ties +0.0, so within each class columns decide."""
    nans = from_bits(NAN_BITS[dtype], dtype)
    zeros = torch.tensor([0.0, -0.0], dtype=dtype)
    for n in (12, 40, 300):  # insertion sort, and the radix path
        row = torch.cat([nans, zeros, torch.tensor([-1.0, 1.0], dtype=dtype)]).repeat(n)[:n]
        w = row.flip(0).reshape(1, n)
        s = make_sorted_init((1, n), dtype, generator(3))
        assert_bitwise_equal(run_backend(backend, w, s), reference_result(w, s), f"n={n}")


@BACKENDS
@dtypes
def test_sorted_init_bits_are_written_through(backend, dtype):
    """S is copied through the permutation, not computed with: NaN payloads (signalling
    ones too) and -0.0 in S land in W unchanged. The expected bits come from the
    contract directly: a stable torch.sort of W, and a scatter of S's bit patterns as
    integers, which cannot touch them."""
    gen = generator(4)
    specials = torch.cat(
        [from_bits(NAN_BITS[dtype], dtype), torch.tensor([-0.0, 0.0, float("-inf")], dtype=dtype)]
    )
    for shape in ((3, 20), (2, 300)):  # insertion sort, and the radix path
        w = make_values("special", shape, dtype, gen)
        s_bits = bits(make_values("normal", shape, dtype, gen))
        s_bits.view(-1)[: 2 * len(specials)] = bits(specials).repeat(2)
        s = s_bits.view(dtype)
        order = w.sort(dim=1, stable=True).indices
        expected = torch.empty_like(s_bits).scatter_(1, order, s_bits).view(dtype)
        assert_bitwise_equal(run_backend(backend, w, s), expected, f"{shape}")


# --- layouts: the rows are always those of the logical tensor ---------------------------


def _strided_copy(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in a non-contiguous view (every other element of a wider buffer)."""
    return torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0]


# name: (shape of the base tensor that owns the memory, the view of it rank-matched)
LAYOUTS = {
    "transposed": ((7, 5), lambda b: b.t()),
    # an NHWC buffer seen as NCHW: a channels_last conv weight [8, 4, 3, 3]
    "channels_last": ((8, 3, 3, 4), lambda b: b.permute(0, 3, 1, 2)),
    "column_slice": ((4, 10), lambda b: b[:, ::2]),
    "offset_block": ((6, 9), lambda b: b[1:5, 2:]),
    "strided_1d": ((40,), lambda b: b[3::3]),
}


@BACKENDS
@dtypes
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_weight_is_permuted_in_place(backend, dtype, layout):
    base_shape, view_of = LAYOUTS[layout]
    gen = generator(5)
    base = make_values("special", base_shape, dtype, gen)
    w = view_of(base)
    assert not w.is_contiguous()
    assert layout != "channels_last" or w.is_contiguous(memory_format=torch.channels_last)
    s = make_sorted_init(w.shape, dtype, gen)
    expected = reference_result(w, s)  # the reference on the logical rows
    expected_base = base.clone()
    view_of(expected_base).copy_(expected)
    ptr, stride = w.data_ptr(), w.stride()

    assert lk.rank_match_(w, s, backend=backend) is w
    assert (w.data_ptr(), w.stride()) == (ptr, stride)
    assert_bitwise_equal(w, expected, "view")
    # The caller's memory holds the result, and elements outside the view are untouched.
    assert_bitwise_equal(base, expected_base, "base")


@BACKENDS
@pytest.mark.parametrize("shape", [(5, 7), (8, 3, 3, 3), (33,)])
def test_non_contiguous_sorted_init(backend, shape):
    gen = generator(6)
    w = make_values("special", shape, torch.float32, gen)
    s = make_sorted_init(shape, torch.float32, gen)
    s_strided = _strided_copy(s)
    assert not s_strided.is_contiguous()
    assert_bitwise_equal(run_backend(backend, w, s_strided), reference_result(w, s))


@BACKENDS
def test_returns_weight_and_only_weight_changes(backend):
    gen = generator(7)
    w = make_values("normal", (6, 50), torch.float32, gen)
    s = lk.sort_rows(make_values("normal", (6, 50), torch.float32, gen))
    s_before, ptr = s.clone(), w.data_ptr()
    assert lk.rank_match_(w, s, backend=backend) is w
    assert w.data_ptr() == ptr
    assert_bitwise_equal(s, s_before, "sorted_init was written to")


# --- autograd ---------------------------------------------------------------------------


@BACKENDS
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_leaf_parameter_outside_no_grad(backend, layout):
    """Optimizers call rank_match_ on leaf Parameters in ordinary (grad-enabled) code."""
    gen = generator(8)
    data = make_values("normal", (8, 3, 3, 3), torch.float32, gen)
    if layout == "channels_last":
        data = data.contiguous(memory_format=torch.channels_last)
    p = torch.nn.Parameter(data)
    grad = torch.randn(p.shape, generator=gen)
    p.grad = grad.clone()
    s = lk.sort_rows(make_values("normal", p.shape, torch.float32, gen))
    expected = reference_result(p, s)

    assert torch.is_grad_enabled()
    assert lk.rank_match_(p, s, backend=backend) is p
    assert isinstance(p, torch.nn.Parameter) and p.is_leaf and p.requires_grad
    assert_bitwise_equal(p.detach(), expected)
    assert_bitwise_equal(p.grad, grad, ".grad was modified")


@BACKENDS
def test_autograd_sees_the_in_place_change(backend):
    """Like every in-place op, rank_match_ bumps the version counter, so a graph that
    saved the old values refuses to backpropagate instead of silently computing
    gradients from the permuted ones."""
    gen = generator(9)
    p = torch.nn.Parameter(make_values("normal", (4, 10), torch.float32, gen))
    s = lk.sort_rows(make_values("normal", (4, 10), torch.float32, gen))
    loss = (p * p).sum()  # saves p for backward
    version = p._version
    lk.rank_match_(p, s, backend=backend)
    assert p._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
