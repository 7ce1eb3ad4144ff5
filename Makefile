# Two commands on a fresh machine: `make demo` and `make test`. Both set up first.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(VENV)/bin
STAMP := $(VENV)/.frugalsense-installed
EXTRAS := edge,gateway,notify,training,dev

.PHONY: setup demo test lint clean services train-air train-air-calibration train-leak train chaos bench-outbox bench soak

setup: $(STAMP) services

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "frugalsense needs Python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

services:
	@bash scripts/install-services.sh

demo: setup
	$(BIN)/frugalsense demo

# ruff (pyflakes, pycodestyle, import order, pyupgrade, bugbear, docstrings), the formatter, and mypy on
# edge/ and the gateway's protocol and device packages (settings in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest

# The chaos suite with 60 s outages (about 14 min); rewrites docs/chaos.json, chaos.md and chaos-notify.json/.md.
# `make test` runs the same scenarios with 5 s outages and writes its report under .run/chaos/.
chaos: setup
	FRUGALSENSE_CHAOS_OUTAGE_S=60 FRUGALSENSE_CHAOS_REPORT=$(CURDIR)/docs $(BIN)/python -m pytest -q tests/test_chaos.py tests/test_notify_chaos.py

# What the outbox's fsync policy costs on this disk; rewrites docs/outbox-bench.json (~1 min).
bench-outbox: $(STAMP)
	$(BIN)/python scripts/bench_outbox.py

# Every frugality figure side by side (inference, pipeline vs mosquitto_pub, bridge vs raw POST, footprint,
# models, fleet); rewrites docs/benchmarks.json and docs/benchmarks.md (about 2 min on 2 cores).
bench: setup
	$(BIN)/python -m scripts.bench

# 30 data days of the leak zone and of the air site through two `frugalsense run` processes on a private
# Mosquitto, the bridge and InfluxDB, RSS sampled per data day; rewrites docs/soak.json, docs/soak.md and
# docs/soak-rss.png (about 4 minutes on 2 cores).
soak: setup
	$(BIN)/python -m scripts.bench_soak

# Air-site models (pattern, sensor fault, NO2 virtual sensor): simulate, train, export to
# models/air-*/, measure every format against the targets and write the cards (~2 min).
train-air: $(STAMP)
	$(BIN)/python -m training.air.train --out models

# The demo air site's PM2.5 calibration (models/air-pm25-calibration, model type calibration): a seeded
# simulated co-location through train air-calibration's selection; one BLAS thread, the same files each time.
train-air-calibration: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m training.air.calibration_shipped --out models/air-pm25-calibration

# Leak models (leak-mlp-net3, leak-mlp-net3-presence): simulate Net3 and Net1 scenarios, train,
# export to models/leak-*/, evaluate against MNF, write cards and reports (about 10 min on 2 cores).
# One BLAS thread: the same seeds then give the same files.
train-leak: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m training.leak.train --shipped --models models

# Every shipped model.
train: train-air train-air-calibration train-leak

clean:
	rm -rf $(VENV) .run .pytest_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
