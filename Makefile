# Track Anything for Label Studio — developer commands.
#   make demo   a local Label Studio 1.23.2 + this backend with a demo clip, ready to click (Ctrl-C stops)
#   make run    create .venv, install, serve on $(HOST):$(PORT) (weights-free engine by default)
#   make test   create .venv, install, run the whole suite (includes a real Label Studio e2e test)
#   make bench  run the benchmarks and print the tables
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 9090
WORKERS ?= 1
THREADS ?= 16
STAMP := $(VENV)/.installed

.PHONY: install run dev demo test lint format bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-sam2.txt requirements-bulk.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-bulk.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt -c constraints.txt
	$(PY) -m pip install -q setuptools==84.2.1 -c constraints.txt
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation -r requirements-sam2.txt -c constraints.txt
	touch $(STAMP)

run: install
	$(VENV)/bin/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --threads $(THREADS) \
		--timeout 0 --log-level $${LOG_LEVEL:-info} _wsgi:app

dev: install
	$(PY) _wsgi.py --host $(HOST) --port $(PORT)

# DEMO_ARGS: e.g. --ls-port 8081 --backend-port 9091 --frames 50 (python -m backend.demo --help)
demo: install
	$(PY) -m backend.demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
