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

.PHONY: demo test test-all lint bench bench-quality install

# the main job on the bundled digits data, end to end: analyse the channels, measure the
# model's latency in onnxruntime (40 widths, cached), train the CafeNet supernet (min-min),
# search two latency budgets (evolutionary, max-max on the shared weights, then each budget's
# finalists fine-tuned alone and scored again), slim and prove, export ONNX and time it
# beside the original, retrain the searched and the uniform widths, write runs/demo/report.md
# (about 6.5 min on 2 quiet CPUs: README.md has one run's transcript and time)
demo: $(STAMP)
	$(BIN)/widthc slim examples/mobilenet_digits.py --data digits --latency 85%,75% \
		--epochs 30 --retrain-epochs 30 --population 16 --generations 10 --calib-batches 4 \
		--out runs/demo --force

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
	$(BIN)/python bench/search_cost.py

# search quality against the baselines and the supernet's ranking (BENCHMARKS.md "quality",
# "ranking"): hours on 2 CPUs; finished runs are kept (bench/results/) and not run again
bench-quality: $(BENCH_STAMP)
	$(BIN)/python bench/quality.py --data mnist1d --jobs 2
	$(BIN)/python bench/quality.py --data mnist --jobs 2
	$(BIN)/python bench/quality.py --data mnist1d-10k --jobs 2 \
		--methods "widthc,random candidate,fixed pattern,torch-pruning"
	$(BIN)/python bench/ranking.py

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
