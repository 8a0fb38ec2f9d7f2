# The two commands the README promises: `make demo` and `make test`.
# Each creates .venv with Python 3.11 when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Which TensorFlow build to install: cpu, gpu or tpu (see README).
TF_EXTRA ?= cpu
# TF Serving's gRPC protos, for `serve --grpc-port` (the grpc extra):
# installed without dependencies, since they ask for the `tensorflow`
# distribution and the TensorFlow build is chosen by TF_EXTRA.
TF_SERVING_API ?= tensorflow-serving-api>=2.16,<3
# KServe's client, for the tests only: without dependencies, since kserve
# pins protobuf<7 while TensorFlow needs 7 (the modules its client imports
# are in the `test` dependency group).
KSERVE ?= kserve>=0.21,<0.22

.PHONY: demo test lint docs bench install dist clean

$(BIN)/python:
	@echo "Creating $(VENV) with $(PYTHON)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

# setup.py compiles the recommender kernels: a changed .pyx reinstalls.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml setup.py \
		aiservice_kit/recommenders/_kernels.pyx \
		aiservice_kit/recommenders/_factor_kernels.pyx
	@echo "Installing aiservice_kit and its dependencies into $(VENV)" \
		"(TensorFlow $(TF_EXTRA); about 2-5 minutes and 2 GB the first time," \
		"seconds after that)..."
	$(BIN)/python -m pip install \
		-e ".[$(TF_EXTRA),serving,grpc,postgres,plot,onnx,tune]" --group dev
	$(BIN)/python -m pip install --no-deps "$(TF_SERVING_API)" "$(KSERVE)"
	@echo "Installed into $(VENV)."
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python examples/demo.py

lint: install
	$(BIN)/ruff check aiservice_kit tests examples benchmarks
	$(BIN)/ruff format --check aiservice_kit tests examples benchmarks

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Two processes, whole files each (module fixtures such as the PostgreSQL
# server and the trained models stay per file): about half the time on 2 cores.
test: lint docs
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The sdist and the wheel, into dist/ (what `pip install` of a release gets).
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

bench: install
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) site build dist *.egg-info .pytest_cache .ruff_cache
	rm -f aiservice_kit/recommenders/*.cpp aiservice_kit/recommenders/*.so
