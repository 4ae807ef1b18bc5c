"""Which library holds which operator: the product's in ``torch.ops.laperm``, the test-only
and inspection ones in ``torch.ops.laperm_testing`` (csrc/testing/library.cpp); and the
module the fake kernels come from (``m.set_python_module`` in csrc/laperm.cpp)."""

from __future__ import annotations

import sys

import pytest
import torch

import laperm_kernels as lk

pytestmark = pytest.mark.skipif(
    not lk._extension.is_loaded(), reason=f"C++ extension not loaded: {lk._extension.load_error()}"
)

META_MODULE = "laperm_kernels.ops._meta_registrations"
TESTING_OPS = {
    "cpu_kernel_limits",
    "cuda_plan_layout",
    "cuda_decode_plan",
    "fail_allocation",
    "emulated_plan_scratch",
    "emulate_planned_",
}


def _ops_of(namespace: str) -> set:
    """The operator names (no overload) the dispatcher holds in `namespace`."""
    prefix = f"{namespace}::"
    return {
        name[len(prefix) :].split(".")[0]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith(prefix)
    }


def test_testing_library_holds_the_test_and_inspection_ops():
    assert _ops_of("laperm_testing") == TESTING_OPS


def test_product_library_holds_no_test_or_inspection_op():
    product = _ops_of("laperm")
    assert "rank_match_many_" in product  # the listing sees the library
    leftovers = {
        name for name in product if name.startswith(("_test_", "_inspect_")) or name in TESTING_OPS
    }
    assert not leftovers, f"test-only or inspection ops in torch.ops.laperm: {sorted(leftovers)}"
    for name in ("_test_fail_allocation", "_inspect_cuda_decode_plan", "cpu_kernel_limits"):
        assert not hasattr(torch.ops.laperm, name)


@pytest.mark.parametrize("op", ["rank_match_many_", "rank_match_planned_"])
def test_fake_kernels_module_is_named_by_the_library(op):
    # torch checks at a fake kernel's first call that register_fake ran in this module
    # (torch.library._check_pystubs_once); the module is imported with the package.
    stub = torch._C._dispatch_pystub(f"laperm::{op}", "")  # (module, context) or None
    assert stub is not None and stub[0] == META_MODULE, f"laperm::{op}'s python module: {stub}"
    assert META_MODULE in sys.modules
    assert torch._library.simple_registry.singleton.find(f"laperm::{op}").fake_impl.kernel
