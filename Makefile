# recon-service developer entry points. Everything a test needs is installed by `make setup`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch comes first: a bare torch requirement would pull the CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,data]"
	bash scripts/install-system-deps.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/recon demo --out demo-out

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) benchmarks/mri_classical.py
	$(PY) benchmarks/ct_operators.py
	$(PY) benchmarks/mri_brain.py
	$(PY) benchmarks/unrolled_latency.py

clean:
	rm -rf $(VENV) demo-out benchmarks/out .pytest_cache
