PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := ../shared/datasets/cifar10-jpeg.tar.gz

.PHONY: install test test-real bench data clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip -q
	$(BIN)/pip install -c constraints.txt -e ".[test]"

test:
	$(BIN)/python -m pytest -q

# Unpacks the shared real CIFAR-10 images once into data/ (git-ignored).
data/cifar10-jpeg: $(SHARED_DATA)
	mkdir -p data
	tar xzf $(SHARED_DATA) -C data

data: data/cifar10-jpeg

test-real: data
	$(BIN)/python -m pytest -q -m "slow or real" -p no:cacheprovider -rA

bench: data
	OMP_NUM_THREADS=2 $(BIN)/python -m benchmarks.throughput

clean:
	rm -rf $(VENV) *.egg-info
