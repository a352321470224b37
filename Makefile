# recon-service developer entry points. Everything a test needs is installed by `make setup`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test lint bench bench-data clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch comes first: a bare torch requirement would pull the CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,data,ray]"
	bash scripts/install-system-deps.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/recon demo --out demo-out

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/pytest -q

# the simulated brain benchmark that benchmarks/mri_brain.py scores (`recon simulate mri --set all`: train, val and
# the held-out sets), made where missing; each set is written aside and moved into place when complete, so an
# interrupted run is redone rather than half used
BENCH_DATA ?= data/brain-bench
BENCH_SETS := train val val-orientation test test-orientation test-contrast
# the equispaced-mask copies of val and test (the out-of-distribution flag's calibration and held-out sets)
EQUISPACED_DATA ?= data/brain-equispaced

bench-data: setup
	@for set in $(BENCH_SETS); do \
	  if [ ! -d "$(BENCH_DATA)/$$set" ]; then \
	    rm -rf "$(BENCH_DATA)/.partial" && \
	    $(VENV)/bin/recon simulate mri --out "$(BENCH_DATA)/.partial" --set $$set && \
	    mv "$(BENCH_DATA)/.partial/$$set" "$(BENCH_DATA)/$$set" && rm -rf "$(BENCH_DATA)/.partial" || exit 1; \
	  fi; \
	done; echo "benchmark data: $(BENCH_DATA) ($(BENCH_SETS))"
	@if [ ! -d "$(EQUISPACED_DATA)/test" ]; then \
	  rm -rf "$(EQUISPACED_DATA).partial" && \
	  $(VENV)/bin/recon simulate mri --out "$(EQUISPACED_DATA).partial" --set test --mask equispaced --seed 3 && \
	  mkdir -p "$(EQUISPACED_DATA)" && mv "$(EQUISPACED_DATA).partial/test" "$(EQUISPACED_DATA)/test" && \
	  rm -rf "$(EQUISPACED_DATA).partial" || exit 1; \
	fi; echo "equispaced-mask test set: $(EQUISPACED_DATA)/test"
	@if [ ! -d "$(EQUISPACED_DATA)/val" ]; then \
	  rm -rf "$(EQUISPACED_DATA).partial" && \
	  $(VENV)/bin/recon simulate mri --out "$(EQUISPACED_DATA).partial" --set val --mask equispaced --seed 4 && \
	  mkdir -p "$(EQUISPACED_DATA)" && mv "$(EQUISPACED_DATA).partial/val" "$(EQUISPACED_DATA)/val" && \
	  rm -rf "$(EQUISPACED_DATA).partial" || exit 1; \
	fi; echo "equispaced-mask validation set: $(EQUISPACED_DATA)/val"

bench: setup bench-data
	$(PY) benchmarks/mri_classical.py
	$(PY) benchmarks/ct_operators.py
	$(PY) benchmarks/mri_brain.py --data $(BENCH_DATA)
	$(PY) benchmarks/unrolled_latency.py

clean:
	rm -rf $(VENV) demo-out benchmarks/out .pytest_cache
