# landscape: `make demo` (install, train the quick grid, open the dashboard), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
GRID   ?= runs/grid.toml
QUICK  := runs/quick.toml
JOBS   ?= auto
EPOCHS ?=
PORT   ?= 8501
HOST   ?= 127.0.0.1
TRAIN_FLAGS = $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(STORE),--store $(STORE)) \
              $(if $(BACKEND),--backend $(BACKEND)) $(if $(ADDRESS),--address $(ADDRESS))

.PHONY: install demo quick train-all analyze-all dashboard test test-gpu browser bench bench-gpu bench-multi-gpu clean-store

install: $(STAMP)

# The venv is (re)built only when requirements.txt or pyproject.toml changes: re-running is a
# no-op. The pinned requirements first, then the project itself, editable (no sys.path edits).
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

quick: install
	$(BIN)/python -m landscape_lib train-all $(QUICK) -j 2 $(if $(STORE),--store $(STORE))

demo: quick
	$(BIN)/python -m streamlit run dashboard/app.py --server.port $(PORT) --server.address $(HOST)

train-all: install
	$(BIN)/python -m landscape_lib train-all $(GRID) -j $(JOBS) $(TRAIN_FLAGS)

analyze-all: install
	$(BIN)/python -m landscape_lib analyze-all $(GRID) $(TRAIN_FLAGS)

dashboard: install
	$(BIN)/python -m streamlit run dashboard/app.py --server.port $(PORT) --server.address $(HOST)

# Debian's Chromium for the browser test (skipped with a reason where it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will be skipped"

test: install browser
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --timeout 600 tests

# The tests marked gpu alone (fused optimizers, compile and CUDA graphs, channels-last, forward
# HVPs, bf16 surfaces), on a machine with a CUDA GPU; they import no dashboard package.
test-gpu: install
	$(BIN)/python -m pytest -q -m gpu --timeout 600 tests

bench: install
	$(BIN)/python bench/bench_hessian.py --quick
	$(BIN)/python bench/bench_hvp.py --quick
	$(BIN)/python bench/bench_hessian_analysis.py --quick
	$(BIN)/python bench/bench_hessian_multi.py --quick
	$(BIN)/python bench/bench_surface.py --quick
	$(BIN)/python bench/bench_training.py --quick
	$(BIN)/python bench/bench_dashboard.py --runs 200 --epochs 50

# The GPU figures of README "Benchmarks" (about 10 min on an H100). CIFAR: a folder holding the
# JPEG copy's train/ and test/; BENCH_PY: a python with the requirements (default: the venv's).
BENCH_PY    ?= $(BIN)/python
BENCH_STORE ?= /tmp/landscape-bench
bench-gpu:
	$(if $(CIFAR),,$(error set CIFAR=/path/to/cifar10-jpeg (a folder holding train/ and test/)))
	$(BENCH_PY) bench/bench_training.py --data-folder $(CIFAR) --epochs 4 --compile \
	  --compile-mode reduce-overhead --archs resnet18 --store $(BENCH_STORE)
	$(BENCH_PY) bench/bench_hessian.py --data-folder $(CIFAR) --tf32 --repeats 2
	$(BENCH_PY) bench/bench_hessian.py --data-folder $(CIFAR) --tf32 --repeats 2 --checkpoint \
	  "$$(ls $(BENCH_STORE)/artifacts/resnet18-*/checkpoints/epoch_0004.pt | head -n 1)"
	$(BENCH_PY) bench/bench_hvp.py --data-folder $(CIFAR) --checkpoint \
	  "$$(ls $(BENCH_STORE)/artifacts/resnet18-*/checkpoints/epoch_0004.pt | head -n 1)"
	$(BENCH_PY) bench/bench_hessian_analysis.py --data-folder $(CIFAR) --store $(BENCH_STORE)
	$(BENCH_PY) bench/bench_surface.py --compile

# Issue 13's Hessian on several GPUs (needs 2 GPUs, about 5 min on H200s).
bench-multi-gpu:
	$(if $(CIFAR),,$(error set CIFAR=/path/to/cifar10-jpeg (a folder holding train/ and test/)))
	$(BENCH_PY) bench/bench_hessian_multi.py --data-folder $(CIFAR) --gpus 2 --store $(BENCH_STORE)

clean-store:
	rm -rf runs/store
