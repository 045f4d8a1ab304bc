#!/usr/bin/env bash
# The whole test suite: ruff, mypy (strict), pytest (unit, protocol, integration).
# The integration tests start their own MariaDB and PostgreSQL servers and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== ruff"
$PY -m ruff check src tests bench
$PY -m ruff format --check src tests bench
echo "== mypy (strict)"
$PY -m mypy
echo "== pytest"
$PY -m pytest -q -p no:cacheprovider "$@"
