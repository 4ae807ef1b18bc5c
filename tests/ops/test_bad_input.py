"""Bad input: a clear error naming the argument, raised before any tensor is touched.

An optimizer syncs a whole model in one rank_match_many_ call; an error halfway through
must not leave the model half-permuted. So every case below also checks, bit for bit,
that no tensor it passed was modified, including calls where only the last tensor is bad.
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple

import pytest
import torch

import laperm_kernels as lk
import laperm_kernels.ops.backends as backends
from laperm_kernels.ops import rank_match as ops
from tests.helpers import (
    BACKENDS,
    assert_bitwise_equal,
    generator,
    make_sorted_init,
    make_values,
    needs_extension,
    reference_result,
)


def _w(shape=(4, 6), dtype=torch.float32, seed=0) -> torch.Tensor:
    return make_values("normal", shape, dtype, generator(seed))


def _s(w: torch.Tensor) -> torch.Tensor:
    return lk.sort_rows(make_values("normal", w.shape, w.dtype, generator(99)))


class Case(NamedTuple):
    call: Callable[[], object]
    tensors: List[torch.Tensor]  # everything passed: none may change
    error: type
    match: str


def _tensors_in(*args) -> List[torch.Tensor]:
    """The tensors among ``args`` and inside their lists/tuples (generators left unread)."""
    out = []
    for a in args:
        for t in a if isinstance(a, (list, tuple)) else [a]:
            if isinstance(t, torch.Tensor):
                out.append(t)
    return out


def _single(w, s, error, match, **kw) -> Case:
    return Case(lambda: lk.rank_match_(w, s, **kw), _tensors_in(w, s), error, match)


def _many(ws, ss, error, match, **kw) -> Case:
    return Case(lambda: lk.rank_match_many_(ws, ss, **kw), _tensors_in(ws, ss), error, match)


def _last_bad(bad_w, bad_s, error, match, **kw) -> Case:
    """Two valid pairs, then a bad one: the valid ones must come back untouched too."""
    ws = [_w((5, 7), seed=1), _w((3, 2, 2), torch.float64, seed=2)]
    return _many([*ws, bad_w], [*map(_s, ws), bad_s], error, match, **kw)


def _expanded() -> torch.Tensor:
    return torch.randn(1, 6, generator=generator(3)).expand(4, 6)


def _overlapping_views():
    base = _w((6, 6))
    return base[:3], base[2:5]  # row 2 is in both


CASES = {}  # name -> () -> Case
EXTENSION_CASES = {}  # the same, for cases that need the C++ backend


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def extension_case(fn):
    EXTENSION_CASES[fn.__name__] = fn
    return fn


# --- rank_match_: messages name weight / sorted_init ------------------------------------


@case
def shape_mismatch():
    return _single(
        _w(), _w((6, 4)), ValueError, r"sorted_init has shape \(6, 4\) but weight has \(4, 6\)"
    )


@case
def shape_mismatch_same_rows():
    return _single(_w((4, 6)), _w((4, 2, 3)), ValueError, "sorted_init has shape")


@case
def dtype_mismatch():
    return _single(
        _w(),
        _w(dtype=torch.float64),
        TypeError,
        "sorted_init has dtype torch.float64 but weight has torch.float32",
    )


@case
def device_mismatch():
    return _single(
        _w(),
        torch.empty(4, 6, device="meta"),
        ValueError,
        "sorted_init is on meta but weight is on cpu; .* same device",
    )


@case
def integer_dtype():
    t = torch.arange(24, dtype=torch.int32).reshape(4, 6)
    return _single(t, t.clone(), TypeError, "weight has dtype torch.int32.*floating")


@case
def long_dtype():
    t = torch.arange(6)
    return _single(t, t.clone(), TypeError, "weight has dtype torch.int64.*floating")


@case
def uint8_dtype():
    t = torch.arange(6, dtype=torch.uint8)
    return _single(t, t.clone(), TypeError, "weight has dtype torch.uint8.*floating")


@case
def bool_dtype():
    t = torch.tensor([True, False, True])
    return _single(t, t.clone(), TypeError, "weight has dtype torch.bool.*floating")


@case
def complex_dtype():
    t = torch.randn(4, 6, dtype=torch.complex64, generator=generator(4))
    return _single(t, t.clone(), TypeError, "weight has dtype torch.complex64.*floating")


@case
def zero_dim():
    return _single(torch.tensor(1.0), torch.tensor(1.0), ValueError, "weight is 0-d")


@case
def weight_not_a_tensor():
    return _single([1.0, 2.0], _w((2,)), TypeError, "weight must be a torch.Tensor, got list")


@case
def sorted_init_is_the_weight():
    w = _w()
    return _single(w, w, ValueError, "sorted_init and weight share memory")


@case
def sorted_init_overlaps_the_weight():
    return _single(*_overlapping_views(), ValueError, "share memory")


@case
def expanded_weight():
    w = _expanded()
    return _single(w, _s(w), ValueError, "weight has elements that share memory")


@case
def self_overlapping_weight():
    w = _w((30,)).as_strided((4, 6), (3, 1))  # rows overlap by half
    return _single(w, _s(w), ValueError, "weight has elements that share memory")


@case
def unknown_backend():
    return _single(
        _w(),
        _s(_w()),
        ValueError,
        "unknown backend 'nope'; choose 'auto' or one of",
        backend="nope",
    )


@case
def backend_not_a_str():
    return _single(_w(), _s(_w()), TypeError, "backend must be a str", backend=None)


@extension_case
def cpu_backend_on_meta():
    w, s = torch.empty(4, 6, device="meta"), torch.empty(4, 6, device="meta")
    return _single(w, s, ValueError, "backend 'cpu' does not support .* on meta", backend="cpu")


# --- rank_match_many_: messages name weights[i] / sorted_inits[i] -----------------------


@case
def list_lengths():
    return _many([_w(), _w()], [_s(_w())], ValueError, "got 2 weights but 1 sorted_inits")


@case
def weights_is_a_tensor():
    w = _w()
    return _many(w, [_s(w)], TypeError, "weights must be a list or tuple of tensors, got Tensor")


@case
def sorted_inits_is_a_tensor():
    w = _w()
    return _many([w], _s(w), TypeError, "sorted_inits must be a list or tuple")


@case
def weights_is_a_generator():
    w = _w()
    return _many((t for t in [w]), [_s(w)], TypeError, "weights must be a list or tuple")


@case
def duplicate_weight():
    w = _w()
    return _many([w, w], [_s(w), _s(w)], ValueError, r"weights\[0\] and weights\[1\] share memory")


@case
def overlapping_weights():
    a, b = _overlapping_views()
    return _many([a, b], [_s(a), _s(b)], ValueError, r"weights\[0\] and weights\[1\] share memory")


@case
def sorted_init_aliases_another_weight():
    w1, w2 = _w(seed=4), _w(seed=5)
    return _many([w1, w2], [_s(w1), w1], ValueError, "share memory")


# --- rank_match_many_: only the last tensor is bad --------------------------------------


@case
def last_integer_dtype():
    t = torch.zeros(3, dtype=torch.int32)
    return _last_bad(t, t.clone(), TypeError, r"weights\[2\] has dtype torch.int32.*floating")


@case
def last_shape_mismatch():
    return _last_bad(_w(), _w((4, 5)), ValueError, r"sorted_inits\[2\] has shape")


@case
def last_dtype_mismatch():
    return _last_bad(_w(), _w(dtype=torch.float16), TypeError, r"sorted_inits\[2\] has dtype")


@case
def last_zero_dim():
    return _last_bad(torch.tensor(1.0), torch.tensor(1.0), ValueError, r"weights\[2\] is 0-d")


@case
def last_expanded():
    w = _expanded()
    return _last_bad(w, _s(w), ValueError, r"weights\[2\] has elements that share memory")


@case
def last_device_mismatch():
    return _last_bad(
        _w(), torch.empty(4, 6, device="meta"), ValueError, r"sorted_inits\[2\] is on meta"
    )


@case
def last_not_a_tensor():
    return _last_bad("w", _w(), TypeError, r"weights\[2\] must be a torch.Tensor")


@case
def last_aliases_the_first():
    w1 = _w((5, 7), seed=1)
    w2 = _w((3, 2, 2), torch.float64, seed=2)
    return _many(
        [w1, w2, w1[1:3]],
        [_s(w1), _s(w2), _s(w1[1:3])],
        ValueError,
        r"weights\[0\] and weights\[2\] share memory",
    )


@extension_case
def last_on_meta_with_cpu_backend():
    # Found while planning, after every per-tensor check passed.
    w, s = torch.empty(4, 6, device="meta"), torch.empty(4, 6, device="meta")
    return _last_bad(w, s, ValueError, "backend 'cpu' does not support .* on meta", backend="cpu")


@case
def weights_sharing_exactly_one_element():
    # a 1-D base: w1 ends on element 9, w2 starts there (the spans' edges must count)
    base = _w((19,))
    return _many(
        [base[:10], base[9:]],
        [_s(base[:10]), _s(base[9:])],
        ValueError,
        r"weights\[0\] and weights\[1\] share memory",
    )


@case
def weight_overlapping_itself_with_positive_strides():
    w = _w((20,)).as_strided((3, 4), (4, 2))  # rows step 4, columns 2: elements repeat
    return _single(w, _s(w), ValueError, "weight has elements that share memory")


def _check_raises_and_untouched(case: Case) -> None:
    before = [t.clone() for t in case.tensors]
    with pytest.raises(case.error, match=case.match):
        case.call()
    for i, (t, b) in enumerate(zip(case.tensors, before)):
        if t.device.type != "meta":
            assert_bitwise_equal(t, b, f"argument {i} was modified")


@pytest.mark.parametrize("name", CASES)
def test_bad_input_raises_before_touching_anything(name):
    _check_raises_and_untouched(CASES[name]())


@needs_extension
@pytest.mark.parametrize("name", CASES)
def test_the_native_check_refuses_every_bad_input(name, monkeypatch):
    # ops/rank_match.py validates a call in one native call (laperm::check_call_) and runs
    # the Python checks, which name the argument, only when it refuses: it must refuse all
    # of these.
    said = []

    def spy(weights, sorted_inits, *fast_path):
        said.append(native(weights, sorted_inits, *fast_path)[0])
        return said[-1], [], [], False, False

    native = ops._native_check
    monkeypatch.setattr(ops, "_native_check", spy)
    _check_raises_and_untouched(CASES[name]())
    assert True not in said


@needs_extension
@pytest.mark.parametrize("name", EXTENSION_CASES)
def test_bad_input_for_the_cpu_backend(name):
    _check_raises_and_untouched(EXTENSION_CASES[name]())


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError) as err:
        lk.rank_match_(_w(), _s(_w()), backend="nope")
    for name in backends.BACKENDS:
        assert repr(name) in str(err.value)


def test_unavailable_backend(monkeypatch):
    monkeypatch.setattr(backends.BACKENDS["cpu"], "is_available", lambda: False)
    w = _w()
    _check_raises_and_untouched(
        _single(w, _s(w), RuntimeError, "backend 'cpu' is not available", backend="cpu")
    )


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.zeros(3, dtype=torch.int64), TypeError, "tensor has dtype torch.int64.*floating"),
        (torch.tensor(1.0), ValueError, "tensor is 0-d"),
        ([1.0, 2.0], TypeError, "tensor must be a torch.Tensor"),
    ],
)
def test_sort_rows_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        lk.sort_rows(bad)


# --- edge cases that are not errors -------------------------------------------------------


@BACKENDS
@pytest.mark.parametrize("shape", [(0,), (0, 5), (5, 0), (3, 0, 4), (1,), (5, 1), (4, 1, 1, 1)])
def test_empty_tensors_and_rows_of_one_are_fine(backend, shape):
    w = make_values("special", shape, torch.float32, generator(6))
    s = make_sorted_init(shape, torch.float32, generator(7))
    lk.rank_match_(w, s, backend=backend)
    # a row of one element becomes its sorted_init; an empty one stays empty
    assert_bitwise_equal(w, s)


@BACKENDS
def test_expanded_empty_weight_is_fine(backend):
    # Nothing to permute, so nothing can overlap.
    w = torch.empty(1, 0).expand(3, 0)
    lk.rank_match_(w, torch.empty(3, 0), backend=backend)


@BACKENDS
def test_sorted_inits_may_share_memory(backend):
    """sorted_inits are only read: one S for several equal-shaped weights is fine."""
    w1, w2 = _w(seed=8), _w(seed=9)
    s = lk.sort_rows(_w(seed=10))
    expected = [reference_result(w1, s), reference_result(w2, s)]
    lk.rank_match_many_([w1, w2], [s, s], backend=backend)
    assert_bitwise_equal(w1, expected[0])
    assert_bitwise_equal(w2, expected[1])


@BACKENDS
def test_expanded_sorted_init_is_fine(backend):
    w = _w()
    s = lk.sort_rows(_w((1, 6))).expand(4, 6)  # one S row for every row: only read
    expected = reference_result(w, s)
    lk.rank_match_(w, s, backend=backend)
    assert_bitwise_equal(w, expected)


# --- the native ops' own checks (direct torch.ops calls bypass ops/rank_match.py) -------
# One check (csrc/tensor_pairs.cpp) guards every operator's (weight, sorted init) pairs:
# the same bad input raises the same type from the CPU kernel's op and from the CUDA
# backend's path (here its CPU emulation, which checks its group as rank_match_planned_
# does), and the type the Python API raises: TypeError for a dtype, ValueError otherwise.

DIRECT_CASES = {  # name -> () -> (weights, sorted_inits, error, match)
    "shape": lambda: ([_w()], [_w((6, 4))], ValueError, "shape"),
    "lengths": lambda: ([_w(), _w()], [_w()], ValueError, "2 weights but 1 sorted_inits"),
    "weight_not_contiguous": lambda: ([_w((6, 4)).t()], [_w()], ValueError, "contiguous"),
    "sorted_init_not_contiguous": lambda: ([_w()], [_w((6, 4)).t()], ValueError, "contiguous"),
    "dtype_mismatch": lambda: ([_w()], [_w(dtype=torch.float64)], TypeError, "dtype"),
    "int_dtype": lambda: (
        [torch.zeros(4, 6, dtype=torch.int32)],
        [torch.zeros(4, 6, dtype=torch.int32)],
        TypeError,
        "dtype",
    ),
    "0d": lambda: ([torch.tensor(1.0)], [torch.tensor(1.0)], ValueError, "0-d"),
    "last_bad": lambda: (
        [_w(seed=1), _w(seed=2)],
        [_s(_w(seed=1)), _w((6, 4))],
        ValueError,
        r"sorted_inits\[1\] has shape",
    ),
}


def _emulate_planned(ws, ss):
    """The CUDA backend's checks, on CPU tensors: the group is refused before the plan
    (empty here) is read."""
    no_plan = (
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int32),
    )
    torch.ops.laperm_testing.emulate_planned_(ws, ss, *no_plan)


@needs_extension
@pytest.mark.parametrize("name", DIRECT_CASES)
@pytest.mark.parametrize("op", ["cpu_op", "cuda_path"])
def test_native_op_checks(name, op):
    ws, ss, error, match = DIRECT_CASES[name]()
    run = torch.ops.laperm.rank_match_many_ if op == "cpu_op" else _emulate_planned
    _check_raises_and_untouched(Case(lambda: run(ws, ss), [*ws, *ss], error, match))


def test_adjacent_views_sharing_no_element_are_fine():
    # the complement of weights_sharing_exactly_one_element: touching spans, no overlap
    base = _w((20,))
    a, b = base[:10], base[10:]
    want = [reference_result(t, _s(t)) for t in (a, b)]
    lk.rank_match_many_([a, b], [_s(a), _s(b)])
    for got, exp in zip((a, b), want):
        assert_bitwise_equal(got, exp)
