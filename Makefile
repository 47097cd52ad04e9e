# Two commands do all of their own set-up: `make demo` and `make test` (see README.md).
# The venv is installed once per version of pyproject.toml (a stamp file named by its checksum).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cksum pyproject.toml | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(HASH)
BENCH_STAMP := $(VENV)/.installed-bench-$(HASH)

# one torch thread: two threads oversubscribe a 2-core machine (ENVIRONMENT.md)
export OMP_NUM_THREADS := 1
export ORT_DISABLE_TELEMETRY := 1

.PHONY: demo test test-all lint bench install

# the main job on the bundled digits data: analyse the channels, train the CafeNet supernet
# (min-min, 10 epochs, ~30 s on 1 CPU thread), slim to half the FLOPs and export (checked)
demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/widthc analyze examples/mobilenet_digits.py
	$(BIN)/widthc train examples/mobilenet_digits.py --data digits --epochs 10 --out runs/demo
	$(BIN)/widthc slim examples/mobilenet_digits.py --flops 50% --out runs/demo/slim

test: $(STAMP)
	$(BIN)/pytest

test-all: $(STAMP)
	$(BIN)/pytest -m 'slow or not slow'

lint: $(STAMP)
	$(BIN)/ruff check widthc passes frontends tests bench examples
	$(BIN)/ruff format --check widthc passes frontends tests bench examples

bench: $(BENCH_STAMP)
	$(BIN)/python bench/analyze.py
	$(BIN)/python bench/coverage.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/supernet_cost.py

install: $(STAMP)

$(VENV):
	$(PYTHON) -m venv $(VENV)

$(STAMP): | $(VENV)
	$(BIN)/python -m pip install -e '.[zoo,data,dev]'
	rm -f $(VENV)/.installed-[0-9]*
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[zoo,data,dev,bench]'
	rm -f $(VENV)/.installed-bench-*
	touch $@
