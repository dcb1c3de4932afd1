# Two commands on a fresh machine (Python 3.11+ with pip): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# Real data sets for tests and benchmarks ship inside these packages (see ../shared/DATASETS.md).
DATASETS = recbole==1.2.1 lifetimes==0.11.3

.PHONY: demo test test-all lint bench bench-collector bench-analytics

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(DATASETS)
	touch $@

demo: $(VENV)/.runtime
	$(BIN)/footfall demo

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy

# The default run leaves out the tests marked slow (long Hypothesis searches,
# a few hundred examples each); `make test-all` runs them too.
test: lint
	$(BIN)/pytest -m "not slow"

test-all: lint
	$(BIN)/pytest

bench: $(VENV)/.dev
	$(BIN)/python bench/ingest_store.py

bench-collector: $(VENV)/.dev
	$(BIN)/python bench/collector_load.py
	$(BIN)/python bench/collector_crash.py

bench-analytics: $(VENV)/.dev
	$(BIN)/python bench/analytics.py
