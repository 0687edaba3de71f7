# tempattn developer commands. `make test` and `make bench` do all set-up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=
BENCH_ARGS  ?= --quick

.PHONY: test bench build venv clean docs

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

DOCS_DEPS := $(VENV)/.docs-deps-installed

$(DOCS_DEPS): requirements-docs.txt $(VENV)/.deps-installed
	$(PIP) install -q -r requirements-docs.txt
	touch $@

# The documentation (docs/) as HTML in docs/_build/html, warnings as errors. Its code blocks and
# examples run in `make test` (tests/docs).
docs: $(DOCS_DEPS)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf build *.egg-info tempattn/_C*.so docs/_build
