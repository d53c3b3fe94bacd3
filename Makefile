# llmctl — `make setup` once, then `make demo` (the quickstart) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first: here pip takes the CPU wheel from the machine's disk; elsewhere set
# TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" for a CPU-only build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup demo lint test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/llmctl run recipes/quickstart.yaml

# The house rules, kept by tools: lint, import order, modern syntax, likely bugs, formatting, types.
lint: setup
	$(VENV)/bin/ruff check llmctl tests scripts
	$(VENV)/bin/ruff format --check llmctl tests scripts
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

test-fast: lint
	$(PY) -m pytest tests/unit

bench: setup
	$(PY) scripts/bench_cli.py

clean:
	rm -rf runs .pytest_cache
