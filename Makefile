# Developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

# Browser tests drive the system's /usr/bin/chromium; never download Playwright's own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
# Silences the mkdocs-material end-of-life banner in build output.
export NO_MKDOCS_2_WARNING := 1

.PHONY: dist venv demo browsers peer-venv lint types test-fast test docs bench bench-full bench-smoke bench-lossy bench-virtual \
	test-aioquic-min test-patches-off

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: $(PYTHON) is older than 3.11; run make PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Stamps make repeated runs instant; they are rebuilt when pyproject.toml changes.
$(VENV)/.stamp-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,docs]'
	touch $(VENV)/.stamp-base $@

$(VENV)/.stamp-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

venv: $(VENV)/.stamp-dev

# The third-party peer of the interop tests: pywebtransport 0.21 (same import name as
# ours, Python 3.12+ wheels only) in a venv of its own, built with any Python >= 3.12.
PEER_VENV := .venv-peer
PEER_PYTHON ?= $(shell for p in python3.13 python3.12 $$HOME/.pyenv/versions/3.1[23]*/bin/python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)

$(PEER_VENV)/.stamp:
	@test -n "$(PEER_PYTHON)" || { echo "error: interop tests need Python >= 3.12 (set PEER_PYTHON)" >&2; exit 1; }
	$(PEER_PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q 'pywebtransport==0.21.*'
	touch $@

peer-venv: $(PEER_VENV)/.stamp

demo: $(VENV)/.stamp-base
	$(BIN)/python examples/demo.py

browsers:
	@if [ -x /usr/bin/chromium ] && command -v firefox-esr >/dev/null && command -v nft >/dev/null && command -v redis-server >/dev/null; then \
		echo "browsers: chromium, firefox-esr, nftables and redis-server present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium firefox-esr nftables redis-server; \
	else \
		echo "warning: chromium/firefox-esr missing and not root: browser tests will be skipped" >&2; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: venv
	$(BIN)/mypy --strict src

test-fast: venv
	$(BIN)/pytest $(FAST) $(PYTEST_ARGS)

# A wheel of this checkout in dist/ (pip builds it with the hatchling backend).
dist: venv
	$(BIN)/python -m pip wheel -q --no-deps -w dist .

docs: venv
	$(BIN)/mkdocs build --strict

# The lowest aioquic of the range pyproject.toml declares (the highest is what `venv` installs).
AIOQUIC_MIN := 1.7.0
MIN_VENV := .venv-aioquic-min
FAST := -m "not browser and not slow and not interop"
# The two extra passes below re-run what aioquic's version or our patches can change. The
# command-line tests run the same transport in child processes that the in-process tests
# cover in these passes; what they add (arguments, messages, the examples' wiring) does
# not depend on aioquic, so they run once, in the main pass.
EXTRA_PASS := $(FAST) --ignore=tests/integration/test_cli.py --ignore=tests/integration/test_cli_client.py

$(MIN_VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q -e '.[dev]' 'aioquic==$(AIOQUIC_MIN)'
	touch $@

# Unit, deterministic and loopback tests on the lowest supported aioquic.
test-aioquic-min: $(MIN_VENV)/.stamp
	$(MIN_VENV)/bin/pytest $(EXTRA_PASS) $(PYTEST_ARGS)

# The same with every optimisation of transport/_aioquic/ off: stock aioquic behaviour
# (what a future aioquic whose internals changed falls back to) must still pass.
test-patches-off: venv
	PYWEBTRANSPORT_AIOQUIC_PATCHES=off $(BIN)/pytest $(EXTRA_PASS) $(PYTEST_ARGS)

test: browsers peer-venv lint types
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) test-aioquic-min
	$(MAKE) test-patches-off
	$(MAKE) bench-smoke
	$(MAKE) docs

# Benchmarks against raw aioquic, stock and tuned (method in BENCHMARK.md). bench records
# benchmarks/results/last-run.jsonl and rewrites BENCHMARK.md, docs/benchmarks.md and the
# plot (< 10 min on 2 cores); bench-full records the heavy runs (capacity to 3,000 sessions,
# lossy path, workers, idle CPU, 1,000-stream multiplex, close soak) in full-run.jsonl and
# rewrites the same files; bench-smoke runs every scenario of both with tiny sizes and
# checks only that each completes (< 60 s).
bench: $(VENV)/.stamp-dev
	$(BIN)/python -m benchmarks

bench-full: $(VENV)/.stamp-dev
	$(BIN)/python -m benchmarks --full

# Lossy paths: ours with CUBIC and BBR against raw aioquic (results/lossy.jsonl, ~10 min).
bench-lossy: $(VENV)/.stamp-dev
	$(BIN)/python -m benchmarks.lossy

# The same lossy uploads on the deterministic harness's virtual clock: what each
# implementation decides, without CPU time (results/virtual.jsonl, ~10 min).
bench-virtual: $(VENV)/.stamp-dev
	$(BIN)/python -m benchmarks.virtual --seeds 30

bench-smoke: $(VENV)/.stamp-dev
	$(BIN)/python -m benchmarks --smoke
