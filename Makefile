# Two commands for a newcomer: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test check demo lint dashboards bench bench-deps clean system-deps lock

# Bytecode caches on, whatever the shell says: with PYTHONDONTWRITEBYTECODE every run compiles
# each module again and re-rewrites every test file's asserts (6.6 s instead of 11 s of CPU to
# collect the fast tests, per process).
unexport PYTHONDONTWRITEBYTECODE

# The folders proxy/ and scorers/ install as the package `shadowtap`. A strict editable install
# links each file into build/ (which mypy can follow, unlike an import hook), so a file added
# or removed in a package folder (the folder's mtime changes) re-runs the install.
PACKAGE_DIRS := proxy scorers $(filter-out %__pycache__/,$(wildcard proxy/*/))

$(STAMP): pyproject.toml requirements.lock $(PACKAGE_DIRS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock \
	  -e '.[test]' --config-settings editable_mode=strict
	touch $(STAMP)

# The tests drive real programs: Prometheus (promtool) and headless Chromium, from Debian.
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v chromium >/dev/null; then \
	  echo "installing Debian packages the tests drive: prometheus chromium"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
	    prometheus chromium >/dev/null; \
	fi

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/shadowtap demo

# The edit loop, under 30 s on a quiet 2-core machine: lint, then the tests not marked slow
# (tests/conftest.py says which are slow and why: no apt, no network, no programs of their own),
# spread over the cores by pytest-xdist, a module's tests on one worker (module fixtures once),
# Hypothesis properties at a fifth of their examples (tests/examples.py; `make test` runs all).
check: $(STAMP) lint
	SHADOWTAP_QUICK_PROPERTIES=1 $(BIN)/pytest -q -p no:cacheprovider -m "not slow" -n auto --dist loadfile

# What STYLE promises, enforced: formatting, lint rules and types (checked as installed).
# mypy's incremental cache lives in $(VENV)/.mypy_cache (it runs from there): ~2 s when warm.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	cd $(VENV) && bin/mypy --config-file ../pyproject.toml -p shadowtap

dashboards: $(STAMP)
	$(BIN)/python grafana/generate.py

# The peer comparison (bench/peers.py) drives wrk and nginx, from Debian, when it can install
# them; without them it says so and uses its own load generator / skips nginx. Envoy is not
# packaged by Debian: it is measured when an `envoy` binary is on PATH.
bench-deps:
	@if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then \
	  echo "installing Debian packages the peer benchmark drives: wrk nginx"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
	      wrk nginx >/dev/null; } || \
	  echo "could not install wrk/nginx: bench/peers.py skips what is missing"; \
	fi

# Every benchmark (the --quick variants where they exist), each one's output kept in
# build/bench/ (the 10M-pair Parquet too, written once: ~8 min on 2 busy cores), then
# docs/benchmarks.md's figures section regenerated from that output.
BENCH_OUT := build/bench
bench: SHELL := /bin/bash
bench: .SHELLFLAGS := -o pipefail -c
bench: $(STAMP) bench-deps
	mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/peers.py --long --json $(BENCH_OUT)/peers.json | tee $(BENCH_OUT)/peers.txt
	$(BIN)/python bench/report_fleet.py --data $(BENCH_OUT)/fleet --json $(BENCH_OUT)/report_fleet.json
	$(BIN)/python bench/overhead.py | tee $(BENCH_OUT)/overhead.txt
	$(BIN)/python bench/recorder.py | tee $(BENCH_OUT)/recorder.txt
	$(BIN)/python bench/metrics.py | tee $(BENCH_OUT)/metrics.txt
	$(BIN)/python bench/replay.py | tee $(BENCH_OUT)/replay.txt
	$(BIN)/python bench/scoring.py | tee $(BENCH_OUT)/scoring.txt
	$(BIN)/python bench/embeddings.py | tee $(BENCH_OUT)/embeddings.txt
	$(BIN)/python bench/abuse.py --quick | tee $(BENCH_OUT)/abuse.txt
	$(BIN)/python bench/render.py $(BENCH_OUT) docs/benchmarks.md

# requirements.lock pins every dependency (runtime and test) to what the suite passed with; the
# venv and the image install through it. Re-resolve after changing pyproject's dependencies.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet '.[test]'
	{ echo "# pip freeze of a fresh install of .[test]; regenerate with make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude shadowtap; } > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) build dist *.egg-info
