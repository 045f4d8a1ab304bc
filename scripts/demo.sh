#!/usr/bin/env bash
# The sqlbastion demo (run by `make demo`, see docs/demo.md):
#   scripts/demo.sh          start throwaway MariaDB + PostgreSQL under var/demo, load the sample bank,
#                            add the demo persons, start sqlbastion, print how to connect as each person
#   scripts/demo.sh stop     stop sqlbastion and the servers
#   scripts/demo.sh status   show what is running
# Everything listens on 127.0.0.1 only. Ports: SQLBASTION_DEMO_MYSQL_PORT (3307),
# SQLBASTION_DEMO_POSTGRES_PORT (6433), SQLBASTION_DEMO_ADMIN_PORT (9187) when free.
# SQLBASTION_DEMO_DIR moves everything elsewhere than var/demo; SQLBASTION_DEMO_SCALE sizes the bank (1).
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:-start}
case "$action" in
  start|stop|status) ;;
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "demo: unknown action '$action' (start, stop or status)" >&2; exit 2 ;;
esac

if [ ! -x .venv/bin/python ]; then
  if [ "$action" = start ]; then
    bash scripts/install-deps.sh
  else
    echo "demo: nothing to $action (no .venv yet)"; exit 0
  fi
fi

exec .venv/bin/python -m sqlbastion.devtools.demo "$action" --dir "${SQLBASTION_DEMO_DIR:-var/demo}"
