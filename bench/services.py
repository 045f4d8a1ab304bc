"""The processes a benchmark run starts: servers, data, PgBouncer, the bare relay, sqlbastion.

Everything listens on 127.0.0.1 and lives in one run directory, removed at the
end. Each ``start_*`` returns an :class:`Endpoint` for the client tools, or
raises :class:`Unavailable` with a short reason; the runner then reports that
path as ``n/a (reason)`` and goes on with the others.

The backend account on every path is the servers' service account, so the
direct, PgBouncer, relay and sqlbastion paths log in to the same server as the
same backend user; sqlbastion's clients log in as the bench person instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pymysql

from bench.workloads import SYSBENCH_TABLES, Endpoint, sysbench_command
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.users import UsersFile, make_credentials

__all__ = [
    "BENCH_DATABASE",
    "BENCH_PASSWORD",
    "BENCH_PERSON",
    "MASK_TABLE",
    "Started",
    "Unavailable",
    "cpu_seconds",
    "direct_endpoint",
    "load_mysql_data",
    "load_postgres_data",
    "rss_mib",
    "start_pgbouncer",
    "start_relay",
    "start_sqlbastion",
    "stop_all",
    "thread_cpu_seconds",
    "write_sqlbastion_config",
]

BENCH_DATABASE = "bench"
BENCH_PERSON = "bench"
BENCH_PASSWORD = "bench-person-pw"  # a throwaway person on a throwaway server
MASK_TABLE = "bench_mask"
MYSQL_BACKEND = "bench_mysql"
POSTGRES_BACKEND = "bench_pg"


class Unavailable(Exception):
    """A path cannot be measured in this run; the message says why, briefly."""


@dataclass(kw_only=True)
class Started:
    """A process this run started, stopped by :func:`stop_all`."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    endpoint: Endpoint
    extra: dict[str, str] = field(default_factory=dict)


_started: list[Started] = []


def stop_all() -> None:
    """Stop every process started here, newest first (SIGTERM, then SIGKILL after 10 s)."""
    while _started:
        s = _started.pop()
        _stop(s.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, n: int = 600) -> str:
    try:
        return " ".join(path.read_text(errors="replace")[-n:].split())
    except OSError:
        return ""


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"exited with code {proc.returncode}: {_tail(log, 300)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    _stop(proc)
    raise Unavailable(f"not listening on port {port} after {timeout:.0f}s: {_tail(log, 300)}")


def direct_endpoint(server: ServerInfo) -> Endpoint:
    return Endpoint(
        path="direct",
        host=server.host,
        port=server.port,
        user=server.service_user,
        password=server.service_password,
        database=BENCH_DATABASE,
    )


# -- data ------------------------------------------------------------------


def load_mysql_data(server: ServerInfo, *, mask_rows: int, connections: int) -> None:
    """sysbench's tables and the masked-scan table in database ``bench``; room for many connections."""
    conn = pymysql.connect(
        host=server.host, port=server.port, user=server.admin_user, password=server.admin_password, autocommit=True
    )
    try:
        with conn.cursor() as cur:
            # Idle-connection test: every client session holds a backend session.
            cur.execute(f"SET GLOBAL max_connections = {int(connections) + 200}")
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {BENCH_DATABASE}")
            cur.execute(f"USE {BENCH_DATABASE}")  # the sequence engine's seq_* tables need a current database
            cur.execute(f"DROP TABLE IF EXISTS {BENCH_DATABASE}.{MASK_TABLE}")
            cur.execute(
                f"CREATE TABLE {BENCH_DATABASE}.{MASK_TABLE} (id BIGINT PRIMARY KEY, mobile CHAR(11),"
                " id_card CHAR(18), city VARCHAR(32))"
            )
            # MariaDB's sequence engine gives the numbers; the values look like the real thing.
            cur.execute(
                f"INSERT INTO {BENCH_DATABASE}.{MASK_TABLE} SELECT seq, CONCAT('138', LPAD(seq, 8, '0')),"
                " CONCAT('110101', 19700101 + seq % 20000, LPAD(seq % 10000, 4, '0')),"
                f" ELT(1 + seq % 4, 'Beijing', 'Shanghai', 'Shenzhen', 'Hangzhou') FROM seq_1_to_{int(mask_rows)}"
            )
    finally:
        conn.close()
    admin = Endpoint(
        path="direct",
        host=server.host,
        port=server.port,
        user=server.admin_user,
        password=server.admin_password,
        database=BENCH_DATABASE,
    )
    for action in ("cleanup", "prepare"):
        r = subprocess.run(
            sysbench_command(admin, test="oltp_read_only", threads=min(SYSBENCH_TABLES, 2), seconds=1, action=action),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if action == "prepare" and r.returncode != 0:
            raise Unavailable(f"sysbench prepare failed: {(r.stdout + r.stderr).strip()[-300:]}")


def load_postgres_data(server: ServerInfo, *, scale: int, mask_rows: int) -> None:
    """pgbench's tables at ``scale`` and the masked-scan table in database ``bench``."""

    async def setup() -> None:
        conn = await asyncpg.connect(
            host=server.host,
            port=server.port,
            user=server.admin_user,
            password=server.admin_password,
            database="postgres",
        )
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", BENCH_DATABASE):
                await conn.execute(f"CREATE DATABASE {BENCH_DATABASE}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(
            host=server.host,
            port=server.port,
            user=server.admin_user,
            password=server.admin_password,
            database=BENCH_DATABASE,
        )
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {MASK_TABLE}")
            await conn.execute(
                f"CREATE TABLE {MASK_TABLE} (id BIGINT PRIMARY KEY, mobile CHAR(11), id_card CHAR(18),"
                " city VARCHAR(32))"
            )
            await conn.execute(
                f"INSERT INTO {MASK_TABLE} SELECT g, '138' || lpad(g::text, 8, '0'),"
                " '110101' || (19700101 + g % 20000)::text || lpad((g % 10000)::text, 4, '0'),"
                " (ARRAY['Beijing','Shanghai','Shenzhen','Hangzhou'])[1 + g % 4]"
                f" FROM generate_series(1, {int(mask_rows)}) AS g"
            )
            await conn.execute(f"VACUUM ANALYZE {MASK_TABLE}")
        finally:
            await conn.close()

    asyncio.run(setup())
    init = ["pgbench", "-i", "-q", "-s", str(scale), "-h", server.host, "-p", str(server.port)]
    r = subprocess.run(
        [*init, "-U", server.admin_user, BENCH_DATABASE],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PGPASSWORD": server.admin_password},
        check=False,
    )
    if r.returncode != 0:
        raise Unavailable(f"pgbench -i failed: {(r.stdout + r.stderr).strip()[-300:]}")


# -- PgBouncer -------------------------------------------------------------


def start_pgbouncer(server: ServerInfo, run_dir: Path, *, clients: int) -> Started:
    """PgBouncer in session pooling mode in front of ``server``, run as ``postgres`` when we are root."""
    exe = _which("pgbouncer", "/usr/sbin/pgbouncer")
    if exe is None:
        raise Unavailable("pgbouncer is not installed (scripts/install-deps.sh --bench)")
    directory = run_dir / "pgbouncer"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "pgbouncer.log"
    user, password = server.service_user, server.service_password
    # A plain-text auth file lets PgBouncer answer the client's SCRAM exchange and
    # run its own SCRAM exchange with the server (PgBouncer docs, "Authentication file format").
    (directory / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{BENCH_DATABASE} = host={server.host} port={server.port} dbname={BENCH_DATABASE}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {directory / 'userlist.txt'}\n"
        "pool_mode = session\n"
        f"max_client_conn = {max(100, clients * 4)}\n"
        f"default_pool_size = {max(20, clients * 2)}\n"
        f"logfile = {log}\n"
        f"pidfile = {directory / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "log_connections = 0\nlog_disconnections = 0\n"
    )
    demote: dict[str, int] = {}
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root.
        pw = pwd.getpwnam("postgres")
        for p in [directory, *directory.parents]:
            if p == Path("/"):
                break
            os.chmod(p, p.stat().st_mode | 0o001)
        for p in [directory, *directory.iterdir()]:
            os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(directory / "userlist.txt", 0o600)
        demote = {"user": pw.pw_uid, "group": pw.pw_gid}
    stderr_log = directory / "stderr.log"
    with open(stderr_log, "wb") as out:
        proc = subprocess.Popen(
            [exe, str(directory / "pgbouncer.ini")],
            stdout=out,
            stderr=out,
            start_new_session=True,
            **demote,  # type: ignore[call-overload]  # user/group keyword arguments
        )
    ep = Endpoint(path="pgbouncer", host="127.0.0.1", port=port, user=user, password=password, database=BENCH_DATABASE)
    started = Started(name="pgbouncer", proc=proc, log=log, endpoint=ep)
    _started.append(started)
    _wait_listening(port, proc, stderr_log if not log.exists() else log, 20)
    return started


def _which(*candidates: str) -> str | None:
    import shutil

    for c in candidates:
        found = shutil.which(c) or (c if os.path.isabs(c) and os.access(c, os.X_OK) else None)
        if found:
            return found
    return None


# -- bare relay ------------------------------------------------------------


def start_relay(upstream: Endpoint, run_dir: Path) -> Started:
    """bench/relay.py in front of ``upstream``: the byte-copying ceiling for a Python proxy."""
    port = free_port()
    log = run_dir / f"relay-{upstream.port}.log"
    relay = Path(__file__).with_name("relay.py")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(relay),
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                f"{upstream.host}:{upstream.port}",
            ],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    ep = Endpoint(
        path="relay",
        host="127.0.0.1",
        port=port,
        user=upstream.user,
        password=upstream.password,
        database=upstream.database,
    )
    started = Started(name="relay", proc=proc, log=log, endpoint=ep)
    _started.append(started)
    _wait_listening(port, proc, log, 20)
    return started


# -- sqlbastion ------------------------------------------------------------

_LISTENERS = {"mysql": "sqlbastion.proxy.mysql.listener", "postgres": "sqlbastion.proxy.postgres.listener"}


def _policy_toml(protocol: str) -> str:
    """The bench person may read everything in the bench database; two columns are masked.

    Format: docs/policy.md. Object names are ``backend:database.table.column`` for
    MySQL and ``backend:database.schema.table.column`` for PostgreSQL. The
    classified columns are those the masked-scan workload reads.
    """
    if protocol == "mysql":
        table = f"{MYSQL_BACKEND}:{BENCH_DATABASE}.{MASK_TABLE}"
        grants = f'"{MYSQL_BACKEND}:{BENCH_DATABASE}.*"'
    else:
        table = f"{POSTGRES_BACKEND}:{BENCH_DATABASE}.public.{MASK_TABLE}"
        grants = f'"{POSTGRES_BACKEND}:{BENCH_DATABASE}.*", "{POSTGRES_BACKEND}:{BENCH_DATABASE}.public.*"'
    return (
        "[[persons]]\n"
        f'name = "{BENCH_PERSON}"\n'
        'roles = ["bench"]\n'
        'networks = ["127.0.0.0/8"]\n'
        "\n[[roles]]\n"
        'name = "bench"\n'
        'duties = ["use"]\n'
        f'grants = [{{ actions = ["select"], objects = [{grants}] }}]\n'
        'masks = { mobile = "mobile", id_card = "id_card" }\n'
        'unprovable = "block"\n'
        f'\n[[classifications]]\nobjects = ["{table}.mobile"]\ntype = "mobile"\nlevel = 3\n'
        f'\n[[classifications]]\nobjects = ["{table}.id_card"]\ntype = "id_card"\nlevel = 4\n'
    )


def write_sqlbastion_config(
    directory: Path, protocol: str, backend: ServerInfo, *, port: int, admin_port: int
) -> tuple[Path, str]:
    """The configuration, users file and policy file of a bench sqlbastion, in ``directory``.

    Returns the configuration file and the environment variable that must hold
    the backend password (the configuration only references it).
    """
    users = UsersFile(path=directory / "users.toml")
    users.persons[BENCH_PERSON] = make_credentials(BENCH_PERSON, BENCH_PASSWORD)
    users.save()
    (directory / "policy.toml").write_text(_policy_toml(protocol))
    name = MYSQL_BACKEND if protocol == "mysql" else POSTGRES_BACKEND
    secret_env = f"SQLBASTION_BENCH_{protocol.upper()}_PASSWORD"
    config = directory / "sqlbastion.toml"
    config.write_text(
        'users_file = "users.toml"\n'
        "\n[server]\nhandshake_timeout_s = 60.0\nmax_connections = 20000\n"
        '\n[logging]\nlevel = "warning"\nformat = "json"\n'
        f'\n[admin]\nenabled = true\nlisten = "127.0.0.1:{admin_port}"\n'
        '\n[policy]\nfiles = ["policy.toml"]\n'
        '\n[audit]\nspool_dir = "audit/spool"\non_audit_failure = "fail_closed"\n'
        '\n[[audit.sinks]]\ntype = "sqlite"\npath = "audit/audit.db"\n'
        "\n[[backends]]\n"
        f'name = "{name}"\n'
        f'protocol = "{protocol}"\n'
        f'listen = "127.0.0.1:{port}"\n'
        f'host = "{backend.host}"\nport = {backend.port}\n'
        f'user = "{backend.service_user}"\npassword = "env:{secret_env}"\n'
        f'database = "{BENCH_DATABASE}"\n'
    )
    return config, secret_env


def start_sqlbastion(protocol: str, backend: ServerInfo, run_dir: Path, *, bare: bool = False) -> Started:
    """``sqlbastion serve`` for one backend, with policy and audit on, as a subprocess.

    One process per protocol: its RSS and its profile then belong to one protocol's workload.
    ``bare``: bench/serve_bare.py instead, the same listener with an allow-all
    runtime (path ``sqlbastion_bare``), to separate protocol cost from policy cost.
    """
    module = _LISTENERS[protocol]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise Unavailable(f"{module} is not built yet")
    path = "sqlbastion_bare" if bare else "sqlbastion"
    directory = run_dir / f"{path}-{protocol}"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config, secret_env = write_sqlbastion_config(directory, protocol, backend, port=port, admin_port=free_port())
    log = directory / "serve.log"
    env = {**os.environ, secret_env: backend.service_password}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("serve_bare.py")), "--config", str(config)]
            if bare
            else [sys.executable, "-m", "sqlbastion.cli", "serve", "--config", str(config)],
            stdout=out,
            stderr=out,
            env=env,
            cwd=directory,
            start_new_session=True,
        )
    ep = Endpoint(
        path=path,
        host="127.0.0.1",
        port=port,
        user=BENCH_PERSON,
        password=BENCH_PASSWORD,
        database=BENCH_DATABASE,
    )
    started = Started(name=f"{path}-{protocol}", proc=proc, log=log, endpoint=ep)
    _started.append(started)
    _wait_listening(port, proc, log, 60)
    return started


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of a process, its threads and its live child processes (/proc, Linux).

    The children count because sqlbastion's audit writer and delivery run as child
    processes: their CPU is part of what a statement costs.
    """
    total = _own_cpu_seconds(pid)
    for child in _children(pid):
        try:
            total += cpu_seconds(child)
        except (OSError, ValueError, IndexError):
            continue  # the child ended between listing and reading
    return total


def _own_cpu_seconds(pid: int) -> float:
    # /proc/PID/stat: fields 14 and 15 (utime, stime) in clock ticks; the command name may hold spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Child process ids of every thread of ``pid`` (/proc/PID/task/TID/children, Linux ≥ 3.5)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out.extend(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time of each thread of a process, by thread id (the main thread's id is the pid)."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended between listing and reading
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise Unavailable(f"no VmRSS for process {pid}")
