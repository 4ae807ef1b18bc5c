"""lk.wiring / lk.rewire_: a LaPerm-trained network as per-row indices into S, rebuilt bit
for bit; the index dtype; ties, -0.0 beside +0.0 and NaN payloads; every bad input refused
before any weight changes."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import laperm_kernels as lk
from tests.helpers import DTYPES, assert_bitwise_equal, bits


def _trained(seed: int = 0, steps: int = 7, k: int = 3, **model_kw):
    """A small MLP trained a few steps by LaPerm(Adam), synced at the end."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(300, 20), nn.ReLU(), nn.Linear(20, 5, **model_kw))
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=0.05), sync_period=k)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 300)).square().mean().backward()
        opt.step()
    opt.sync()
    return model, opt


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_unchanged(model, before):
    for n, p in model.named_parameters():
        assert_bitwise_equal(p, before[n], n)


def _roundtrip(w):
    buf = io.BytesIO()
    torch.save(w, buf)
    buf.seek(0)
    return torch.load(buf)


def test_roundtrip_bit_identical_through_torch_save():
    model, opt = _trained()
    expected = _snapshot(model)
    w = _roundtrip(lk.wiring(model, opt))
    assert set(w["tensors"]) == {"0.weight", "2.weight"}  # what LaPerm permutes
    assert w["tensors"]["0.weight"]["index"].dtype == torch.uint16  # rows of 300
    assert w["tensors"]["2.weight"]["index"].dtype == torch.uint8  # rows of 20
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in fresh.named_parameters():
            if n in w["tensors"]:
                p.copy_(torch.randn_like(p))
    assert lk.rewire_(fresh, w) is fresh
    _assert_unchanged(fresh, expected)


def test_wiring_without_sorted_rebuilds_from_the_optimizers_S():
    model, opt = _trained()
    expected = _snapshot(model)
    w = lk.wiring(model, opt, include_sorted=False)
    assert all("sorted" not in e for e in w["tensors"].values())
    with torch.no_grad():
        model[0].weight.zero_()
    with pytest.raises(ValueError, match="no 'sorted' and sorted_inits gives no S"):
        lk.rewire_(model, w)
    lk.rewire_(model, w, opt)
    _assert_unchanged(model, expected)
    # S by name, as a user rebuilds it from the seed of the initial weights
    s = {n: opt.sorted_inits[p] for n, p in model.named_parameters() if p in opt.sorted_inits}
    lk.rewire_(model, w, s)
    _assert_unchanged(model, expected)


def test_index_dtype_is_the_smallest_unsigned():
    from laperm_kernels.wiring import index_dtype

    assert index_dtype(1) == index_dtype(256) == torch.uint8
    assert index_dtype(257) == index_dtype(65536) == torch.uint16
    assert index_dtype(65537) == index_dtype(2**32) == torch.uint32
    assert index_dtype(2**32 + 1) == torch.uint64


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_signed_zeros_and_nan_payloads_rebuild_bit_identically(dtype):
    # rows of equal values, -0.0 beside +0.0 (equal in the contract's order) and NaNs
    # with different payloads (all equal in it): indices must still give the same bits
    width = torch.finfo(dtype).bits
    int_t = {16: torch.int16, 32: torch.int32, 64: torch.int64}[width]
    nan_a = torch.tensor([float("nan")], dtype=dtype)
    nan_b = (bits(nan_a) + 1).view(dtype)  # another quiet NaN payload
    nan_c = (bits(nan_a) | torch.tensor([1], dtype=int_t) << (width - 1)).view(dtype)  # -NaN
    row = torch.cat([torch.tensor([0.0, -0.0, 1.0, 1.0, -0.0, 0.0, 2.0, -1.0], dtype=dtype), nan_a])
    row = torch.cat([row, nan_b, nan_c])
    gen = torch.Generator().manual_seed(0)
    w = torch.stack([row[torch.randperm(len(row), generator=gen)] for _ in range(4)])
    w[1] = 0.5  # a row of one value
    model = nn.Linear(len(row), 4, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.copy_(w)
    expected = _snapshot(model)
    for sorted_inits in (None, {"weight": lk.sort_rows(w)}):
        wired = lk.wiring(model, sorted_inits)
        with torch.no_grad():
            model.weight.fill_(3.0)
        lk.rewire_(model, wired)
        _assert_unchanged(model, expected)


def test_conv_and_bias_rows():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    expected = _snapshot(model)
    w = lk.wiring(model, names=["0.weight", "0.bias"])
    assert w["tensors"]["0.weight"]["index"].shape == (4, 27)
    assert w["tensors"]["0.bias"]["index"].shape == (1, 4)  # a 1-D tensor is one row
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    lk.rewire_(model, w)
    _assert_unchanged(model, expected)


def test_export_refuses_rows_that_are_not_permutations_of_S():
    model, opt = _trained()
    with torch.no_grad():
        model[2].weight[3, 4] += 1.0  # an inner step after the last sync
    with pytest.raises(ValueError, match=r"row 3 of '2.weight' is not a permutation"):
        lk.wiring(model, opt)
    with pytest.raises(ValueError, match="names"):
        lk.wiring(model, names=["nope"])
    with pytest.raises(TypeError, match="sorted_inits"):
        lk.wiring(model, [1, 2])
    with pytest.raises(ValueError, match=r"sorted_inits\['0.weight'\] is"):
        lk.wiring(model, {"0.weight": torch.zeros(3, 3)})


def _bad(w, name, key, value):
    bad = copy.deepcopy(w)
    bad["tensors"][name][key] = value
    return bad


def test_rewire_refuses_bad_input_before_anything_changes():
    model, opt = _trained()
    w = lk.wiring(model, opt)
    other, _ = _trained(seed=1)
    with torch.no_grad():  # the model to rebuild: its weights must survive each refusal
        for p in other.parameters():
            p.mul_(2)
    before = _snapshot(other)
    idx = w["tensors"]["2.weight"]["index"]  # uint8, [5, 20]; the last tensor checked
    out_of_range = idx.clone()
    out_of_range[2, 0] = 20
    repeated = idx.clone()
    repeated[4, 1] = repeated[4, 0]
    wider = nn.Sequential(nn.Linear(300, 20), nn.ReLU(), nn.Linear(20, 6))
    sorted64 = w["tensors"]["2.weight"]["sorted"].double()
    no_such = r"\['2.weight'\] is float32 \(5, 20\); the parameter is float32 \(6, 20\)"
    cases = [
        (ValueError, "model has no parameter 'renamed'", {"tensors": {"renamed": {}}}),
        (ValueError, no_such, None),
        (ValueError, r"row 2 holds 20 >= 20", _bad(w, "2.weight", "index", out_of_range)),
        (ValueError, r"row 4 repeats an index", _bad(w, "2.weight", "index", repeated)),
        (TypeError, r"\['index'\] must be an unsigned", _bad(w, "2.weight", "index", idx.long())),
        (ValueError, r"\['index'\] is \(20, 5\)", _bad(w, "2.weight", "index", idx.t())),
        (ValueError, r"\['sorted'\] is float64", _bad(w, "2.weight", "sorted", sorted64)),
        (ValueError, r"is float64 \(5, 20\)", _bad(w, "2.weight", "dtype", "float64")),
    ]
    for error, match, wiring in cases:
        if wiring is not None and "format" not in wiring:
            wiring = {**w, "tensors": {**w["tensors"], **wiring["tensors"]}}
        target = wider if wiring is None else other
        with pytest.raises(error, match=match):
            lk.rewire_(target, w if wiring is None else wiring)
        _assert_unchanged(other, before)
    with pytest.raises(TypeError, match="made by lk.wiring"):
        lk.rewire_(other, {"tensors": {}})
    with pytest.raises(ValueError, match="version"):
        lk.rewire_(other, {**w, "version": 99})
    _assert_unchanged(other, before)
