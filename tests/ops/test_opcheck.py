"""The registered ``torch.ops.laperm`` operators: schema, fake kernel, torch.compile."""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal, reference_result, tensor_group

pytestmark = pytest.mark.skipif(
    not lk._extension.is_loaded(), reason=f"C++ extension not loaded: {lk._extension.load_error()}"
)

OPCHECK_CASES = {
    "fp32_linear_and_conv": [((16, 30), torch.float32), ((8, 3, 3, 3), torch.float32)],
    "fp64_and_1d": [((5, 40), torch.float64), ((33,), torch.float64)],
    "half_and_bfloat16": [((4, 100), torch.float16), ((6, 7), torch.bfloat16)],
    "with_empty": [((0, 5), torch.float32), ((3, 1), torch.float32)],
}


@pytest.mark.parametrize("case", OPCHECK_CASES)
def test_opcheck(case):
    # schema (declared mutation of weights only), fake kernel, autograd registration,
    # and AOT dispatch with dynamic shapes
    ws, ss = tensor_group(OPCHECK_CASES[case], "special", seed=30, sorted_inits="sorted_normal")
    torch.library.opcheck(torch.ops.laperm.rank_match_many_.default, (ws, ss))


def _sync_and_use(ws, ss):
    torch.ops.laperm.rank_match_many_(ws, ss)
    return [w * 2 for w in ws]  # reads the permuted values, position by position


def test_torch_compile_matches_eager():
    specs = [((12, 40), torch.float32), ((4, 3, 3, 3), torch.float32), ((50,), torch.float32)]
    ws, ss = tensor_group(specs, "ties", seed=31)
    eager_ws, compiled_ws = [w.clone() for w in ws], [w.clone() for w in ws]

    eager_out = _sync_and_use(eager_ws, ss)
    compiled = torch.compile(_sync_and_use, backend="aot_eager", fullgraph=True)
    compiled_out = compiled(compiled_ws, ss)

    for i in range(len(ws)):
        # the mutation reached the caller's tensors, and the graph saw the new values
        assert_bitwise_equal(compiled_ws[i], eager_ws[i], f"weight {i}")
        assert_bitwise_equal(compiled_out[i], eager_out[i], f"output {i}")
    assert not all(torch.equal(a, b) for a, b in zip(eager_ws, ws))  # it did permute
    for i, (w, s) in enumerate(zip(ws, ss)):  # and eager itself is right
        assert_bitwise_equal(eager_ws[i], reference_result(w, s), f"eager weight {i}")


def test_cpu_kernel_isa():
    assert torch.ops.laperm.cpu_kernel_isa() in ("avx512", "avx2", "generic")
    assert lk.ops.backends.cpu.kernel_isa() == torch.ops.laperm.cpu_kernel_isa()
