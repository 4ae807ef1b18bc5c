"""Weight layouts: LaPerm permutes each output unit's incoming weights, whichever dimension
of the weight indexes the units (``row_dim``), and ``lk.param_groups`` knows the layers."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal

pytestmark = pytest.mark.usefixtures("one_thread")


def unit_rows(w: torch.Tensor, row_dim: int) -> torch.Tensor:
    """One row per output unit: its incoming weights."""
    return w.detach().movedim(row_dim, 0).reshape(w.shape[row_dim], -1)


def train(model, opt, steps, make_input):
    for t in range(steps):
        opt.zero_grad()
        model(make_input(t)).float().square().mean().backward()
        opt.step()


def assert_units_permuted(w, initial, row_dim, what):
    """Every unit's incoming weights are a permutation of its initial ones, and the
    weight's other slicing (rows along another dim) is not: the units are what moved."""
    got, init = unit_rows(w, row_dim), unit_rows(initial, row_dim)
    assert torch.equal(got.sort(dim=1).values, init.sort(dim=1).values), what
    assert not torch.equal(got, init), f"{what}: nothing moved"
    other = 1 - row_dim
    assert not torch.equal(
        unit_rows(w, other).sort(dim=1).values, unit_rows(initial, other).sort(dim=1).values
    ), f"{what}: rows along dim {other} kept their values too: the layout is not tested"


def test_param_groups_per_layer_type():
    model = nn.Sequential(
        nn.Embedding(10, 6),
        nn.Linear(6, 8),
        nn.LayerNorm(8),
        nn.Unflatten(1, (8, 1, 1)),
        nn.ConvTranspose2d(8, 4, 3),
        nn.Conv2d(4, 5, 3),
        nn.Flatten(),
    )
    groups = lk.param_groups(model)
    by_id = {id(p): g for g in groups for p in g["params"]}
    rule = {
        n: by_id[id(p)].get("row_dim", "skip") if by_id[id(p)].get("permute", True) else "skip"
        for n, p in model.named_parameters()
    }
    assert rule == {
        "0.weight": "skip",
        "1.weight": 0,
        "1.bias": "skip",
        "2.weight": "skip",
        "2.bias": "skip",
        "4.weight": 1,
        "4.bias": "skip",
        "5.weight": 0,
        "5.bias": "skip",
    }
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    per_token = lk.param_groups(model, embeddings="per_token")
    assert any(g.get("row_dim") == 0 and model[0].weight in g["params"] for g in per_token)
    with pytest.raises(ValueError, match="embeddings must be one of"):
        lk.param_groups(model, embeddings="yes")


def test_conv_transpose_rows_are_output_units():
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(6, 4, 3)  # weight [in=6, out=4, 3, 3]
    initial = layer.weight.detach().clone()
    opt = lk.LaPerm(torch.optim.Adam(lk.param_groups(layer), lr=5e-2), sync_period=2)
    assert opt.sorted_inits[layer.weight].shape == (4, 6, 3, 3)  # units first
    train(
        layer, opt, 4, lambda t: torch.randn(2, 6, 5, 5, generator=torch.Generator().manual_seed(t))
    )
    assert_units_permuted(layer.weight, initial, 1, "ConvTranspose2d")


def test_grouped_conv_transpose_is_skipped_with_a_warning():
    layer = nn.ConvTranspose2d(4, 6, 3, groups=2)
    with pytest.warns(UserWarning, match="groups=2"):
        groups = lk.param_groups(layer)
    assert [g for g in groups if layer.weight in g["params"]][0]["permute"] is False


def test_row_dim_with_the_default_rule_and_checkpoints():
    torch.manual_seed(0)
    layer = nn.ConvTranspose1d(5, 3, 2)
    opt = lk.LaPerm(
        torch.optim.SGD([{"params": [layer.weight], "row_dim": 1}], lr=0.1), sync_period=1
    )
    sd = opt.state_dict()
    assert sd["state"][0]["sorted_init"].shape == (3, 5, 2)
    other = nn.ConvTranspose1d(5, 3, 2)  # another init: its own S differs
    twin = lk.LaPerm(torch.optim.SGD([{"params": [other.weight], "row_dim": 1}], lr=0.1))
    assert not torch.equal(twin.sorted_inits[other.weight], opt.sorted_inits[layer.weight])
    twin.load_state_dict(sd)
    assert_bitwise_equal(twin.sorted_inits[other.weight], opt.sorted_inits[layer.weight])
    with pytest.raises(ValueError, match="row_dim' is 3"):
        lk.LaPerm(torch.optim.SGD([{"params": [layer.weight], "row_dim": 3}], lr=0.1))


def _tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.GPT2LMHeadModel(config)


def test_gpt2_conv1d_rows_are_output_units():
    model = _tiny_gpt2()
    groups = lk.param_groups(model)
    row_dim = {
        id(p): g.get("row_dim") if g.get("permute", True) else None
        for g in groups
        for p in g["params"]
    }
    named = dict(model.named_parameters())
    conv1d = [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    assert conv1d and all(row_dim[id(named[f"{n}.weight"])] == 1 for n in conv1d)
    assert row_dim[id(named["transformer.wte.weight"])] is None  # token embedding
    assert row_dim[id(named["transformer.wpe.weight"])] is None  # position embedding
    assert model.lm_head.weight is named["transformer.wte.weight"]  # tied: one rule
    initial = {n: named[f"{n}.weight"].detach().clone() for n in conv1d}
    opt = lk.LaPerm(torch.optim.Adam(groups, lr=5e-2), sync_period=2)

    def ids(t):
        return torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(t))

    for t in range(4):
        opt.zero_grad()
        model(input_ids=ids(t), labels=ids(t)).loss.backward()
        opt.step()
    for n in conv1d:
        w = named[f"{n}.weight"]  # [in, out]
        assert opt.sorted_inits[w].shape == (w.shape[1], w.shape[0])
        assert_units_permuted(w, initial[n], 1, n)
