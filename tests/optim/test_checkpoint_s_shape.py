"""A checkpoint's S must have the shape of its parameter's rows, not merely their number of
elements: S of the transposed weight (a ``row_dim=1`` model's), or a Conv2d's S in a
ConvTranspose2d's layout (in and out swapped), is refused by ``load_state_dict``, naming
the parameter, with the optimizer left as it was, not at the next sync after the state
was replaced. (The other refusals of a checkpoint: test_optim_checkpoint.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal

pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 2), nn.Flatten(), nn.Linear(36, 5))


def _train_step(model, opt):
    opt.zero_grad()
    model(
        torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    ).square().sum().backward()
    opt.step()


@pytest.mark.parametrize(
    "index,wrong_shape",
    [(2, (36, 5)), (0, (3, 4, 2, 2))],  # Linear [5, 36], Conv2d [4, 3, 2, 2]
    ids=["linear-transposed", "conv-in-and-out-swapped"],
)
def test_an_s_of_another_shape_but_as_many_elements_is_refused_at_load(index, wrong_shape):
    model = _model()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), sync_period=2)
    _train_step(model, opt)
    checkpoint = opt.state_dict()
    rows = checkpoint["state"][index]["sorted_init"]
    assert rows.shape != wrong_shape and rows.numel() == torch.Size(wrong_shape).numel()
    checkpoint["state"][index]["sorted_init"] = rows.reshape(wrong_shape).clone()
    held = dict(opt.sorted_inits)
    step, moments = opt.step_count, opt.state[model[2].weight]["exp_avg"].clone()

    with pytest.raises(ValueError, match=rf"sorted_init of parameter {index} .*{wrong_shape}"):
        opt.load_state_dict(checkpoint)

    assert opt.step_count == step
    assert set(opt.sorted_inits) == set(held)
    assert all(opt.sorted_inits[p] is s for p, s in held.items())  # the very same S
    assert_bitwise_equal(opt.state[model[2].weight]["exp_avg"], moments, "Adam's exp_avg")
    _train_step(model, opt)  # the step count: 2, a sync with the S held before
    for p, s in held.items():
        assert_bitwise_equal(lk.sort_rows(p.detach()), s, "rows")
