"""Shared test helpers: the backends to run, exact comparison, the reference, and inputs.

Every backend is held to the PyTorch reference bit for bit (docs/contract.md), so comparisons are
on bit patterns: ``==`` would call NaN unequal to itself and -0.0 equal to +0.0, and both
would hide exactly the cases the ordering rules are about.

Test modules import these names from here (``from tests.helpers import ...``); fixtures
and hooks are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops.reference import (
    SUPPORTED_DTYPES,
    rank_match_reference_,
    rows_and_length,
    same_width_int,
)

DTYPES = SUPPORTED_DTYPES  # every dtype the contract takes

# Every backend that runs CPU tensors in this process: registering a backend in
# laperm_kernels.ops.backends is all it takes for it to run every test of the suite.
BACKEND_NAMES = lk.available_backends("cpu")
BACKENDS = pytest.mark.parametrize("backend", BACKEND_NAMES)
# The same but the reference itself ("torch"), for tests that compare a backend's result
# with the reference: tests/ops/test_reference.py holds the reference to an independent oracle.
KERNEL_NAMES = [b for b in BACKEND_NAMES if b != "torch"]
KERNELS = pytest.mark.parametrize("backend", KERNEL_NAMES)

needs_extension = pytest.mark.skipif(
    not lk._extension.is_loaded(), reason=f"C++ extension not loaded: {lk._extension.load_error()}"
)


# --- exact comparison -------------------------------------------------------------------

int_dtype = same_width_int  # the signed integer dtype of ``dtype``'s width


def bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s bit patterns, as a contiguous integer tensor of the same shape."""
    return t.detach().contiguous().view(int_dtype(t.dtype))


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """:func:`bitwise_equal`, failing with the first differing element in hex."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a, e = bits(actual), bits(expected)
    diff = (a != e).nonzero()
    if len(diff):
        where = tuple(diff[0].tolist())
        mask = (1 << (8 * actual.element_size())) - 1
        raise AssertionError(
            f"{what}: {len(diff)} of {a.numel()} elements differ; first at {where}: "
            f"got {int(a[where]) & mask:#x} ({actual[where].item()}), "
            f"expected {int(e[where]) & mask:#x} ({expected[where].item()})"
        )


# --- the reference ----------------------------------------------------------------------


def reference_result(weight: torch.Tensor, sorted_init: torch.Tensor) -> torch.Tensor:
    """What rank matching must turn ``weight`` into, by the reference, on a contiguous
    copy: the rows are those of the logical tensor, whatever its memory layout."""
    out = weight.detach().clone(memory_format=torch.contiguous_format)
    return rank_match_reference_(out, sorted_init.detach().contiguous())


def run_backend(backend: str, weight: torch.Tensor, sorted_init: torch.Tensor) -> torch.Tensor:
    """``rank_match_`` on a clone of ``weight``; returns the clone."""
    out = weight.clone()
    lk.rank_match_(out, sorted_init, backend=backend)
    return out


# --- inputs -----------------------------------------------------------------------------


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def from_bits(patterns, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D tensor of ``dtype`` with the given bit patterns (ints, read as unsigned)."""
    width = 8 * torch.empty((), dtype=dtype).element_size()
    signed = [p - (1 << width) if p >= 1 << (width - 1) else p for p in patterns]
    return torch.tensor(signed, dtype=int_dtype(dtype)).view(dtype)


# Quiet and signalling NaNs of both signs, by format: all must tie and sort last.
NAN_BITS = {
    torch.float32: [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF, 0x7FFFFFFF, 0x7FC12345],
    torch.float64: [
        0x7FF8000000000000,
        0xFFF8000000000000,
        0x7FF0000000000001,
        0xFFFFFFFFFFFFFFFF,
        0x7FF8DEADBEEF0001,
    ],
    torch.float16: [0x7E00, 0xFE00, 0x7C01, 0xFDFF, 0x7FFF],
    torch.bfloat16: [0x7FC0, 0xFFC0, 0x7F81, 0xFFFF, 0x7FA5],
}


def special_values(dtype: torch.dtype) -> torch.Tensor:
    """NaNs of several bit patterns, +-inf, +-0.0, extremes and subnormals of ``dtype``."""
    info = torch.finfo(dtype)
    ordinary = torch.tensor(
        [
            float("inf"),
            float("-inf"),
            0.0,
            -0.0,
            info.max,
            -info.max,
            info.tiny,
            -info.tiny,
            info.smallest_normal / 4,
            -info.smallest_normal / 4,
            1.0,
            -1.0,
        ],
        dtype=dtype,
    )
    return torch.cat([from_bits(NAN_BITS[dtype], dtype), ordinary])


def random_bits(shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Uniformly random bit patterns: every class of value, NaN payloads included."""
    it = int_dtype(dtype)
    info = torch.iinfo(it)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=it).view(dtype)


def _shuffle_rows(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    rows = x.reshape(rows_and_length(x))
    perm = torch.rand(rows.shape, generator=gen).argsort(dim=1)
    return rows.gather(1, perm).reshape(x.shape)


def _near_one(shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """+-1.0 plus a few ulps: patterns that share their top bits and differ in the low
    ones. The C++ kernel's radix passes sort a coordinate that keeps only the top bits of
    each magnitude (16-22 bits; 32 of fp64's 64 on its wide path): these tie there, so the
    tie fix-up alone orders them, with duplicates for stability. fp16/bf16 keys are sorted
    whole; they get the same shape of data."""
    low_bits = {torch.float32: 12, torch.float64: 24, torch.float16: 4, torch.bfloat16: 3}[dtype]
    one = int(torch.tensor(1.0, dtype=dtype).view(int_dtype(dtype)))
    k = torch.randint(0, 1 << low_bits, shape, generator=gen, dtype=torch.int64)
    patterns = (one + k).to(int_dtype(dtype))
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).to(dtype)
    return patterns.view(dtype) * sign


def make_values(kind: str, shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """A weight tensor of one kind of data; each kind stresses a part of the ordering."""
    shape = tuple(shape)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    normal = torch.randn(shape, generator=gen, dtype=compute)
    if kind == "normal":
        return normal.to(dtype)
    if kind == "ties":  # long runs of equal values: stability decides everything
        return torch.randint(0, 4, shape, generator=gen).to(dtype)
    if kind == "special":  # a quarter of the entries from special_values()
        pool = special_values(dtype)
        pick = pool[torch.randint(0, len(pool), shape, generator=gen)]
        return torch.where(torch.rand(shape, generator=gen) < 0.25, pick, normal.to(dtype))
    if kind == "signed_zeros":
        zeros = torch.where(torch.rand(shape, generator=gen) < 0.5, -0.0, 0.0).to(dtype)
        return torch.where(torch.rand(shape, generator=gen) < 0.7, zeros, normal.to(dtype))
    if kind in ("sorted", "reversed"):
        rows = normal.reshape(rows_and_length(normal))
        rows = rows.sort(dim=1, descending=kind == "reversed").values
        return rows.reshape(shape).to(dtype)
    if kind == "constant":
        return torch.full(shape, 0.375, dtype=dtype)
    if kind == "pruned":  # half the weights exact (+0.0) zeros, as after magnitude pruning
        return torch.where(torch.rand(shape, generator=gen) < 0.5, 0.0, normal).to(dtype)
    if kind == "two_valued":  # weight-agnostic init: {0, v}
        return torch.where(torch.rand(shape, generator=gen) < 0.5, 0.0, 0.0625).to(dtype)
    if kind == "near_one":
        return _shuffle_rows(_near_one(shape, dtype, gen), gen)
    if kind == "extreme":  # huge magnitudes and subnormals, both signs
        info = torch.finfo(dtype)
        huge = normal * (info.max / 8)
        tiny = normal * (info.smallest_normal / 8)  # mostly subnormal
        return torch.where(torch.rand(shape, generator=gen) < 0.5, huge, tiny).to(dtype)
    if kind == "random_bits":
        return random_bits(shape, dtype, gen)
    raise ValueError(f"unknown kind {kind!r}")


KINDS = (
    "normal",
    "ties",
    "special",
    "signed_zeros",
    "sorted",
    "reversed",
    "constant",
    "pruned",
    "two_valued",
    "near_one",
    "extreme",
    "random_bits",
)


def make_sorted_init(shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Values to write through the permutation, for comparisons with the reference.

    Random bit patterns, unsorted: the permutation is defined for any S, and distinct
    values make a single misplaced element visible (a sorted S with ties could hide a
    swap of two tied weights). Every bit pattern, NaN payloads included, must land in W.
    """
    return random_bits(shape, dtype, gen)


def tensor_group(
    specs, kind: str = "normal", seed=0, *, sorted_inits: str = "random_bits", device=None
):
    """Weights and their sorted inits for ``specs``, a list of ``(shape, dtype)`` (or
    ``(shape, dtype, kind)``, overriding ``kind`` for that tensor), all drawn from one
    generator: ``seed`` (an int, or a ``torch.Generator`` to go on drawing from). The
    weights are :func:`make_values` of ``kind``, drawn first; then one sorted init each:
    :func:`make_sorted_init` (``sorted_inits="random_bits"``) or the sorted rows of normal
    values (``"sorted_normal"``). With ``device``, both lists are moved there (drawn on the
    CPU, so a seed gives the same values on every device). Returns ``(ws, ss)``."""
    gen = seed if isinstance(seed, torch.Generator) else generator(seed)
    ws = [make_values(spec[2] if len(spec) > 2 else kind, spec[0], spec[1], gen) for spec in specs]
    if sorted_inits == "random_bits":
        ss = [make_sorted_init(w.shape, w.dtype, gen) for w in ws]
    elif sorted_inits == "sorted_normal":
        ss = [lk.sort_rows(make_values("normal", w.shape, w.dtype, gen)) for w in ws]
    else:
        raise ValueError(f"unknown sorted_inits {sorted_inits!r}")
    if device is not None:
        ws, ss = [w.to(device) for w in ws], [s.to(device) for s in ss]
    return ws, ss


# --- the trial's clock --------------------------------------------------------------------


class FakeClock:
    """Stands in for the dispatch trial's timer (``dispatch.DeviceTimer``): time passes only
    when a stand-in backend says so (``advance``), so which candidate wins a trial never
    depends on the machine's load. Install it with
    ``monkeypatch.setattr(dispatch, "DeviceTimer", clock.timer)``."""

    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def timer(self, device: torch.device) -> "FakeClock._Timer":
        return FakeClock._Timer(self)

    class _Timer:
        def __init__(self, clock: "FakeClock") -> None:
            self.clock = clock
            self.t0 = 0.0

        def start(self) -> None:
            self.t0 = self.clock.now

        def stop(self) -> float:
            return self.clock.now - self.t0


# --- threads ------------------------------------------------------------------------------


@contextlib.contextmanager
def num_threads(n: int):
    """torch's intra-op thread count (``torch.set_num_threads``) is ``n`` inside the block,
    and what it was again after (tests/conftest.py's ``one_thread`` fixture runs a module
    inside ``num_threads(1)``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


# --- a tiny model and its training step ---------------------------------------------------


def mlp(
    seed: int = 0,
    *,
    sizes=(8, 16, 4),
    act: type = torch.nn.ReLU,
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """Linear layers through ``sizes`` (inputs, hidden widths..., outputs) with ``act``
    between them, initialised from ``seed``, in ``dtype``. The default, Linear(8, 16),
    ReLU, Linear(16, 4), is :func:`train_step`'s model; a test module with a model of its
    own binds its sizes once (``functools.partial(mlp, sizes=...)``)."""
    torch.manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        if i:
            layers.append(act())
        layers.append(torch.nn.Linear(n_in, n_out))
    return torch.nn.Sequential(*layers).to(dtype)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, t: int) -> None:
    """One step of ``opt`` on a batch of the default :func:`mlp`'s inputs drawn from seed
    ``t``."""
    g = torch.Generator().manual_seed(t)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(
        model(torch.randn(6, 8, generator=g)), torch.randint(0, 4, (6,), generator=g)
    ).backward()
    opt.step()
