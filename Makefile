# sqlbastion — the two commands the README starts with, and their parts.
#   make demo    install what is missing, start throwaway servers, load the sample bank, run the proxy
#   make test    install what is missing, run ruff, mypy (strict) and the whole test suite
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test deps lint typecheck unit integration bench servers-up servers-down clean

deps:
	bash scripts/install-deps.sh

demo: deps
	bash scripts/demo.sh

test: deps
	bash scripts/test.sh

lint: deps
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

typecheck: deps
	$(PY) -m mypy

unit: deps
	$(PY) -m pytest -m "not integration" -q

integration: deps
	$(PY) -m pytest -m integration -q

bench:
	bash scripts/install-deps.sh --bench
	$(PY) bench/run.py

servers-up: deps
	$(PY) -m sqlbastion.devtools.servers start --dir var/servers

servers-down:
	-$(PY) -m sqlbastion.devtools.servers stop --dir var/servers

clean: servers-down
	-bash scripts/demo.sh stop
	rm -rf var .mypy_cache .ruff_cache .pytest_cache
