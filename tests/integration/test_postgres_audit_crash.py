"""kill -9 of sqlbastion while a PostgreSQL client runs statements, then a restart: every statement
the client got a reply to has its audit event.

The proxy runs as ``sqlbastion serve`` in its own process with the audit
pipeline as configured by default (the intake ring, the writer process, a
JSON-lines sink). Each statement carries its number in a column alias (audit
text keeps identifiers; literals are redacted), so the events can be matched
to the replies. The relay emits a statement's event before the bytes that
complete its reply leave (docs/postgres.md, "Audit before the reply"), and
``emit`` is durable once it returns.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

PERSON, PASSWORD = "crash", "crash-pass-1"
SECRET_ENV = "SQLBASTION_TEST_PG_CRASH_PW"


def _config(directory: Path, server: ServerInfo, port: int) -> Path:
    users = UsersFile(path=directory / "users.toml")
    users.persons[PERSON] = make_credentials(PERSON, PASSWORD, ("scram_sha_256",))
    users.save()
    policy = directory / "policy.toml"
    policy.write_text(
        f'[[persons]]\nname = "{PERSON}"\nroles = ["reader"]\n'
        '[[roles]]\nname = "reader"\ngrants = [{ actions = ["select"], objects = ["pg:*"] }]\n',
        encoding="utf-8",
    )
    path = directory / "sqlbastion.toml"
    path.write_text(
        f'users_file = "{directory / "users.toml"}"\n'
        "[admin]\nenabled = false\n"
        f'[policy]\nfiles = ["{policy}"]\n'
        f'[audit]\nspool_dir = "{directory / "spool"}"\n'
        f'[[audit.sinks]]\ntype = "jsonl"\npath = "{directory / "audit.jsonl"}"\n'
        f'[[backends]]\nname = "pg"\nprotocol = "postgres"\nlisten = "127.0.0.1:{port}"\n'
        f'host = "{server.host}"\nport = {server.port}\nuser = "{server.service_user}"\n'
        f'password = "env:{SECRET_ENV}"\ndatabase = "postgres"\n',
        encoding="utf-8",
    )
    return path


SERVE = "import sys; from sqlbastion.cli import main; sys.exit(main())"


def _serve(config: Path, server: ServerInfo, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **{SECRET_ENV: server.service_password})
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the kill below reaches the proxy alone, not the test run
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sqlbastion serve exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("sqlbastion serve did not start listening")


def _aliases(path: Path) -> set[int]:
    found: set[int] = set()
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line the sink was writing when it was killed
        text = str(event.get("statement_text") or "")
        if event.get("kind") == "statement" and " AS crash_" in text:
            found.add(int(text.rsplit("crash_", 1)[1].split(maxsplit=1)[0].rstrip(";")))
    return found


def test_kill_9_loses_no_event_of_an_answered_statement(postgres_server: ServerInfo, tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, postgres_server, port)
    proc = _serve(config, postgres_server, port)
    answered: list[int] = []
    try:
        dsn = f"host=127.0.0.1 port={port} user={PERSON} password={PASSWORD} dbname=postgres sslmode=disable"
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            started = time.monotonic()
            i = 0
            # Simple and extended statements, as fast as the client goes, for a bounded while.
            while time.monotonic() - started < 3 and i < 3000:
                if i % 2:
                    conn.execute(f"SELECT {i} AS crash_{i}")
                else:
                    conn.execute(f"SELECT %s::int AS crash_{i}", (i,))
                answered.append(i)
                i += 1
            os.killpg(proc.pid, signal.SIGKILL)  # right after the last reply, nothing drained
            proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert len(answered) > 50
    # Restart: the events in the intake ring and the spool reach the sink.
    proc = _serve(config, postgres_server, port)
    try:
        deadline = time.monotonic() + 60
        missing = set(answered)
        while time.monotonic() < deadline:
            missing = set(answered) - _aliases(tmp_path / "audit.jsonl")
            if not missing:
                break
            time.sleep(0.2)
        assert not missing, f"{len(missing)} answered statements without an audit event, e.g. {sorted(missing)[:5]}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
