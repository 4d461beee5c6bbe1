# `make demo` runs the main job on a built-in default; `make test` runs lint and the tests.
# Both create .venv/ at the project root on first use and install the project there.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The environment Triton's Python-backend stub runs ser in (tests start a real tritonserver): ser's runtime
# with NumPy 1, since the stub of Triton 2.51 is built against NumPy 1's ABI.
TRITON_ENV := .venv-triton
TRITON_STAMP := $(TRITON_ENV)/.installed

.PHONY: demo test lint clean

$(STAMP): setup.cfg pyproject.toml
	# espeak-ng speaks the demo and test corpus (ser-data synth); install it where we may.
	command -v espeak-ng >/dev/null || (apt-get install -y -q espeak-ng || (apt-get update -q && apt-get install -y -q espeak-ng)) >/dev/null \
		|| echo "warning: could not install espeak-ng: ser-data synth, make demo and the training tests need it"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# This exact pair installs from local disk on the project's machines (a CUDA build that runs on CPUs too).
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[export,train,serve,bench,batch,dev,triton,peers,openvino]'
	# Only the tritonserver binary and Python backend it ships: its numpy<2 pin is for PyTriton's own
	# Python API, which ser does not use, and would downgrade this environment's NumPy.
	$(BIN)/python -m pip install -q --no-deps 'nvidia-pytriton==0.7.0' || echo "warning: nvidia-pytriton did not install: the Triton server tests will skip"
	touch $(STAMP)

$(TRITON_STAMP): setup.cfg pyproject.toml
	test -x $(TRITON_ENV)/bin/python || $(PYTHON) -m venv $(TRITON_ENV)
	$(TRITON_ENV)/bin/python -m pip install -q -e . 'numpy>=1.26,<2'
	touch $(TRITON_STAMP)

demo: $(STAMP)
	$(BIN)/ser demo --out demo
	# Then every backend against PyTorch on the models it just trained (report: demo/bench/report.md).
	$(BIN)/ser-bench run benchmarks/suites/cpu-quick.yaml --out demo/bench --overwrite

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: lint $(TRITON_STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf demo bundles .pytest_cache
