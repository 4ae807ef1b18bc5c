"""The reference itself, against the contract's rules computed without torch.sort.

Every backend is tested against ``laperm_kernels.ops.reference``; these tests hold the
reference to the rules of docs/contract.md through an independent oracle (Python's
``sorted`` over plain floats), on every device's kind of float sort: one that orders
NaNs by sign, as CUDA's ``torch.sort`` does on its radix path, must not change the result.
"""

from __future__ import annotations

import math

import pytest
import torch

from laperm_kernels.ops import reference
from tests.helpers import DTYPES, NAN_BITS, assert_bitwise_equal, from_bits, generator, random_bits


def oracle_order(row):
    """Columns in the contract's order: ascending, NaN last (all tie), -0.0 == +0.0,
    ties by column. Plain Python floats: every supported dtype converts exactly."""
    values = row.double().tolist()
    return sorted(
        range(len(values)),
        key=lambda i: (math.isnan(values[i]), 0.0 if math.isnan(values[i]) else values[i], i),
    )


def oracle_rank_match(w, s):
    ints = reference.same_width_int(w.dtype)
    out = w.clone()
    out_bits, s_bits = out.view(ints), s.view(ints)
    for r in range(w.shape[0]):
        for rank, col in enumerate(oracle_order(w[r])):
            out_bits[r, col] = s_bits[r, rank]
    return out


def hostile_row(dtype, n, gen):
    """n values: normals, NaNs of both signs and several payloads, +-0, +-inf, ties."""
    pool = torch.cat(
        [
            from_bits(NAN_BITS[dtype], dtype),
            torch.tensor([0.0, -0.0, math.inf, -math.inf, 1.0, 1.0, -2.5], dtype=dtype),
        ]
    )
    row = torch.randn(n, generator=gen).to(dtype)
    pick = torch.randint(0, len(pool), (n,), generator=gen)
    return torch.where(torch.rand(n, generator=gen) < 0.4, pool[pick], row)


# --- hand-written examples: the rules, written out ------------------------------------


def test_rules_by_hand():
    nan, neg_nan = from_bits([0x7FC00000, 0xFFC00000], torch.float32).tolist()
    w = torch.tensor([[neg_nan, 3.0, -0.0, 0.0, nan, -math.inf, 3.0, math.inf]])
    s = torch.arange(8, dtype=torch.float32).reshape(1, 8)
    # order: -inf(5), -0.0(2), +0.0(3) [tie: column order], 3.0(1), 3.0(6) [tie],
    #        +inf(7), NaNs last in column order: -NaN(0), NaN(4)
    want = torch.tensor([[6.0, 3.0, 1.0, 2.0, 7.0, 0.0, 4.0, 5.0]])
    out = reference.rank_match_reference_(w.clone(), s)
    assert_bitwise_equal(out, want, "rank_match_reference_")
    sorted_row = reference.sort_rows_reference(w)
    assert_bitwise_equal(
        sorted_row[0, :6], torch.tensor([-math.inf, -0.0, 0.0, 3.0, 3.0, math.inf]), "sort_rows"
    )
    assert sorted_row[0, 6:].isnan().all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 7, 128, 129, 300])
def test_reference_matches_the_oracle(dtype, n):
    gen = generator(n)
    w = torch.stack([hostile_row(dtype, n, gen) for _ in range(3)])
    s = random_bits(w.shape, dtype, gen)
    assert_bitwise_equal(
        reference.rank_match_reference_(w.clone(), s), oracle_rank_match(w, s), f"{dtype} n={n}"
    )


# --- a float sort that puts negative NaNs first, like CUDA's radix path ----------------


def _nan_sign_sort(real_sort):
    """torch.sort, except that floating-point inputs get negative-sign NaNs before every
    number (what CUDA's torch.sort does to rows of 129+ elements, pytorch#190781)."""

    def sort(input, dim=-1, descending=False, stable=False, **kw):
        result = real_sort(input, dim=dim, descending=descending, stable=stable, **kw)
        if not input.is_floating_point():
            return result
        values = input.gather(dim, result.indices)
        neg_nan = values.isnan() & (values.view(reference.same_width_int(values.dtype)) < 0)
        first = real_sort((~neg_nan).to(torch.int8), dim=dim, stable=True).indices
        return torch.return_types.sort(
            (values.gather(dim, first), result.indices.gather(dim, first))
        )

    return sort


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reference_is_immune_to_nan_sign_sorts(monkeypatch, dtype):
    gen = generator(1)
    w = torch.stack([hostile_row(dtype, 200, gen) for _ in range(2)])
    s = random_bits(w.shape, dtype, gen)
    want = oracle_rank_match(w, s)
    sort = _nan_sign_sort(torch.sort)
    # the stand-in misorders plain float sorts: the defect it models is real
    assert sort(w, dim=1, stable=True).values[:, 0].isnan().all()
    monkeypatch.setattr(torch, "sort", sort)
    monkeypatch.setattr(torch.Tensor, "sort", lambda self, *a, **k: sort(self, *a, **k))
    assert_bitwise_equal(reference.rank_match_reference_(w.clone(), s), want, "reference")
    sorted_rows = reference.sort_rows_reference(w)
    assert not sorted_rows[:, 0].isnan().any()
    assert sorted_rows[:, -1].isnan().all()


def test_order_keys_tie_exactly_what_the_contract_ties():
    for dtype in DTYPES:
        vals = torch.cat(
            [from_bits(NAN_BITS[dtype], dtype), torch.tensor([-0.0, 0.0], dtype=dtype)]
        )
        keys = reference.order_keys(vals.reshape(1, -1))[0]
        n = len(NAN_BITS[dtype])
        assert len(set(keys[:n].tolist())) == 1 and keys[n] == keys[n + 1] == 0
        assert keys[0] == torch.iinfo(keys.dtype).max
