# Two commands do all set-up on a fresh machine: `make dev` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install dev call test test-unit test-integration lint format bench infra-check clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml functions/core/_raw_gate.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	# the project itself, editable, for its console scripts (functions.admin, makecall-admin)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

dev: install  ## run the whole product locally (emulators, relay, connector, notifier)
	$(PY) -m devtools.dev

call: install  ## with `make dev` running: send the seed's sample call, print its pushes
	$(PY) -m devtools.send_call

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test-unit: install
	$(PY) -m pytest tests/unit -q

test-integration: install
	$(PY) -m pytest tests/integration tests/devtools -q

infra-check: install
	bash infra/check.sh

test: install lint  ## every test: unit, integration (real emulators), infra checks
	$(PY) -m pytest -q --ignore=tests/infra
	bash infra/check.sh

bench: install  ## benchmarks against their baselines; writes docs/benchmarks.md (~6 min)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-infra .pytest_cache .ruff_cache tests/infra/schema/node_modules
