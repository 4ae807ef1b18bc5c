"""The first-step fingerprint weighs every 16-bit word of a weight, the first included:
a weight changed in its first element only (a 16-bit weight's first word) is noticed at
the first step like any other change. (The rest of the first-step check:
test_first_step.py.)"""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.optim.first_step import _PERIOD, fingerprint
from tests.helpers import DTYPES, assert_bitwise_equal, mlp

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("word", [0, 1, _PERIOD - 1, _PERIOD])
def test_a_change_of_any_one_word_changes_the_fingerprint(dtype, word):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(_PERIOD + 7, generator=g).to(dtype)  # 1 to 4 words an element
    changed = t.clone()
    changed.view(torch.int16)[word] += 1
    assert int(fingerprint(changed)) != int(fingerprint(t)), f"word {word} of {dtype} unweighed"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16_bit_weight_changed_in_its_first_element_gets_its_s_taken_again(dtype):
    model = mlp(dtype=dtype)
    opt = lk.LaPerm(torch.optim.SGD(model.parameters(), lr=0.1), sync_period=2)
    w = model[0].weight
    with torch.no_grad():
        w[0, 0] = -w[0, 0] + 1  # its first element is its first word
    changed = w.detach().clone()
    with pytest.warns(UserWarning, match="parameter 0 of param group 0 changed in place"):
        opt.sync()
    assert_bitwise_equal(opt.sorted_inits[w], lk.sort_rows(changed), "S of the changed weight")
