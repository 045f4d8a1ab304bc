#!/usr/bin/env bash
# Installs what sqlbastion's demo, tests and benchmarks need on a Debian machine.
# Idempotent: it installs only what is missing. Run as root or with sudo available.
#   scripts/install-deps.sh            servers + Python virtualenv
#   scripts/install-deps.sh --bench    also sysbench, pgbouncer (benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."

want_bench=0
for arg in "$@"; do
  case "$arg" in
    --bench) want_bench=1 ;;
    *) echo "install-deps: unknown argument $arg" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Debian packages: real servers for the integration tests and the demo.
pkgs=(mariadb-server mariadb-client postgresql postgresql-client rsyslog prometheus openssl make)
# sysbench: the MySQL proxy's integration tests drive it (oltp_read_write, both PS modes).
pkgs+=(sysbench)
# A C compiler and the Python headers: pip builds sqlbastion._rowfast (the masked-row rewriter).
pkgs+=(gcc python3-dev)
if [ "$want_bench" = 1 ]; then pkgs+=(pgbouncer); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d keeps the packages from starting system-wide services: the
  # project runs its own throwaway servers on loopback ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python virtualenv with the package and its development tools.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The stamp covers the C extension's sources too: a change to them rebuilds sqlbastion._rowfast.
stamp=.venv/.installed-$(cat pyproject.toml setup.py src/sqlbastion/_rowfast*.[ch] | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "install-deps: ok"
