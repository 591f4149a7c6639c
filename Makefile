# One command each: `make test` (setup + lint + tests) and `make serve` (setup + service on the shipped checkpoint).
# Setup makes .venv with CPU torch. Elsewhere, point pip at the CPU wheel index:
#   make test TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_INDEX ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup test test-fast serve lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0" $(TORCH_INDEX)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest

# For development: everything but the tests marked slow (scipy-oracle quadratures, training, the README run).
test-fast: lint
	$(PY) -m pytest -m "not slow"

serve: setup
	$(VENV)/bin/mist serve --host $(HOST) --port $(PORT)

bench: setup
	$(PY) benchmarks/generate_bench.py --out benchmarks/results/generate.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
