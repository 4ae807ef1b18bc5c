"""A short fuzz campaign (tests/reliability/fuzz.py) in the test suite: every backend that runs CPU
tensors, bit for bit against the reference (the reference against the Python oracle).
The full campaign is ``python tests/reliability/fuzz.py`` (10,000 cases a backend)."""

from __future__ import annotations

import pytest

from tests.reliability import fuzz

CASES = 150

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("backend", list(fuzz.BACKENDS))
def test_short_campaign(backend):
    if not fuzz.BACKENDS[backend][1]():
        pytest.skip(f"{backend} is not available here")
    report = fuzz.campaign([backend], CASES, seed=2026, log=lambda line: None)[backend]
    assert report["findings"] == []
    assert report["cases"] == CASES


def test_cases_are_reproducible():
    a, b = fuzz.make_case("cpu", 17, 5), fuzz.make_case("cpu", 17, 5)
    assert a[2] == b[2] and len(a[0]) == len(b[0])
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert x.shape == y.shape and x.stride() == y.stride()
        assert fuzz.bits(x).equal(fuzz.bits(y))
