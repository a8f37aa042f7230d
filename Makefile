# One-step install: `make install` makes .venv and installs idspn_jax with every extra.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: install test test-slow bench demo lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" tests

test-slow: install
	$(BIN)/python -m pytest -q -m slow tests

bench: install
	$(BIN)/python -m benchmarks.run

demo: install
	$(BIN)/python -m experiments.clevr --config=experiments/configs/clevr.py --workdir=workdirs/clevr_demo

lint: install
	$(BIN)/ruff check src experiments benchmarks tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
