PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

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

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run

lint: $(STAMP)
	$(VENV)/bin/ruff check core backends plugins conformance tests benchmarks
	$(VENV)/bin/ruff format --check core backends plugins conformance tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info runs
