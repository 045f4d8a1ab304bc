"""Throwaway MariaDB and PostgreSQL servers on loopback ports, for the demo, tests and benchmarks.

Each server lives in its own directory (data, socket, log) and listens on
127.0.0.1 only. When run as root, the servers run as the Debian packages'
``mysql`` and ``postgres`` accounts, because PostgreSQL refuses to run as root.

Every server gets an admin account and a ``sqlbastion`` service account (the
"vaulted" backend credentials the proxy uses) with the passwords given.

Command line (used by the Makefile and the demo)::

    python -m sqlbastion.devtools.servers start --dir var/servers
    python -m sqlbastion.devtools.servers stop --dir var/servers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pymysql

__all__ = ["ServerError", "ServerInfo", "free_port", "start_mariadb", "start_postgres", "stop"]

ADMIN_USER = "bastion_admin"
SERVICE_USER = "sqlbastion"


class ServerError(Exception):
    """A server could not be installed, started or stopped; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class ServerInfo:
    kind: str  # "mariadb" or "postgres"
    host: str
    port: int
    directory: str
    pid: int
    admin_user: str
    admin_password: str
    service_user: str
    service_password: str
    socket: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find(candidates: list[str], what: str, package: str) -> str:
    for c in candidates:
        found = shutil.which(c) or (c if os.path.isabs(c) and os.access(c, os.X_OK) else None)
        if found:
            return found
    raise ServerError(f"{what} is not installed: run scripts/install-deps.sh (Debian package {package})")


def _pg_bin(name: str) -> str:
    candidates = [name]
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        for v in sorted(base.iterdir(), reverse=True):
            candidates.append(str(v / "bin" / name))
    return _find(candidates, f"PostgreSQL's {name}", "postgresql")


def _owner(account: str) -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(account)
    except KeyError:
        raise ServerError(f"account {account!r} is missing: run scripts/install-deps.sh") from None
    return pw.pw_uid, pw.pw_gid


def _chown_tree(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, *owner)
        for n in dirs + files:
            os.chown(os.path.join(root, n), *owner)


def _demote(owner: tuple[int, int] | None) -> dict[str, int]:
    return {} if owner is None else {"user": owner[0], "group": owner[1]}


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerError(f"server exited with code {proc.returncode}; log tail:\n{tail}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServerError(f"server did not listen on {host}:{port} within {timeout:.0f}s (log: {log})")


def start_mariadb(
    directory: Path,
    *,
    port: int | None = None,
    admin_password: str = "admin-pw",
    service_password: str = "service-pw",
    timeout: float = 60.0,
) -> ServerInfo:
    """Initialise and start a MariaDB server in ``directory``."""
    mariadbd = _find(["mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld"], "MariaDB", "mariadb-server")
    install_db = _find(["mariadb-install-db", "mysql_install_db"], "mariadb-install-db", "mariadb-server")
    directory = directory.resolve()
    data = directory / "data"
    directory.mkdir(parents=True, exist_ok=True)
    owner = _owner("mysql")
    port = port or free_port()
    sock = directory / "mysqld.sock"
    log = directory / "mysqld.log"
    if not (data / "mysql").is_dir():
        data.mkdir(exist_ok=True)
        _chown_tree(directory, owner)
        user_arg = [f"--user={pwd.getpwuid(owner[0]).pw_name}"] if owner else []
        r = subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user_arg,
            ],
            capture_output=True,
            check=False,
        )
        if r.returncode != 0:
            raise ServerError(f"mariadb-install-db failed: {r.stderr.decode(errors='replace')[-2000:]}")
    _chown_tree(directory, owner)
    args = [
        mariadbd,
        "--no-defaults",
        f"--datadir={data}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        f"--socket={sock}",
        f"--pid-file={directory / 'mysqld.pid'}",
        f"--log-error={log}",
        "--skip-name-resolve",
        "--max-connections=2000",
        "--innodb-buffer-pool-size=256M",
        "--innodb-flush-log-at-trx-commit=2",
        "--max-allowed-packet=64M",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_general_ci",
    ]
    if owner:
        args.append(f"--user={pwd.getpwuid(owner[0]).pw_name}")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_port("127.0.0.1", port, proc, log, timeout)
    # Root logs in over the socket with no password on a fresh data directory.
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = pymysql.connect(unix_socket=str(sock), user="root", password="", autocommit=True)
            break
        except pymysql.err.OperationalError:
            try:
                conn = pymysql.connect(
                    host="127.0.0.1", port=port, user=ADMIN_USER, password=admin_password, autocommit=True
                )
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise ServerError(f"cannot log in to MariaDB on port {port}") from None
                time.sleep(0.2)
    with conn.cursor() as cur:
        for user, pw in ((ADMIN_USER, admin_password), (SERVICE_USER, service_password)):
            cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY %s", (pw,))
            cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY %s", (pw,))
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1' WITH GRANT OPTION")
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'localhost' WITH GRANT OPTION")
    conn.close()
    return ServerInfo(
        kind="mariadb",
        host="127.0.0.1",
        port=port,
        directory=str(directory),
        pid=proc.pid,
        admin_user=ADMIN_USER,
        admin_password=admin_password,
        service_user=SERVICE_USER,
        service_password=service_password,
        socket=str(sock),
    )


def start_postgres(
    directory: Path,
    *,
    port: int | None = None,
    admin_password: str = "admin-pw",
    service_password: str = "service-pw",
    timeout: float = 60.0,
) -> ServerInfo:
    """Initialise and start a PostgreSQL server in ``directory`` with SCRAM authentication."""
    initdb = _pg_bin("initdb")
    postgres = _pg_bin("postgres")
    directory = directory.resolve()
    data = directory / "data"
    directory.mkdir(parents=True, exist_ok=True)
    owner = _owner("postgres")
    port = port or free_port()
    log = directory / "postgres.log"
    if owner is not None:
        # The server account must be able to reach its directory.
        for parent in [directory, *directory.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    if not (data / "PG_VERSION").exists():
        pwfile = directory / "pwfile"
        pwfile.write_text(admin_password + "\n")
        _chown_tree(directory, owner)
        r = subprocess.run(
            [
                initdb,
                "-D",
                str(data),
                "-U",
                ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C",
            ],
            capture_output=True,
            check=False,
            **_demote(owner),  # type: ignore[call-overload]  # user/group kwargs
        )
        pwfile.unlink()
        if r.returncode != 0:
            raise ServerError(f"initdb failed: {r.stderr.decode(errors='replace')[-2000:]}")
        with open(data / "pg_hba.conf", "w") as f:
            f.write(
                "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
                "host all all ::1/128 scram-sha-256\n"
            )
    _chown_tree(directory, owner)
    args = [
        postgres,
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={directory}",
        "-c",
        "max_connections=500",
        "-c",
        "shared_buffers=128MB",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "logging_collector=off",
    ]
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            args,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
            **_demote(owner),  # type: ignore[call-overload]  # user/group kwargs
        )
    _wait_port("127.0.0.1", port, proc, log, timeout)
    info = ServerInfo(
        kind="postgres",
        host="127.0.0.1",
        port=port,
        directory=str(directory),
        pid=proc.pid,
        admin_user=ADMIN_USER,
        admin_password=admin_password,
        service_user=SERVICE_USER,
        service_password=service_password,
        socket=str(directory),
    )
    _pg_setup_service_account(info, timeout)
    return info


def _has_c_utf8() -> bool:
    r = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    return any(x.lower() in ("c.utf8", "c.utf-8") for x in r.stdout.split())


def _pg_setup_service_account(info: ServerInfo, timeout: float) -> None:
    import asyncio

    import asyncpg

    async def setup() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = await asyncpg.connect(
                    host=info.host,
                    port=info.port,
                    user=info.admin_user,
                    password=info.admin_password,
                    database="postgres",
                )
                break
            except (OSError, asyncpg.PostgresError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", info.service_user)
            pw = info.service_password.replace("'", "''")
            if not exists:
                await conn.execute(f"CREATE ROLE {info.service_user} LOGIN SUPERUSER PASSWORD '{pw}'")
            else:
                await conn.execute(f"ALTER ROLE {info.service_user} PASSWORD '{pw}'")
        finally:
            await conn.close()

    asyncio.run(setup())


def stop(info: ServerInfo, *, timeout: float = 30.0) -> None:
    """Stop a server started here (fast shutdown), waiting for it to exit."""
    try:
        os.killpg(info.pid, signal.SIGTERM if info.kind == "mariadb" else signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.pid, os.WNOHANG)  # reap it if it is our child
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(info.pid, signal.SIGKILL)


def _state_file(directory: Path) -> Path:
    return directory / "servers.json"


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sqlbastion.devtools.servers",
        description="Start or stop throwaway MariaDB and PostgreSQL servers.",
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default="var/servers", help="where the servers live (default: var/servers)")
    parser.add_argument("--mariadb-port", type=int, default=None)
    parser.add_argument("--postgres-port", type=int, default=None)
    parser.add_argument("--only", choices=["mariadb", "postgres"], default=None)
    args = parser.parse_args(argv)
    directory = Path(args.dir).resolve()
    state = _state_file(directory)
    if args.action == "status":
        sys.stdout.write(state.read_text() if state.exists() else "{}\n")
        return 0
    if args.action == "stop":
        if state.exists():
            for entry in json.loads(state.read_text()).values():
                stop(ServerInfo(**entry))
            state.unlink()
        return 0
    if state.exists():
        known = json.loads(state.read_text())
        alive = all(_alive(e["pid"]) for e in known.values())
        if alive:
            sys.stdout.write(state.read_text())
            return 0
    infos: dict[str, ServerInfo] = {}
    try:
        if args.only in (None, "mariadb"):
            infos["mariadb"] = start_mariadb(directory / "mariadb", port=args.mariadb_port)
        if args.only in (None, "postgres"):
            infos["postgres"] = start_postgres(directory / "postgres", port=args.postgres_port)
    except ServerError as exc:
        for info in infos.values():
            stop(info)
        sys.stderr.write(f"servers: {exc}\n")
        return 1
    text = json.dumps({k: asdict(v) for k, v in infos.items()}, indent=2) + "\n"
    state.write_text(text)
    sys.stdout.write(text)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(_main())
