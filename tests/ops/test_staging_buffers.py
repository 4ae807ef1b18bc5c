"""Staging buffers for non-contiguous weights (laperm_kernels/ops/staging.py) are kept per
tensor: two views at the same address with the same strides but other shapes (a
transposed weight and the transpose of its first rows) get buffers of their own shapes,
and each is rank-matched exactly."""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops.staging import contiguous_buffer
from tests.helpers import assert_bitwise_equal, make_sorted_init, reference_result

pytestmark = pytest.mark.usefixtures("one_thread")


def _views_at_one_address():
    """(whole, part): ``base.t()`` and ``base[:3].t()``, same address, same strides."""
    base = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    whole, part = base.t(), base[:3].t()
    assert whole.data_ptr() == part.data_ptr() and whole.stride() == part.stride()
    assert whole.shape != part.shape and not whole.is_contiguous()
    return whole, part


def test_views_at_one_address_with_other_shapes_get_buffers_of_their_shapes():
    whole, part = _views_at_one_address()
    for t in (whole, part, whole):
        buffer = contiguous_buffer(t)
        assert buffer.shape == t.shape and buffer.is_contiguous(), (buffer.shape, t.shape)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_views_at_one_address_with_other_shapes_are_each_rank_matched(backend):
    whole, part = _views_at_one_address()
    for w in (whole, part):
        s = make_sorted_init(w.shape, w.dtype, torch.Generator().manual_seed(w.shape[1]))
        expected = reference_result(w, s)
        lk.rank_match_(w, s, backend=backend)
        assert_bitwise_equal(w, expected, f"the view of shape {tuple(w.shape)}")
