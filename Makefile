# tempattn developer commands. `make test` and `make bench` do all set-up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=
BENCH_ARGS  ?= --quick

.PHONY: test test-isa bench bench-isa build venv package-check docs clean cuda-check

venv: $(VENV)/.deps-installed

$(VENV)/.deps-installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

# Builds tempattn._C in place against the venv's torch (every CPU kernel ISA level this machine's
# architecture has; TEMPATTN_CPU_BUILD_CAPABILITIES=default;avx2 etc. for fewer, see the README).
build: venv
	MAX_JOBS=$${MAX_JOBS:-2} $(PIP) install -q -e . --no-build-isolation

# Everything at the widest CPU ISA level this machine runs, then the CPU kernels at each lower one.
test: build
	$(PY) -m pytest tests $(PYTEST_ARGS)
	$(PY) -m pytest benchmarks --benchmark-disable -q
	TRITON_INTERPRET=1 $(PY) -m pytest tests/ops tests/kernels/test_triton_kernels.py tests/kernels/test_triton_tma.py -k triton $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-isa

# The CPU kernels' tests (tests/cpu, the contract suite's cpu-cpu target, the ISA dispatch checks) under
# TEMPATTN_CPU_CAPABILITY=<level> for every level below the widest that this build and CPU can run
# (`make test` ran them at the widest). Needs a build (`make build`).
test-isa: venv
	@set -e; levels="$$($(PY) -c 'import tempattn; print(*tempattn.backends()["cpu"]["capabilities"][:-1])')"; \
	for level in $$levels; do \
	  echo "== CPU kernels at TEMPATTN_CPU_CAPABILITY=$$level"; \
	  TEMPATTN_CPU_CAPABILITY=$$level $(PY) -m pytest tests/cpu tests/packaging/test_cpu_capability.py -q $(PYTEST_ARGS); \
	  TEMPATTN_CPU_CAPABILITY=$$level $(PY) -m pytest tests/ops -q -k cpu-cpu $(PYTEST_ARGS); \
	done

# A wheel and an sdist built from a clean copy of the checkout with default build isolation, installed
# in a fresh venv and smoke-tested from outside the checkout, one benchmark case included
# (tests/packaging/package_check.py).
package-check: venv
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) tests/packaging/package_check.py

# The CUDA kernels (csrc/cuda) compiled and linked for sm_80 and sm_90 without a GPU, from a fresh build
# directory, in their own venv with a CUDA build of torch (.venv stays the CPU test environment); prints
# every kernel's ptxas resources and fails on a compile or link error, a spill at head dims <= 128 or
# shared memory over the arch's limit (tools/cuda_check.py).
CUDA_VENV  ?= .venv-cuda
CUDA_TORCH ?= torch==2.14.1
CUDA_HOME  ?= $(firstword $(wildcard /usr/local/cuda-13.0) /usr/local/cuda)

$(CUDA_VENV)/.deps-installed:
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q --upgrade pip
	$(CUDA_VENV)/bin/python -m pip install -q $(CUDA_TORCH) numpy ninja setuptools
	touch $@

cuda-check: $(CUDA_VENV)/.deps-installed
	CUDA_HOME=$(CUDA_HOME) MAX_JOBS=$${MAX_JOBS:-2} $(CUDA_VENV)/bin/python tools/cuda_check.py

# The same check against torch 2.11, the GPU machines' image (torch 2.11 + triton 3.6), in .venv-cuda211. PyPI's
# torch 2.11.0 is a CUDA 13.0 build, so the same nvcc 13.0 compiles for it; its nvidia-* runtime wheels come too
# (about 2.6 GB in all), because `import torch` loads them. For sm_90 only by default (H100/H200, the GPU machines'
# arch; cuda-check covers sm_80's resources): another torch changes the host headers and API the sources compile
# against, which one arch exercises as well as two. TEMPATTN_CUDA_ARCHS="80;90" checks both.
.PHONY: cuda-check-torch211
cuda-check-torch211:
	TEMPATTN_CUDA_ARCHS="$${TEMPATTN_CUDA_ARCHS:-90}" $(MAKE) --no-print-directory cuda-check \
	  CUDA_VENV=.venv-cuda211 CUDA_TORCH=torch==2.11.0

# The Triton compile gate (tools/triton_check.py): every kernel specialisation the launcher can select, compiled
# for sm_80 and sm_90 with the ptxas that ships with triton (no GPU needed); fails on a compile error, shared memory
# over the arch's limit, a 16-bit kernel without tensor-core instructions or a spill at D <= 128. Table in
# build/triton-check/; results cached by kernel source hash in ~/.cache/tempattn/triton-check.
.PHONY: triton-check
triton-check: venv
	$(PY) tools/triton_check.py $(TRITON_CHECK_ARGS)

bench: build
	$(PY) -m tempattn.bench $(BENCH_ARGS)

# The CPU kernels' speed at each ISA level at the headline shape (benchmarks/isa_speed.py).
bench-isa: build
	$(PY) benchmarks/isa_speed.py

# The GPU check for a lent GPU machine (.ci/gpu-check, <= 8 minutes on an H100 / H200): build for the device's arch,
# GPU correctness suite, reduced benchmark grid. Uses the machine's own CUDA torch; says "skipped" without a GPU.
.PHONY: gpu-check
gpu-check:
	bash .ci/gpu-check $(GPU_CHECK_ARGS)

DOCS_DEPS := $(VENV)/.docs-deps-installed

$(DOCS_DEPS): requirements-docs.txt $(VENV)/.deps-installed
	$(PIP) install -q -r requirements-docs.txt
	touch $@

# The documentation (docs/) as HTML in docs/_build/html, warnings as errors. Its code blocks and
# examples run in `make test` (tests/docs).
docs: $(DOCS_DEPS)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf build dist *.egg-info tempattn/_C*.so docs/_build tempattn-bench-report
