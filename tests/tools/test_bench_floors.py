"""The benchmark's floors: np.sort of the same rows' keys, as int64 (order key above the
column: the stable order) and as int32 (the order keys alone), and the lines that put
each kernel beside them."""

from __future__ import annotations

import pytest
import torch

from bench import baselines
from bench.results import Result, methods_for
from bench.table import floor_lines
from laperm_kernels.ops.reference import order_keys, stable_order
from tests.helpers import generator, make_values

np = pytest.importorskip("numpy")


@pytest.mark.parametrize("kind", ["special", "ties", "normal"])
def test_floor_keys_are_the_rows_order_keys(kind):
    w = make_values(kind, (5, 300), torch.float32, generator(19))
    baselines.prepare_sort_keys([w])
    k64 = next(baselines._packed_keys([w], "int64"))
    k32 = next(baselines._packed_keys([w], "int32"))
    assert k64.dtype == np.int64 and k32.dtype == np.int32
    np.testing.assert_array_equal(k32, order_keys(w).numpy())
    # Sorting the packed int64 keys gives the contract's stable order, column by column.
    columns = np.sort(k64, axis=1) & 0xFFFFFFFF
    np.testing.assert_array_equal(columns, stable_order(w).numpy())


def _result(method, per_s):
    return Result("p", "float32", "cpu", 1, method, 100, 1.0, per_s, 1.0, 1.0, "bit-identical")


def test_floor_lines_give_each_kernel_as_multiples_of_each_floor():
    results = [
        _result("torch", 10.0),
        _result("cpu", 300.0),
        _result("tf-two-argsorts", 5.0),
        _result("numpy-sort-int64", 200.0),
        _result("numpy-sort-int32", 400.0),
    ]
    assert floor_lines(results) == [
        "cpu vs the floors: 1.50x numpy-sort-int64, 0.75x numpy-sort-int32"
    ]
    assert floor_lines(results[:3]) == []  # no floor measured: no line


def test_the_benchmark_times_both_floors():
    names = [name for name, _, _ in methods_for(torch.device("cpu"), torch.float32, None)]
    assert set(baselines.FLOORS) <= set(names)
