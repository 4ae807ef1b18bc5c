"""The compiled extension must be there: without it every backend test would skip and the
suite would pass on the reference alone. Set LAPERM_ALLOW_NO_EXTENSION=1 to run the
suite on a pure-Python install on purpose."""

from __future__ import annotations

import os

import pytest

import laperm_kernels as lk


def test_the_compiled_extension_loaded():
    if os.environ.get("LAPERM_ALLOW_NO_EXTENSION") == "1":
        pytest.skip("LAPERM_ALLOW_NO_EXTENSION=1: a pure-Python run, on purpose")
    assert lk._extension.is_loaded(), (
        f"laperm_kernels._C did not load ({lk._extension.load_error()}); build it with "
        "`pip install --no-build-isolation -e .`, or set LAPERM_ALLOW_NO_EXTENSION=1 to "
        "test without it"
    )
    assert "cpu" in lk.available_backends("cpu")
