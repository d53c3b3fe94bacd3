# llmctl — `make setup` once, then `make demo` (the quickstart) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first: here pip takes the CPU wheel from the machine's disk; elsewhere set
# TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" for a CPU-only build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# llama-cpp-python is compiled here (PyPI has its source only), for this CPU, without llama.cpp's AMX kernels:
# on AMX CPUs they segfault on quantized multi-token batches (llama.cpp #20824); AVX-512/VNNI kernels stay.
# No multimodal (llava/mtmd) library: llmctl does not use it. pip caches the built wheel.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8

.PHONY: setup demo lint test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q -c constraints.txt -e ".[test,cluster]"
	$(PY) -m llmctl.models.gguf install-converter
	touch $@

demo: setup
	$(VENV)/bin/llmctl run recipes/quickstart.yaml

# The house rules, kept by tools: lint, import order, modern syntax, likely bugs, formatting, types, and the layers
# between packages (import-linter's contracts in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check llmctl tests scripts
	$(VENV)/bin/ruff format --check llmctl tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(PY) -m pytest

test-fast: lint
	$(PY) -m pytest tests/unit

bench: setup
	$(PY) scripts/bench_cli.py

clean:
	rm -rf runs .pytest_cache
