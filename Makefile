# tempattn developer commands. `make test` and `make bench` do all set-up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=
BENCH_ARGS  ?= --quick

.PHONY: test bench build venv clean

venv: $(VENV)/.deps-installed

$(VENV)/.deps-installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

build: venv
	MAX_JOBS=$${MAX_JOBS:-2} $(PIP) install -q -e . --no-build-isolation

test: build
	$(PY) -m pytest tests $(PYTEST_ARGS)
	$(PY) -m pytest benchmarks --benchmark-disable -q
	TRITON_INTERPRET=1 $(PY) -m pytest tests/ops -k triton $(PYTEST_ARGS)

bench: build
	$(PY) -m tempattn.bench $(BENCH_ARGS)

clean:
	rm -rf build *.egg-info tempattn/_C*.so
