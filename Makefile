# landscape sweeps: setup / run / test / report / ui / bench.
# On a fresh machine: `make run` (creates .venv, runs the smoke sweep, prints its report)
# and `make test`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch goes in first, or pip pulls several GB of CUDA packages.
# Where pip does not find the CPU build by itself, point it at PyTorch's CPU wheel index
# with TORCH_PIP_ARGS="--index-url <that index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
RESULTS ?= results
SWEEP ?= smoke
UI_PORT ?= 5000
# more options of `mlflow ui` (e.g. --workers 1)
UI_ARGS ?=
# Run each command in the Makefile as one shell, failing on the first error.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: setup run lint test test-all report ui bench bench-scale

# The installed console script marks a finished setup; it is redone when pyproject.toml changes.
$(BIN)/landscape-sweep: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) '$(TORCH_SPEC)'
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

setup: $(BIN)/landscape-sweep  ## virtual environment with torch (CPU), then the package and test tools

run: setup  ## the smoke sweep on a local Ray cluster; prints its report
	$(BIN)/landscape-sweep sweep=$(SWEEP) results_dir=$(RESULTS)

lint: setup  ## ruff (lint + format check) and mypy, rules in pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup lint  ## make lint first, then the default test suite (slow tests excluded), a few minutes on 2 cores
	$(BIN)/python -m pytest

test-all: setup  ## every test, slow ones included (the gpu ones skip where torch sees no CUDA device)
	$(BIN)/python -m pytest -m "slow or not slow"

report: setup  ## rebuild the report of SWEEP (default smoke) from its Parquet rows
	$(BIN)/landscape-report results_dir=$(RESULTS) sweep_name=$(SWEEP)

ui: setup  ## MLflow UI on http://127.0.0.1:$(UI_PORT) over results/mlflow.db, after printing each sweep's runs-table link (loopback only; see docs/cluster.md to expose it)
	$(BIN)/python -m ray_jobs.tracking.links $(RESULTS) $(UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(RESULTS))/mlflow.db --host 127.0.0.1 --port $(UI_PORT) $(UI_ARGS)

bench: setup  ## batched teacher-student core vs the per-run loop, 200 and 1,000 seeds; writes docs/benchmarks.md (~12 min)
	$(BIN)/python -m benchmarks.bench_teacher_student --seeds 200 --write docs/benchmarks.md
	$(BIN)/python -m benchmarks.bench_teacher_student --seeds 1000 --write docs/benchmarks.md

bench-scale: setup  ## the service at 10^6 runs of a null experiment, chunks 1,000 and 50; writes docs/benchmarks.md (15-25 min on 2 cores; ARGS=--quick: 10^5 runs)
	$(BIN)/python -m benchmarks.bench_scale --write docs/benchmarks.md $(ARGS)
