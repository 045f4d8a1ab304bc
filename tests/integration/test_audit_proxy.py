"""The audit trail through both real proxies: one statement event per statement sent, in every
live sink; nothing secret in any audit file; kill -9 of ``sqlbastion serve`` under load loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pymysql
import pytest
from tests.integration.test_audit_sinks import Rsyslog

from sqlbastion.config import load
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

PERSON = "auditee"
PASSWORD = "Auditee-Pw-9931"
MYSQL_PW_ENV = "SQLBASTION_TEST_AUDIT_MYSQL_PW"
PG_PW_ENV = "SQLBASTION_TEST_AUDIT_PG_PW"
CANARY = "Canary-Literal-7731"
PG_AUDIT_DSN_ENV = "SQLBASTION_TEST_AUDIT_PG_DSN"


@dataclass
class Setup:
    directory: Path
    config: Path
    mysql_port: int
    pg_port: int
    mariadb: ServerInfo
    postgres: ServerInfo

    def mysql(self) -> pymysql.Connection[Any]:
        return pymysql.connect(host="127.0.0.1", port=self.mysql_port, user=PERSON, password=PASSWORD, autocommit=True)

    def pg(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            f"host=127.0.0.1 port={self.pg_port} user={PERSON} password={PASSWORD} dbname=postgres sslmode=disable",
            autocommit=True,
            connect_timeout=10,
        )

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.directory / "audit.db")


_CREDENTIALS: list[object] = []


@pytest.fixture
def setup(tmp_path: Path, mariadb_server: ServerInfo, postgres_server: ServerInfo) -> Iterator[Setup]:
    saved = {k: os.environ.get(k) for k in (MYSQL_PW_ENV, PG_PW_ENV)}
    os.environ[MYSQL_PW_ENV] = mariadb_server.service_password
    os.environ[PG_PW_ENV] = postgres_server.service_password
    if not _CREDENTIALS:  # verifiers are slow to compute on purpose
        _CREDENTIALS.append(make_credentials(PERSON, PASSWORD, ("mysql_native", "scram_sha_256")))
    users = UsersFile(path=tmp_path / "users.toml")
    users.persons[PERSON] = _CREDENTIALS[0]  # type: ignore[assignment]  # the credentials made above
    users.save()
    mysql_port, pg_port = free_port(), free_port()
    config = tmp_path / "sqlbastion.toml"
    config.write_text(
        f"""
users_file = "users.toml"

[admin]
enabled = false

[policy]
allow_unchecked = true

[audit]
spool_dir = "spool"
fsync = "interval"
fsync_interval_ms = 20
sink_grace_s = 30.0

[[audit.sinks]]
type = "sqlite"
path = "audit.db"

[[audit.sinks]]
type = "jsonl"
path = "audit.jsonl"

[[backends]]
name = "core"
protocol = "mysql"
listen = "127.0.0.1:{mysql_port}"
host = "{mariadb_server.host}"
port = {mariadb_server.port}
user = "{mariadb_server.service_user}"
password = "env:{MYSQL_PW_ENV}"

[[backends]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{pg_port}"
host = "{postgres_server.host}"
port = {postgres_server.port}
user = "{postgres_server.service_user}"
password = "env:{PG_PW_ENV}"
database = "postgres"
""",
        encoding="utf-8",
    )
    yield Setup(tmp_path, config, mysql_port, pg_port, mariadb_server, postgres_server)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _probe_events(conn: sqlite3.Connection, tag: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT json_extract(event, '$.statement_text') FROM audit_events "
            "WHERE kind = 'statement' AND json_extract(event, '$.statement_text') LIKE ?",
            (f"%{tag}%",),
        )
    ]


def test_statement_events_equal_statements_sent_through_both_proxies(setup: Setup, tmp_path: Path) -> None:
    tag = "p" + uuid.uuid4().hex[:8]
    # Every live sink at once: SQLite and JSONL (in the fixture), PostgreSQL and rsyslog.
    rsyslog = Rsyslog(tmp_path / "rsyslog")
    rsyslog.start()
    pg_table = f"audit_{tag}"
    pg = setup.postgres
    os.environ[PG_AUDIT_DSN_ENV] = f"postgresql://{pg.admin_user}:{pg.admin_password}@{pg.host}:{pg.port}/postgres"
    with setup.config.open("a", encoding="utf-8") as f:
        f.write(
            f"""
[[audit.sinks]]
type = "postgres"
dsn = "env:{PG_AUDIT_DSN_ENV}"
table = "{pg_table}"

[[audit.sinks]]
type = "syslog"
address = "127.0.0.1:{rsyslog.port}"
"""
        )
    per_worker = 150
    sent = {"mysql": 0, "postgres": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def mysql_worker(w: int) -> None:
        try:
            with setup.mysql() as conn, conn.cursor() as cur:
                for i in range(per_worker):
                    cur.execute(f"SELECT {i} AS {tag}_m{w}_{i}")
                    with lock:
                        sent["mysql"] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    def pg_worker(w: int) -> None:
        try:
            with setup.pg() as conn:
                for i in range(per_worker):
                    conn.execute(f"SELECT {i} AS {tag}_p{w}_{i}").fetchall()
                    with lock:
                        sent["postgres"] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    settings = load(setup.config)
    assert [k.type for k in settings.audit.sinks] == ["sqlite", "jsonl", "postgres", "syslog"]
    with ProxyThread(settings):
        threads = [threading.Thread(target=mysql_worker, args=(w,)) for w in range(3)]
        threads += [threading.Thread(target=pg_worker, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        # Statements whose text or values must never reach the audit trail.
        with setup.mysql() as mconn, mconn.cursor() as cur:
            cur.execute(f"SELECT '{CANARY}' AS {tag}_canary_m")
            with pytest.raises(pymysql.err.MySQLError):
                cur.execute(f"SELECT * FROM no_such_db.t WHERE x = '{CANARY}' AND y = '{PASSWORD}'")
        with setup.pg() as pconn:
            pconn.execute(f"SELECT '{CANARY}' AS {tag}_canary_p").fetchall()
            with pytest.raises(psycopg.Error):
                pconn.execute(f"SELECT '{CANARY}'::int")
    assert not errors, errors
    assert sent == {"mysql": 3 * per_worker, "postgres": 3 * per_worker}

    db = setup.db()
    texts = _probe_events(db, f"{tag}_m")
    assert len(texts) == sent["mysql"]
    assert len(_probe_events(db, f"{tag}_p")) == sent["postgres"]
    assert all(t.startswith("SELECT ? AS ") for t in texts)
    jsonl = [json.loads(line) for line in (setup.directory / "audit.jsonl").read_text().splitlines()]
    jsonl_probes = [e for e in jsonl if e["kind"] == "statement" and tag in (e.get("statement_text") or "")]
    assert len(jsonl_probes) == 3 * per_worker * 2 + 2

    async def pg_count() -> int:
        conn = await asyncpg.connect(os.environ[PG_AUDIT_DSN_ENV])
        try:
            n = await conn.fetchval(
                f"SELECT count(DISTINCT event_id) FROM {pg_table} "  # a test table name
                "WHERE kind = 'statement' AND event->>'statement_text' LIKE $1",
                f"%{tag}%",
            )
            await conn.execute(f"DROP TABLE {pg_table}")
            return int(n)
        finally:
            await conn.close()

    assert asyncio.run(pg_count()) == 3 * per_worker * 2 + 2
    syslog_lines = [line for line in rsyslog.out.read_text(encoding="utf-8").splitlines() if tag in line]
    rsyslog.stop()
    syslog_ids = {re.search(r'event_id="([^"]+)"', line).group(1) for line in syslog_lines}  # type: ignore[union-attr]  # every message has one
    assert len(syslog_ids) == 3 * per_worker * 2 + 2
    kinds = {r[0] for r in db.execute("SELECT DISTINCT kind FROM audit_events")}
    assert {"statement", "connection_opened", "connection_closed", "auth_succeeded"} <= kinds
    failed = db.execute(
        "SELECT json_extract(event, '$.backend_error') FROM audit_events "
        "WHERE json_extract(event, '$.backend_error') IS NOT NULL"
    ).fetchall()
    assert failed
    assert all(CANARY not in (r[0] or "") for r in failed)

    # Nothing secret anywhere under the audit directory: spool, stores, keys.
    secrets = [CANARY, PASSWORD, setup.mariadb.service_password, setup.postgres.service_password]
    secrets += [setup.postgres.admin_password]  # in the PostgreSQL sink's DSN
    for path in setup.directory.rglob("*"):
        if (path.is_file() and path.suffix in (".log", ".db", ".jsonl", ".db-wal")) or path.name.startswith("seg-"):
            data = path.read_bytes()
            for s in secrets:
                assert s.encode() not in data, f"{s!r} found in {path}"


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def _serve(setup: Setup) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlbastion.cli", "serve", "-c", str(setup.config)],
        stdout=subprocess.DEVNULL,
        stderr=open(setup.directory / "serve.log", "ab"),  # noqa: SIM115  # the child owns it
        cwd=setup.directory,
    )
    _wait_port(setup.pg_port, 60)
    _wait_port(setup.mysql_port, 60)
    return proc


# The MySQL proxy writes a statement's final response packet to the client before it calls
# Session.finish (proxy/mysql/commands.py, ResponseRelay in _relay), so a kill landing between
# the two can lose the event of the statement answered last. The PostgreSQL proxy emits first.
# MySQL statements answered within this margin before the kill are therefore not held to it.
MYSQL_REPLY_BEFORE_EMIT_MARGIN_S = 0.25


def test_kill_9_of_serve_under_load_loses_no_answered_statement(setup: Setup) -> None:
    tag = "k" + uuid.uuid4().hex[:8]
    proc = _serve(setup)
    answered: list[tuple[str, str, float]] = []
    stop = threading.Event()

    def pg_client() -> None:
        i = 0
        try:
            with setup.pg() as conn:
                while not stop.is_set():
                    alias = f"{tag}_p_{threading.get_ident()}_{i}"
                    conn.execute(f"SELECT {i} AS {alias}").fetchall()
                    answered.append(("postgres", alias, time.monotonic()))
                    i += 1
        except Exception:  # the proxy was killed under the client: expected
            pass

    def mysql_client() -> None:
        i = 0
        try:
            with setup.mysql() as conn, conn.cursor() as cur:
                while not stop.is_set():
                    alias = f"{tag}_m_{threading.get_ident()}_{i}"
                    cur.execute(f"SELECT {i} AS {alias}")
                    answered.append(("mysql", alias, time.monotonic()))
                    i += 1
        except Exception:  # the proxy was killed under the client: expected
            pass

    threads = [threading.Thread(target=f) for f in (pg_client, mysql_client, pg_client, mysql_client)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(answered) < 800 and time.monotonic() < deadline:
        time.sleep(0.01)
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stop.set()
    for t in threads:
        t.join(20)
    acknowledged = list(answered)
    assert len(acknowledged) >= 800

    # Restart: the intake ring and the spool are recovered, the sinks catch up; then a clean stop.
    proc = _serve(setup)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0

    rows = (
        setup.db()
        .execute("SELECT json_extract(event, '$.statement_text') FROM audit_events WHERE kind = 'statement'")
        .fetchall()
    )
    recorded = {r[0].rsplit(" AS ", 1)[-1] for r in rows if r[0] and tag in r[0]}
    held = [
        alias
        for protocol, alias, at in acknowledged
        if protocol == "postgres" or at < killed_at - MYSQL_REPLY_BEFORE_EMIT_MARGIN_S
    ]
    lost = [a for a in held if a not in recorded]
    assert not lost, f"{len(lost)} of {len(held)} answered statements have no audit event: {lost[:5]}"
    assert sum(1 for p, _, _ in acknowledged if p == "postgres") > 100
    verify = subprocess.run(
        [str(Path(sys.executable).parent / "sqlbastion"), "audit", "verify", "-c", str(setup.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _with_audit(setup: Setup, audit: str) -> Path:
    """The fixture's configuration with its [audit] part (and sinks) replaced."""
    text = setup.config.read_text(encoding="utf-8")
    head, _, rest = text.partition("[audit]")
    backends = rest[rest.index("[[backends]]") :]
    config = setup.directory / f"audit-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(head + audit + "\n" + backends, encoding="utf-8")
    return config


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_full_spool_refuses_statements_or_counts_losses_through_the_proxy(setup: Setup, policy: str) -> None:
    # A required sink that never answers, so nothing is released, and a spool of a few kilobytes.
    config = _with_audit(
        setup,
        f"""[server]
drain_timeout_s = 1.0

[audit]
spool_dir = "spool-{policy}"
on_audit_failure = "{policy}"
max_spool_bytes = 40000
segment_bytes = 8000
sink_grace_s = 0.5

[[audit.sinks]]
type = "syslog"
address = "127.0.0.1:{free_port()}"
""",
    )
    from sqlbastion.observability.metrics import METRICS

    refusals_before = METRICS.audit_refusals._value.get()
    lost_before = METRICS.audit_lost._value.get()
    refused: list[str] = []
    answered = 0
    with ProxyThread(load(config)), setup.pg() as conn:
        for i in range(400):
            try:
                conn.execute(f"SELECT {i} AS filler_{i}").fetchall()
                answered += 1
            except psycopg.Error as exc:
                refused.append(str(exc))
                if len(refused) >= 3:
                    break
            time.sleep(0.002)  # let the writer see the spool fill up
    if policy == "fail_closed":
        assert refused, "the spool filled up but statements were still answered"
        assert "audit spool cannot record statements" in refused[0]
        assert METRICS.audit_refusals._value.get() - refusals_before >= 1
    else:
        assert not refused
        assert answered == 400
        assert METRICS.audit_lost._value.get() - lost_before > 0


def test_raw_statement_text_is_never_kept_for_sensitive_columns_under_a_real_policy(setup: Setup) -> None:
    """The backend opts into raw statement text; a statement that reads a classified column is
    still redacted, and its literal appears nowhere in the audit trail."""
    pg = setup.postgres

    async def prepare() -> None:
        conn = await asyncpg.connect(
            host=pg.host, port=pg.port, user=pg.admin_user, password=pg.admin_password, database="postgres"
        )
        try:
            await conn.execute("DROP TABLE IF EXISTS audit_sens")
            await conn.execute("CREATE TABLE audit_sens (id int PRIMARY KEY, city text, mobile text)")
            await conn.execute("INSERT INTO audit_sens VALUES (1, 'Shanghai', '13800138000')")
            await conn.execute(f"GRANT SELECT ON audit_sens TO {pg.service_user}")
        finally:
            await conn.close()

    asyncio.run(prepare())
    policy = setup.directory / "policy.toml"
    policy.write_text(
        f"""
[[persons]]
name = "{PERSON}"
roles = ["tester"]

[[roles]]
name = "tester"
duties = ["use"]
grants = [{{ actions = ["select"], objects = ["pg:postgres.public.*"] }}]
masks = {{ mobile = "mobile" }}
lookups = ["pg:postgres.public.audit_sens.mobile"]

[[classifications]]
objects = ["pg:postgres.public.audit_sens.mobile"]
type = "mobile"
level = 3
""",
        encoding="utf-8",
    )
    text = setup.config.read_text(encoding="utf-8")
    text = text.replace("[policy]\nallow_unchecked = true\n", '[policy]\nfiles = ["policy.toml"]\n', 1)
    text = text.replace('database = "postgres"\n', 'database = "postgres"\nraw_statements_in_audit = true\n', 1)
    setup.config.write_text(text, encoding="utf-8")
    secret_literal = "13800138000"
    plain_literal = "Shanghai"
    with ProxyThread(load(setup.config)), setup.pg() as conn:
        masked = conn.execute(f"SELECT mobile FROM audit_sens WHERE mobile = '{secret_literal}'").fetchall()
        plain = conn.execute(f"SELECT id FROM audit_sens WHERE city = '{plain_literal}'").fetchall()
    assert masked
    assert masked[0][0] != secret_literal  # masked for this role
    assert plain == [(1,)]
    rows = [
        json.loads(r[0])
        for r in setup.db().execute("SELECT event FROM audit_events WHERE kind = 'statement'").fetchall()
    ]
    sensitive = [e for e in rows if "mobile FROM audit_sens" in (e["statement_text"] or "")]
    raw = [e for e in rows if "FROM audit_sens WHERE city" in (e["statement_text"] or "")]
    assert len(sensitive) == 1
    assert sensitive[0]["sensitive_columns"]
    assert sensitive[0]["statement_text_mode"] == "redacted"
    assert sensitive[0]["statement_text"].endswith("WHERE mobile = ?")
    assert len(raw) == 1
    assert raw[0]["statement_text_mode"] == "raw"  # the backend opted in, and nothing sensitive was read
    assert plain_literal in raw[0]["statement_text"]
    for path in setup.directory.rglob("*"):
        if path.is_file() and (path.suffix in (".db", ".jsonl", ".db-wal") or path.name.startswith("seg-")):
            assert secret_literal.encode() not in path.read_bytes(), path
