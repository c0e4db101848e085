# Privacy Plane — one command per job. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help install lint typecheck unit test test-faults bench run stop demo up down schemas compose-check alerts-check asyncapi openapi api-docs dist clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the project with its dev tools

lint: install ## ruff (lint and format check)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install ## mypy --strict
	$(VENV)/bin/mypy shared services tests bench demo

unit: install ## the pure tests alone (tests/unit): about 20 s, no Kafka or PostgreSQL
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

test: lint typecheck ## ruff, mypy and the whole test suite on real Kafka and PostgreSQL
	$(PY) -m pytest -m "not faults" $(PYTEST_ARGS)

test-faults: install ## the fault suite: crashes, restarts, duplicates, bad input, security
	$(PY) -m pytest -m faults tests/faults $(PYTEST_ARGS)

bench: install ## benchmarks (not part of make test); results under bench/results/
	$(PY) -m bench

up: ## start Kafka and PostgreSQL on loopback (no Docker)
	deploy/local/up

down: ## stop Kafka and PostgreSQL
	deploy/local/down

run: install ## the whole stack without Docker: Kafka, PostgreSQL, topics, the three services
	deploy/local/run

stop: ## stop what `make run` started
	deploy/local/run stop

demo: install ## a scripted scenario against the running stack
	$(PY) -m demo

schemas: install ## regenerate the checked-in JSON Schemas from the contract models
	$(PY) -m shared.contract.schemas

compose-check: install ## validate deploy/docker-compose.yml offline (Debian's docker-compose)
	$(PY) -m pytest -q tests/unit/ops/test_compose.py

alerts-check: install ## promtool check/test rules, amtool check-config (part of make test)
	$(PY) -m pytest -q tests/unit/ops/test_alert_rules.py

asyncapi: install ## export each service's AsyncAPI document into docs/asyncapi/
	$(PY) -m shared.plumbing.asyncapi_export

openapi: install ## export each service's OpenAPI document into docs/openapi/
	$(PY) -m shared.plumbing.openapi_export

api-docs: asyncapi openapi ## both: docs/asyncapi/ and docs/openapi/

dist: install ## build the contract distribution (privacy-plane-contract: wheel + sdist) into dist/
	$(PY) -m build contract --outdir dist

clean: ## remove caches (not the data folders: `deploy/local/down --purge` does that)
	rm -rf .mypy_cache .ruff_cache .pytest_cache
