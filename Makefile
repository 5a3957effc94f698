PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := ../shared/datasets/cifar10-jpeg.tar.gz

.PHONY: install check test test-real bench compile-bench gpu-check profile data docs clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip -q
	$(BIN)/pip install -c constraints.txt -e ".[test]"

# Lint, the format, and the types (settings in pyproject.toml); seconds, so before the tests.
check:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test:
	$(BIN)/python -m pytest -q

# Unpacks the shared real CIFAR-10 images once into data/ (git-ignored). tar restores the folder's
# old modification time, so a stamp file written after unpacking is what make compares.
data/cifar10-jpeg/.unpacked: $(SHARED_DATA)
	mkdir -p data
	tar xzf $(SHARED_DATA) -C data
	touch $@

data: data/cifar10-jpeg/.unpacked

# The slow models, the checks on real CIFAR-10, and a sweep's two workers on a PostgreSQL server of its own
# (initdb and pg_ctl on PATH; its Python driver is the postgresql extra).
test-real: data
	$(BIN)/pip install -q -c constraints.txt -e ".[test,postgresql]"
	$(BIN)/python -m pytest -q -m "slow or real" -p no:cacheprovider -rA

bench: data
	OMP_NUM_THREADS=2 $(BIN)/python -m benchmarks.throughput
	OMP_NUM_THREADS=2 $(BIN)/python -m benchmarks.throughput --models airbench94 --batch 1024 \
		--precisions 32-true bf16-mixed --modes bare fit --layouts channels_last

# Eager against torch.compile on one training step of airbench94, resnet20 and resnet50, fp32 and bf16 (random data).
compile-bench:
	OMP_NUM_THREADS=2 $(BIN)/python -m benchmarks.compile_step

# On a machine with one CUDA GPU: airbench94's fit, ResNet-50's speed and memory, the device pipeline, compile and
# DDP in one table, in under 8 minutes (the shared CIFAR-10 copy unpacked first where it is there); elsewhere one
# line saying there is no GPU.
gpu-check: $(if $(wildcard $(SHARED_DATA)),data)
	$(BIN)/python -m benchmarks.gpu_check

# Where a fit step's time goes (torch.profiler); MODEL=resnet20 for another backbone.
profile: data
	OMP_NUM_THREADS=2 $(BIN)/python -m benchmarks.profile_fit --model $(or $(MODEL),cnn)

# docs/troubleshooting.md from the fault tests' case list (a test checks it is current).
docs:
	$(BIN)/python -m tests.faults.cases

clean:
	rm -rf $(VENV) *.egg-info
