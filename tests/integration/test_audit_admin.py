"""``admin_action`` events from a real ``sqlbastion serve``: a reload through the admin endpoint, a
SIGHUP reload, and users-file changes found by a reload and by the next start, read back from the
SQLite sink. Names only: no verifier, password or token ever reaches the audit trail."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.users import METHODS, UsersFile, make_credentials

pytestmark = pytest.mark.integration

TOKEN_ENV = "SQLBASTION_TEST_AUDIT_ADMIN_TOKEN"
PG_PW_ENV = "SQLBASTION_TEST_AUDIT_ADMIN_PG_PW"
TOKEN = "audit-admin-token-7f3a"
PASSWORDS = {"alice": "alice-pw-1", "carol": "carol-pw-2", "bob": "bob-pw-3", "dave": "dave-pw-4"}

POLICY = """
[[persons]]
name = "alice"
roles = ["reader"]

[[roles]]
name = "reader"
grants = [{ actions = ["select"], objects = ["pg:postgres.public.*"] }]
"""


@pytest.fixture
def workdir(tmp_path: Path, postgres_server: ServerInfo) -> Iterator[tuple[Path, int]]:
    saved = {k: os.environ.get(k) for k in (TOKEN_ENV, PG_PW_ENV)}
    os.environ[TOKEN_ENV] = TOKEN
    os.environ[PG_PW_ENV] = postgres_server.service_password
    admin_port = free_port()
    (tmp_path / "policy.toml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "sqlbastion.toml").write_text(
        f"""
users_file = "users.toml"

[admin]
enabled = true
listen = "127.0.0.1:{admin_port}"
token = "env:{TOKEN_ENV}"

[policy]
files = ["policy.toml"]

[audit]
spool_dir = "spool"
sink_grace_s = 10.0

[[backends]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{free_port()}"
host = "{postgres_server.host}"
port = {postgres_server.port}
user = "{postgres_server.service_user}"
password = "env:{PG_PW_ENV}"
database = "postgres"
""",
        encoding="utf-8",
    )
    _users(tmp_path, "alice", "carol")
    try:
        yield tmp_path, admin_port
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _users(directory: Path, *names: str, password: Callable[[str], str] = PASSWORDS.__getitem__) -> None:
    users = UsersFile(path=directory / "users.toml")
    for name in names:
        users.persons[name] = make_credentials(name, password(name))
    users.save()


def _serve(directory: Path, admin_port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlbastion.cli", "serve", "-c", str(directory / "sqlbastion.toml")],
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "serve.log", "ab"),  # noqa: SIM115  # the child owns it
        cwd=directory,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not start: " + (directory / "serve.log").read_text()[-2000:])


def _reload(admin_port: int, token: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/-/reload", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def _admin_events(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute("SELECT event FROM audit_events WHERE kind = 'admin_action' ORDER BY ts").fetchall()
        except sqlite3.OperationalError:  # the sink has not created its table yet
            return []
    return [json.loads(r[0]) for r in rows]


def _wait_for(db: Path, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = _admin_events(db)
        if predicate(events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"{what} not in the SQLite sink: {_admin_events(db)}")


def test_reloads_and_users_changes_are_admin_action_events(workdir: tuple[Path, int]) -> None:
    directory, admin_port = workdir
    db = directory / "audit.db"
    proc = _serve(directory, admin_port)
    try:
        # A wrong token is refused before anything changes, and leaves no admin action.
        assert _reload(admin_port, "not-the-token") == 401
        assert _reload(admin_port, TOKEN) == 200
        _wait_for(db, lambda ev: any(e["details"]["via"] == "admin_endpoint" for e in ev), "the endpoint reload")

        # The users file changes: bob added, carol removed, alice's password (so her verifiers) changed.
        _users(directory, "alice", "bob", password=lambda n: PASSWORDS[n] + "-new")
        proc.send_signal(signal.SIGHUP)
        _wait_for(db, lambda ev: any(e["details"]["action"] == "users_changed" for e in ev), "users_changed")
    finally:
        _stop(proc)

    # Changed while sqlbastion was stopped: found at the next start.
    users = UsersFile.load(directory / "users.toml")
    users.persons["dave"] = make_credentials("dave", PASSWORDS["dave"])
    users.save()
    proc = _serve(directory, admin_port)
    _stop(proc)
    events = _admin_events(db)

    endpoint = [e for e in events if e["details"]["via"] == "admin_endpoint"]
    assert len(endpoint) == 1
    (reload_event,) = endpoint
    assert reload_event["details"]["action"] == "reload"
    assert reload_event["details"]["result"] == "ok"
    assert reload_event["details"]["bearer_token"] is True
    assert reload_event["client_address"].startswith("127.0.0.1:")
    assert reload_event["details"]["actor"].startswith("127.0.0.1:")
    assert "bearer token" in reload_event["details"]["actor"]

    sighup = [e for e in events if e["details"]["via"] == "sighup"]
    assert {e["details"]["action"] for e in sighup} == {"reload", "users_changed"}
    (changed,) = [e for e in sighup if e["details"]["action"] == "users_changed"]
    assert changed["details"]["added"] == ["bob"]
    assert changed["details"]["removed"] == ["carol"]
    assert changed["details"]["verifier_changed"] == ["alice"]
    assert changed["details"]["target"].endswith("users.toml")
    assert next(e for e in sighup if e["details"]["action"] == "reload")["details"]["result"] == "ok"

    at_start = [e for e in events if e["details"]["via"] == "start"]
    assert len(at_start) == 1
    assert at_start[0]["details"]["action"] == "users_changed"
    assert at_start[0]["details"]["added"] == ["dave"]
    assert at_start[0]["details"]["removed"] == at_start[0]["details"]["verifier_changed"] == []

    # Names only: no verifier, password or the admin token anywhere in the trail.
    persons = UsersFile.load(directory / "users.toml").persons
    verifiers = [v for name in ("alice", "bob", "dave") for v in (getattr(persons[name], m) for m in METHODS) if v]
    with sqlite3.connect(db) as conn:
        text = "\n".join(r[0] for r in conn.execute("SELECT event FROM audit_events"))
    assert verifiers
    for secret in [*verifiers, TOKEN, *PASSWORDS.values()]:
        assert secret not in text
