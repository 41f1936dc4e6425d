# `make demo` and `make test` work on a fresh machine: they create .venv, install the requirements,
# build the extension in place, then run. The demo builds what it runs (the CUDA kernels only where a GPU is);
# the tests build everything: the CUDA kernels wherever a CUDA toolkit is found, and their host emulation.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.requirements-installed
# The oldest supported torch (setup.py's TORCH_REQUIREMENT; the newest is the pin in requirements.txt):
# make test-torch-oldest builds a copy of this tree against it, in its own environment, and runs the tests.
OLDEST_TORCH := 2.11.0
OLDEST_VENV := .venv-torch$(OLDEST_TORCH)
OLDEST_TREE := build/torch-$(OLDEST_TORCH)

# What the tests build (setup.py's switches); FUSED_LSTM_CUDA=0 make test skips nvcc for a quick CPU rebuild.
TEST_BUILD := FUSED_LSTM_CUDA=$${FUSED_LSTM_CUDA:-1} FUSED_LSTM_EMULATION=$${FUSED_LSTM_EMULATION:-1}

.PHONY: venv build build-for-tests test test-torch-oldest demo experiments experiments-quick benchmark clean

$(INSTALLED): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: $(INSTALLED)

# $(call build_in_place,SWITCHES): setup.py build_ext --inplace with those switches, the log in build.log.
define build_in_place
	$(1) $(PY) setup.py build_ext --inplace > build.log 2>&1 || (tail -60 build.log; echo "build failed: see build.log"; exit 1)
	@grep -E "fused_lstm build|CUDA kernels|TORCH_CUDA_ARCH_LIST|ptxas info *: Used|spill" build.log | grep -v " 0 bytes spill" | head -40 || true
endef

build: $(INSTALLED)
	$(call build_in_place,)

build-for-tests: $(INSTALLED)
	$(call build_in_place,$(TEST_BUILD))

# The tests' own tools: qemu-user (the CPU matrix) and an aarch64 cross compiler, installed where this user can.
test: build-for-tests
	scripts/install_test_tools.sh
	$(TEST_BUILD) $(PY) -m pytest -q tests

$(OLDEST_VENV)/.requirements-installed: requirements.txt
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install torch==$(OLDEST_TORCH)
	grep -v '^torch==' requirements.txt > $(OLDEST_VENV)/requirements-without-torch.txt
	$(OLDEST_VENV)/bin/python -m pip install -r $(OLDEST_VENV)/requirements-without-torch.txt
	touch $@

test-torch-oldest: $(OLDEST_VENV)/.requirements-installed
	mkdir -p $(OLDEST_TREE)
	# A fresh copy each time (files renamed or removed here must not linger there); its build/ stays for speed.
	find $(OLDEST_TREE) -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
	git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C $(OLDEST_TREE)
	cd $(OLDEST_TREE) && $(TEST_BUILD) $(CURDIR)/$(OLDEST_VENV)/bin/python setup.py build_ext --inplace > build.log 2>&1 || \
		(tail -60 build.log; echo "build against torch $(OLDEST_TORCH) failed: see $(OLDEST_TREE)/build.log"; exit 1)
	@grep -E "CUDA kernels|emulated CUDA" $(OLDEST_TREE)/build.log
	cd $(OLDEST_TREE) && $(TEST_BUILD) $(CURDIR)/$(OLDEST_VENV)/bin/python -m pytest -q tests

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
