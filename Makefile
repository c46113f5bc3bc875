# The two commands: `make test` and `make demo`. Both set up everything on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CUDA 13 build of torch, so the CUDA kernels compile and link even without a GPU.
TORCH_SPEC ?= torch==2.14.1
DEPS ?= triton numpy pytest ninja torchvision==0.29.1 timm tqdm matplotlib ruff
BENCH_DEPS ?= faiss-cpu
export CUDA_HOME ?= /usr/local/cuda
EXPECT_CUDA := $(if $(wildcard $(CUDA_HOME)/bin/nvcc),1,0)
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cuh)

.PHONY: test demo bench install ext clean gpu-check

test: $(VENV)/.installed
	HASHKERN_EXPECT_CUDA=$(EXPECT_CUDA) $(PY) -m pytest tests -q

FMNIST := /usr/share/datasets/fashion-mnist

# Debian's dataset-fashion-mnist package holds the data; without it the demo says where to get it.
demo: $(VENV)/.installed
	@test -d $(FMNIST) || { echo "Fashion-MNIST is not in $(FMNIST): install it with" \
		"'sudo apt-get install dataset-fashion-mnist', or run '$(PY) -m hashkern demo --data-dir DIR'" \
		"on a folder of its four idx files"; exit 1; }
	$(PY) -m hashkern demo

bench: $(VENV)/.installed
	$(PIP) install -q $(BENCH_DEPS)
	$(PY) -m benchmarks

install: $(VENV)/.installed

# The whole GPU run in one command on a fresh copy of the tree (no network needed): builds for the local
# GPU, `pytest -m gpu`, compute-sanitizer, every benchmark; summary, logs and tables under
# $GPU_CHECK_OUT (default $OUT, else build/gpu_check). GPU_CHECK_DRY=1: the same sequence on CPU, tiny sizes.
GPU_CHECK_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_CHECK_PY) -m benchmarks.gpu_check

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC) $(DEPS)
	touch $@

# Builds hashkern._C the way a user does; the log is kept, its summary printed.
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	$(PIP) install -v --no-build-isolation -e . > $(VENV)/build.log 2>&1 || (tail -50 $(VENV)/build.log; exit 1)
	@grep -m1 -oE "hashkern: building.*" $(VENV)/build.log || true
	@echo "compiled: $$(grep -cE '\.(cu|cpp) -o ' $(VENV)/build.log) sources ($$(grep -cE 'nvcc.*\.cu -o ' $(VENV)/build.log) CUDA), linked into $$(ls hashkern/_C*.so 2>/dev/null)"
	$(PY) -c "import hashkern; print(hashkern.build_info())"
	touch $@

# Incremental rebuild of the extension while developing (ninja reuses build/).
ext: $(VENV)/.deps
	$(PY) setup.py build_ext --inplace

clean:
	rm -rf build hashkern/_C*.so $(VENV)/.installed
