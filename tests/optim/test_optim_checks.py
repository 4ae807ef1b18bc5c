"""What LaPerm refuses up front, naming the parameter, with nothing changed: a checkpoint
of another inner optimizer class, a parameter listed twice in a group, permuted
parameters sharing memory, and the errors' names for parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal, mlp, train_step

pytestmark = pytest.mark.usefixtures("one_thread")
K = 2


def test_the_state_dict_records_the_inner_optimizers_class():
    opt = lk.LaPerm(torch.optim.Adam(lk.param_groups(mlp())), K)
    assert {g["laperm_inner"] for g in opt.state_dict()["param_groups"]} == {
        "torch.optim.adam.Adam"
    }
    opt.load_state_dict(opt.state_dict())
    assert all("laperm_inner" not in g for g in opt.optimizer.param_groups)  # not leaked


def test_a_checkpoint_of_another_inner_class_is_refused_before_anything_changes():
    source = mlp(seed=1)
    adam = lk.LaPerm(torch.optim.Adam(source.parameters(), lr=1e-2), K)
    train_step(source, adam, 1)
    model = mlp()
    sgd = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), K)
    train_step(model, sgd, 1)
    S = dict(sgd.sorted_inits)
    state = {p: {k: v.clone() for k, v in st.items()} for p, st in sgd.state.items()}
    groups = sgd.param_groups
    with pytest.raises(
        ValueError,
        match=r"LaPerm\(torch\.optim\.adam\.Adam\), but this LaPerm "
        r"wraps torch\.optim\.sgd\.SGD",
    ):
        sgd.load_state_dict(adam.state_dict())
    assert sgd.step_count == 1 and sgd.param_groups is groups
    assert all(sgd.sorted_inits[p] is s for p, s in S.items())
    for p, st in sgd.state.items():
        assert_bitwise_equal(st["momentum_buffer"], state[p]["momentum_buffer"])
    train_step(model, sgd, 2)  # still trains (a sync at step 2)


def test_a_checkpoint_without_the_class_still_loads():
    model = mlp()
    opt = lk.LaPerm(torch.optim.Adam(model.parameters(), lr=1e-2), K)
    train_step(model, opt, 1)
    sd = opt.state_dict()
    for g in sd["param_groups"]:
        del g["laperm_inner"]  # as written before the class was recorded
    twin = lk.LaPerm(torch.optim.Adam(mlp(seed=3).parameters(), lr=1e-2), K)
    twin.load_state_dict(sd)
    assert twin.step_count == 1


def test_a_parameter_twice_in_a_group_is_refused_at_construction():
    model = mlp()
    named = [
        ("0.weight", model[0].weight),
        ("2.weight", model[2].weight),
        ("0.weight", model[0].weight),
    ]
    with pytest.warns(UserWarning, match="duplicate parameters"):  # torch only warns
        inner = torch.optim.SGD(named, lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"param group 0 lists parameter '0.weight' twice "
        r"\(at 0 and 2\)",
    ):
        lk.LaPerm(inner, K)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        inner = torch.optim.SGD([model[2].bias, model[2].weight, model[2].weight], lr=0.1)
    with pytest.raises(ValueError, match="lists parameter 1 of param group 0 twice"):
        lk.LaPerm(inner, K)


def test_a_parameter_listed_twice_is_left_to_torch_where_it_is_not_permuted():
    model = mlp()
    bias = model[0].bias
    with pytest.warns(UserWarning, match="duplicate parameters"):  # torch's warning
        opt = lk.LaPerm(torch.optim.SGD([model[0].weight, bias, bias], lr=0.1), K)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt.add_param_group({"params": [model[2].weight, model[2].bias, model[2].bias]})
    assert set(opt.sorted_inits) == {model[0].weight, model[2].weight}
    for t in range(K):
        train_step(model, opt, t)
    twin = lk.LaPerm(torch.optim.SGD([model[0].weight, bias, bias], lr=0.1), K)
    twin.add_param_group({"params": [model[2].weight, model[2].bias, model[2].bias]})
    twin.load_state_dict(opt.state_dict())
    assert twin.step_count == K
    for p in opt.sorted_inits:
        assert_bitwise_equal(twin.sorted_inits[p], opt.sorted_inits[p], "S")


def test_a_parameter_twice_in_an_added_group_is_refused_and_nothing_is_added():
    model = mlp()
    opt = lk.LaPerm(torch.optim.SGD([model[0].weight], lr=0.1), K)
    with pytest.raises(ValueError, match="param group 1 lists parameter 0 of param group 1 twice"):
        opt.add_param_group({"params": iter([model[2].weight, model[2].weight])})
    assert len(opt.param_groups) == len(opt.optimizer.param_groups) == 1
    assert set(opt.sorted_inits) == {model[0].weight}
    opt.add_param_group({"params": (p for p in [model[2].weight])})  # a generator: read once
    assert opt.param_groups[1]["params"] == [model[2].weight]
    assert model[2].weight in opt.sorted_inits


def test_permuted_parameters_sharing_memory_are_refused_by_name():
    base = torch.randn(8, 6)
    a, b = nn.Parameter(base), nn.Parameter(base[2:6])  # b views rows of a
    groups = [{"params": [a, b], "param_names": ["enc.weight", "dec.weight"]}]
    with pytest.raises(
        ValueError, match="parameter 'enc.weight' and parameter 'dec.weight' share memory"
    ):
        lk.LaPerm(torch.optim.SGD(groups, lr=0.1), K)
    apart = nn.Parameter(torch.randn(8, 6))
    lk.LaPerm(
        torch.optim.SGD(
            [
                {"params": [a], "permute": True},
                {"params": [b], "permute": False},
                {"params": [apart]},
            ],
            lr=0.1,
        ),
        K,
    )  # not permuted: not refused


def test_errors_name_parameters_from_param_groups():
    model = nn.Sequential(nn.Linear(4, 3), nn.ConvTranspose1d(3, 2, 2))
    groups = lk.param_groups(model)
    assert [g["param_names"] for g in groups] == [["0.weight"], ["1.weight"], ["0.bias", "1.bias"]]
    bad = [{**g, "row_dim": 3} if g.get("row_dim") == 1 else g for g in groups]
    with pytest.raises(ValueError, match=r"row_dim' is 3, but parameter '1.weight' has shape"):
        lk.LaPerm(torch.optim.SGD(bad, lr=0.1), K)
    opt = lk.LaPerm(torch.optim.SGD(groups, lr=0.1), K)
    opt.sync()
    model.double()
    with pytest.raises(ValueError, match="parameter '0.weight' is now torch.float64"):
        opt.sync()
    sd = lk.LaPerm(torch.optim.SGD(lk.param_groups(model), lr=0.1), K).state_dict()
    sd["state"][0]["sorted_init"] = torch.zeros(3, 4, dtype=torch.int32)
    with pytest.raises(TypeError, match="sorted_init of parameter '0.weight' has dtype"):
        opt.load_state_dict(sd)
