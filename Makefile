# `make demo` and `make test` work on a fresh machine: they create .venv, install the requirements,
# build the extension in place (CUDA kernels too when a CUDA toolkit is found), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.requirements-installed
# The nvcc on PATH may be a wrapper; point the build at the real toolkit when it is there.
CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export CUDA_HOME

.PHONY: venv build test demo experiments experiments-quick benchmark clean

$(INSTALLED): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: $(INSTALLED)

build: $(INSTALLED)
	$(PY) setup.py build_ext --inplace > build.log 2>&1 || (tail -60 build.log; echo "build failed: see build.log"; exit 1)
	@grep -E "fused_lstm build|CUDA kernels|TORCH_CUDA_ARCH_LIST|ptxas info *: Used|spill" build.log | grep -v " 0 bytes spill" | head -40 || true

test: build
	$(PY) -m pytest -q tests

demo: build
	$(PY) -m benchmarks.run --device cpu --quick
	$(PY) -m benchmarks.run --device cpu --quick --cell gru

# The full run: two worker processes of one thread each (about an hour on 2 idle cores), then
# experiments/report.py writes the plots and docs/why_lstm.md from the result files.
experiments: build
	$(PY) -m experiments.why_lstm --workers 2

# Seconds: the whole pipeline at toy sizes, into a temporary folder (what the tests run).
experiments-quick: build
	$(PY) -m experiments.why_lstm --quick

benchmark: build
	$(PY) -m benchmarks.run --device cpu

clean:
	rm -rf build fused_lstm/*.so *.egg-info
