"""Property tests: random shapes, dtypes and data against the reference and docs/contract.md's
invariants. Data is drawn as (kind, seed) rather than element by element, so examples
stay cheap at any row length and every failure is reproducible from its printed draw."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import laperm_kernels as lk
from laperm_kernels.ops.reference import rows_and_length
from tests.helpers import (
    BACKEND_NAMES,
    DTYPES,
    KERNEL_NAMES,
    KINDS,
    assert_bitwise_equal,
    generator,
    make_sorted_init,
    make_values,
    needs_extension,
    num_threads,
    reference_result,
    run_backend,
    tensor_group,
)

# Lengths around every boundary of the C++ kernel: 0/1/2, the insertion-sort limit (32),
# the digit widths (256, 512, 1,024, 2,048), and long rows.
ROW_LENGTHS = [0, 1, 2, 3, 7, 31, 32, 33, 64, 65, 255, 256, 513, 1025, 2049, 5000]

shapes = st.one_of(
    st.sampled_from(ROW_LENGTHS).map(lambda n: (n,)),
    st.tuples(st.integers(0, 6), st.sampled_from(ROW_LENGTHS)),
    st.tuples(st.integers(0, 5), st.integers(1, 9), st.sampled_from([1, 3, 7, 33, 100])),
    st.tuples(
        st.integers(1, 6), st.integers(1, 8), st.sampled_from([1, 3, 5]), st.sampled_from([1, 3, 5])
    ),
)
dtypes = st.sampled_from(DTYPES)
kinds = st.sampled_from(KINDS)
seeds = st.integers(0, 2**32 - 1)


def _assert_equal_values(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Exactly equal as numbers: NaN equals NaN, -0.0 equals +0.0 (the tie rules)."""
    torch.testing.assert_close(
        actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda message: f"{what}: {message}"
    )


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(rows_and_length(t))


@settings(max_examples=2000, deadline=None)
@given(shape=shapes, dtype=dtypes, kind=kinds, seed=seeds)
def test_every_backend_matches_reference(shape, dtype, kind, seed):
    gen = generator(seed)
    w = make_values(kind, shape, dtype, gen)
    s = make_sorted_init(shape, dtype, gen)
    expected = reference_result(w, s)
    for backend in KERNEL_NAMES:
        assert_bitwise_equal(run_backend(backend, w, s), expected, backend)


def _weight_and_sorted_init(shape, dtype, w_kind, s_kind, seed):
    """W of one kind of data, and S = sort_rows of another, as LaPerm keeps it."""
    gen = generator(seed)
    w = make_values(w_kind, shape, dtype, gen)
    return w, lk.sort_rows(make_values(s_kind, shape, dtype, gen))


@settings(max_examples=600, deadline=None)
@given(shape=shapes, dtype=dtypes, w_kind=kinds, s_kind=kinds, seed=seeds)
def test_rows_become_a_permutation_of_sorted_init(shape, dtype, w_kind, s_kind, seed):
    """After rank matching with S = sort_rows(S0), each row of W sorted is S's row."""
    w, s = _weight_and_sorted_init(shape, dtype, w_kind, s_kind, seed)
    for backend in BACKEND_NAMES:
        out = run_backend(backend, w, s)
        _assert_equal_values(_rows(out).sort(dim=1).values, _rows(s), backend)


@settings(max_examples=600, deadline=None)
@given(shape=shapes, dtype=dtypes, w_kind=kinds, s_kind=kinds, seed=seeds)
def test_idempotent(shape, dtype, w_kind, s_kind, seed):
    w, s = _weight_and_sorted_init(shape, dtype, w_kind, s_kind, seed)
    for backend in BACKEND_NAMES:
        once = run_backend(backend, w, s)
        twice = run_backend(backend, once, s)
        _assert_equal_values(twice, once, backend)


@settings(max_examples=300, deadline=None)
@given(
    shapes=st.lists(shapes, min_size=1, max_size=5),
    dtypes_=st.lists(dtypes, min_size=5, max_size=5),
    kind=kinds,
    seed=seeds,
)
def test_many_equals_one_by_one(shapes, dtypes_, kind, seed):
    """Rows never interact: one call over a list (mixed dtypes) is the per-tensor calls."""
    ws, ss = tensor_group(list(zip(shapes, dtypes_)), kind, seed)
    for backend in BACKEND_NAMES:
        outs = [w.clone() for w in ws]
        lk.rank_match_many_(outs, ss, backend=backend)
        for i, (out, w, s) in enumerate(zip(outs, ws, ss)):
            assert_bitwise_equal(out, run_backend(backend, w, s), f"{backend} tensor {i}")


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(1, 40),
    length=st.sampled_from(ROW_LENGTHS[1:]),
    dtype=dtypes,
    kind=kinds,
    seed=seeds,
    data=st.data(),
)
def test_a_row_alone_equals_the_row_in_a_big_tensor(rows, length, dtype, kind, seed, data):
    r = data.draw(st.integers(0, rows - 1), label="row")
    gen = generator(seed)
    w = make_values(kind, (rows, length), dtype, gen)
    s = make_sorted_init((rows, length), dtype, gen)
    for backend in BACKEND_NAMES:
        whole = run_backend(backend, w, s)
        alone = run_backend(backend, w[r].clone(), s[r].clone())  # 1-D: one row
        assert_bitwise_equal(whole[r], alone, f"{backend} row {r}")


@needs_extension
@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 64), st.sampled_from(ROW_LENGTHS[1:])), min_size=1, max_size=4
    ),
    dtype=dtypes,
    kind=kinds,
    seed=seeds,
)
def test_cpu_kernel_bits_do_not_depend_on_thread_count(shapes, dtype, kind, seed):
    # A fixed tensor of 64 x 784 keeps every call above the kernel's serial threshold
    # (16,384 elements), so two threads really split the rows.
    ws, ss = tensor_group([(shape, dtype) for shape in [(64, 784), *shapes]], kind, seed)
    results = []
    for n in (1, 2):
        with num_threads(n):
            outs = [w.clone() for w in ws]
            lk.rank_match_many_(outs, ss, backend="cpu")
            results.append(outs)
    for i, (one, two) in enumerate(zip(*results)):
        assert_bitwise_equal(two, one, f"tensor {i}")
