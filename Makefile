# The two commands the README promises: `make demo` and `make test`.
# Each creates .venv with Python 3.11 when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Which TensorFlow build to install: cpu, gpu or tpu (see README).
TF_EXTRA ?= cpu

.PHONY: demo test lint docs bench install dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

# setup.py compiles the recommender kernels: a changed .pyx reinstalls.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml setup.py \
		aiservice_kit/recommenders/_kernels.pyx
	$(BIN)/python -m pip install --quiet -e ".[$(TF_EXTRA),serving,postgres,plot,onnx,tune]" --group dev
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python examples/demo.py

lint: install
	$(BIN)/ruff check aiservice_kit tests examples benchmarks
	$(BIN)/ruff format --check aiservice_kit tests examples benchmarks

docs: install
	$(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint docs
	$(BIN)/python -m pytest

# The sdist and the wheel, into dist/ (what `pip install` of a release gets).
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

bench: install
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) site build dist *.egg-info .pytest_cache .ruff_cache
	rm -f aiservice_kit/recommenders/_kernels.cpp aiservice_kit/recommenders/*.so
