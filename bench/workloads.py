"""The client-side workloads: pgbench, sysbench and a full read of a large masked result.

Each ``run_*`` function drives one client tool against one endpoint for one
round and returns the round's figure, or raises :class:`WorkloadError` with a
short reason (the table shows it as ``n/a (reason)``). The output parsers are
pure functions, tested in tests/unit/test_bench_report.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass

__all__ = [
    "Endpoint",
    "SysbenchFigures",
    "WorkloadError",
    "parse_pgbench_tps",
    "parse_sysbench",
    "pgbench_command",
    "run_pgbench",
    "run_scan",
    "run_sysbench",
    "sysbench_command",
]

# sysbench's tables: enough rows that point selects spread over the buffer pool,
# few enough that `prepare` takes seconds on two cores.
SYSBENCH_TABLES = 4
SYSBENCH_TABLE_SIZE = 100_000


class WorkloadError(Exception):
    """A round could not be measured; the message is short enough for a table cell."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Endpoint:
    """Where a client connects for one path (direct, PgBouncer, relay, sqlbastion)."""

    path: str
    host: str
    port: int
    user: str
    password: str
    database: str


# -- parsing ---------------------------------------------------------------

_PGBENCH_TPS = re.compile(
    r"^tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)", re.M
)
_PGBENCH_TPS_ANY = re.compile(r"^tps = ([0-9.]+)", re.M)
_PGBENCH_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


def parse_pgbench_tps(output: str) -> float:
    """Transactions per second from pgbench's summary (PostgreSQL 13+ wording first).

    Raises WorkloadError when the summary is missing or transactions failed.
    """
    if "empty range given to random" in output:
        # pgbench reads the scale as count(*) of pgbench_branches; 0 means that query's value was lost.
        raise WorkloadError("pgbench read scale 0: the path returned an empty or NULL count(*)")
    failed = _PGBENCH_FAILED.search(output)
    if failed and int(failed.group(1)) > 0:
        raise WorkloadError(f"pgbench: {failed.group(1)} failed transactions")
    m = _PGBENCH_TPS.search(output) or _PGBENCH_TPS_ANY.search(output)
    if m is None:
        raise WorkloadError("pgbench printed no tps: " + _last_line(output))
    return float(m.group(1))


@dataclass(frozen=True, kw_only=True, slots=True)
class SysbenchFigures:
    tps: float
    qps: float
    errors: int
    p95_ms: float | None


_SB_TPS = re.compile(r"^\s*transactions:\s+\d+\s+\(([0-9.]+) per sec\.\)", re.M)
_SB_QPS = re.compile(r"^\s*queries:\s+\d+\s+\(([0-9.]+) per sec\.\)", re.M)
_SB_ERRORS = re.compile(r"^\s*ignored errors:\s+(\d+)", re.M)
_SB_P95 = re.compile(r"^\s*95th percentile:\s+([0-9.]+)", re.M)


def parse_sysbench(output: str) -> SysbenchFigures:
    """The figures of sysbench 1.0's ``run`` summary. Raises WorkloadError on FATAL or no summary."""
    for line in output.splitlines():
        if "FATAL" in line:
            raise WorkloadError("sysbench: " + line.split("FATAL", 1)[1].lstrip(": ")[:120])
    tps, qps = _SB_TPS.search(output), _SB_QPS.search(output)
    if tps is None or qps is None:
        raise WorkloadError("sysbench printed no summary: " + _last_line(output))
    errors = _SB_ERRORS.search(output)
    p95 = _SB_P95.search(output)
    return SysbenchFigures(
        tps=float(tps.group(1)),
        qps=float(qps.group(1)),
        errors=int(errors.group(1)) if errors else 0,
        p95_ms=float(p95.group(1)) if p95 else None,
    )


def _last_line(output: str) -> str:
    lines = [x.strip() for x in output.strip().splitlines() if x.strip()]
    return lines[-1][:120] if lines else "(no output)"


# -- commands --------------------------------------------------------------


def pgbench_command(ep: Endpoint, *, mode: str, clients: int, seconds: int) -> list[str]:
    """pgbench -S (select only) against ``ep``; ``mode`` is simple, extended or prepared."""
    return [
        "pgbench",
        "-S",  # built-in select-only script: one SELECT per transaction
        "-n",  # no VACUUM before the run: the proxies may refuse it, and it is not measured
        f"--protocol={mode}",
        f"--client={clients}",
        f"--jobs={min(clients, 2)}",
        f"--time={seconds}",
        "-h",
        ep.host,
        "-p",
        str(ep.port),
        "-U",
        ep.user,
        ep.database,
    ]


def sysbench_command(
    ep: Endpoint, *, test: str, threads: int, seconds: int, ps_mode: str = "auto", action: str = "run"
) -> list[str]:
    return [
        "sysbench",
        test,
        "--db-driver=mysql",
        f"--mysql-host={ep.host}",
        f"--mysql-port={ep.port}",
        f"--mysql-user={ep.user}",
        f"--mysql-password={ep.password}",
        f"--mysql-db={ep.database}",
        "--mysql-ssl=off",
        f"--db-ps-mode={ps_mode}",
        f"--tables={SYSBENCH_TABLES}",
        f"--table-size={SYSBENCH_TABLE_SIZE}",
        f"--threads={threads}",
        f"--time={seconds}",
        "--report-interval=0",
        action,
    ]


def _run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WorkloadError(f"{cmd[0]} did not finish within {timeout:.0f}s") from None
    except FileNotFoundError:
        raise WorkloadError(f"{cmd[0]} is not installed (scripts/install-deps.sh --bench)") from None
    out = r.stdout + "\n" + r.stderr
    if r.returncode != 0:
        raise WorkloadError(f"{cmd[0]} exited {r.returncode}: {_first_error(out)}")
    return out


def _first_error(output: str) -> str:
    for line in output.splitlines():
        low = line.lower()
        if "error" in low or "fatal" in low or "denied" in low or "failed" in low:
            return line.strip()[:140]
    return _last_line(output)


def run_pgbench(ep: Endpoint, *, mode: str, clients: int, seconds: int) -> float:
    cmd = pgbench_command(ep, mode=mode, clients=clients, seconds=seconds)
    try:
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            env={**os.environ, "PGPASSWORD": ep.password, "PGSSLMODE": "disable"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WorkloadError(f"pgbench did not finish within {seconds + 60}s") from None
    except FileNotFoundError:
        raise WorkloadError("pgbench is not installed (Debian package postgresql-client)") from None
    out = r.stdout + "\n" + r.stderr
    tps = parse_pgbench_tps(out)  # its errors say more than the exit code
    if r.returncode != 0:
        raise WorkloadError(f"pgbench exited {r.returncode}: {_first_error(out)}")
    return tps


def run_sysbench(ep: Endpoint, *, test: str, threads: int, seconds: int, ps_mode: str) -> SysbenchFigures:
    out = _run(sysbench_command(ep, test=test, threads=threads, seconds=seconds, ps_mode=ps_mode), timeout=seconds + 60)
    figures = parse_sysbench(out)
    if figures.errors:
        raise WorkloadError(f"sysbench: {figures.errors} errors")
    return figures


def run_scan(ep: Endpoint, *, protocol: str, sql: str, expect_rows: int, timeout: float) -> float:
    """Seconds for a C client (mariadb / psql) to read ``sql``'s whole result and throw it away.

    The rows are counted so that a path that silently returns less (a refusal,
    a truncated stream) is an error rather than a fast figure.
    """
    if protocol == "mysql":
        cmd = [
            "mariadb",
            "--no-defaults",
            "--quick",  # stream rows instead of buffering the whole result
            "--batch",
            "--skip-column-names",
            "--skip-ssl",
            f"--host={ep.host}",
            f"--port={ep.port}",
            f"--user={ep.user}",
            ep.database,
            "-e",
            sql,
        ]
        env = {"MYSQL_PWD": ep.password}
    else:
        cmd = ["psql", "-X", "-A", "-t", "-q", "-h", ep.host, "-p", str(ep.port), "-U", ep.user, "-d", ep.database]
        cmd += ["-v", "ON_ERROR_STOP=1", "-c", sql]
        env = {"PGPASSWORD": ep.password, "PGSSLMODE": "disable"}
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
        )
    except FileNotFoundError:
        raise WorkloadError(f"{cmd[0]} is not installed") from None
    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:  # cannot happen: both were asked for as pipes
        raise WorkloadError(f"{cmd[0]}: no output pipes")
    rows = 0
    deadline = started + timeout
    # Count lines as they stream; reading is part of what "a client reads to the end" costs.
    for chunk in iter(lambda: stdout.read(1 << 16), b""):
        rows += chunk.count(b"\n")
        if time.perf_counter() > deadline:
            proc.kill()
            proc.wait()
            raise WorkloadError(f"{cmd[0]} did not finish within {timeout:.0f}s")
    err = stderr.read().decode(errors="replace")
    code = proc.wait()
    elapsed = time.perf_counter() - started
    if code != 0:
        raise WorkloadError(f"{cmd[0]} exited {code}: {_first_error(err)}")
    if rows != expect_rows:
        raise WorkloadError(f"read {rows} rows, expected {expect_rows}")
    return elapsed
