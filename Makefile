# The two commands of the README: `make demo` (the main job) and `make test`.
# Each creates .venv on first use. torch is installed only when the venv cannot import it,
# pinned to the local CPU wheel (torch==2.13.0), before anything that depends on it, so pip
# never resolves another (CUDA) build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bbopt-installed

.PHONY: demo test lint install package clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,bench,mujoco,aloha,ray,tracking]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bbopt demo --out runs/demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# two pytest-xdist workers (one torch thread each: tests/conftest.py): 6.4-7.4 minutes on the
# two cores here, against 12.7 in one process
test: lint
	$(PY) -m pytest -q -n 2 --dist worksteal

package: $(STAMP)
	bash .ci/wheel

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
