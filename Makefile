PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-xla bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/crosstrain summary examples/digits_mlp.yaml
	$(VENV)/bin/crosstrain fit examples/digits_mlp.yaml --backend torch
	$(VENV)/bin/crosstrain fit examples/digits_cnn.yaml --backend torch

# Two workers: the suite is mostly CPU-bound framework work, and CI has two cores.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# torch_xla needs its own torch release, so the XLA tests get a venv of their own; PJRT_DEVICE=CPU
# compiles real XLA programs for the host CPU.
XLA_VENV := .venv-xla
XLA_STAMP := $(XLA_VENV)/.installed

$(XLA_STAMP): pyproject.toml
	test -x $(XLA_VENV)/bin/python || $(PYTHON) -m venv $(XLA_VENV)
	$(XLA_VENV)/bin/python -m pip install --upgrade pip
	$(XLA_VENV)/bin/python -m pip install 'torch==2.9.0' 'torch_xla==2.9.0'
	$(XLA_VENV)/bin/python -m pip install -e '.[dev]'
	touch $(XLA_STAMP)

test-xla: $(XLA_STAMP)
	PJRT_DEVICE=CPU $(XLA_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/backends/test_torch_xla.py

# Benchmark-only dependencies (Lightning, matplotlib) live in the `bench` extra, pinned torch kept.
bench: $(STAMP)
	$(PY) -m pip install -c constraints.txt -e '.[bench]'
	$(PY) -m benchmarks $(BENCH_ARGS)

# crosstrain vs a hand-written AMP loop on a CUDA GPU (exits 2 without one); report in
# benchmarks/results/gpu-<date>-<gpu>.md/.json. GPU_BENCH_ARGS e.g. `--repeats 5 --compile off`.
.PHONY: bench-gpu
bench-gpu: $(STAMP)
	$(PY) -m benchmarks.gpu_throughput $(GPU_BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check core backends plugins conformance tests benchmarks
	$(VENV)/bin/ruff format --check core backends plugins conformance tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info runs

.PHONY: conformance
PLUGIN_SITE := build/example-plugins
CONFORMANCE_BACKENDS := numpy torch jax keras:tensorflow keras:jax keras:torch

# One `crosstrain conformance` process per backend (one Keras engine per process), with the
# example plugins importable, so ExampleRMSNorm is checked on every backend that declares it.
conformance: $(STAMP)
	rm -rf $(PLUGIN_SITE)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --target $(PLUGIN_SITE) \
		examples/plugins/crosstrain-numpy examples/plugins/crosstrain-rmsnorm
	status=0; for backend in $(CONFORMANCE_BACKENDS); do \
		PYTHONPATH=$(PLUGIN_SITE) $(VENV)/bin/crosstrain conformance --backend $$backend \
			--report conformance/reports/$$(echo $$backend | tr : -).md || status=1; \
	done; exit $$status
