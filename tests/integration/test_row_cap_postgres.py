"""The per-person row cap (docs/policy.md, ``max_rows``) through the PostgreSQL proxy, end to end.

The proxy runs as ``serve`` composes it (the policy engine over a policy file,
the audit pipeline with a JSON-lines sink) in front of the real server with
the sample bank. A person with ``max_rows = 5`` receives the first five rows
of a ten-row result, then ErrorResponse 42501 with the cap's text; the
connection stays usable; a result of exactly five rows passes; inside
BEGIN … the transaction fails (COMMIT answers ROLLBACK); a person whose role
holds ``export`` gets every row. Each capped statement's audit event records
the five rows sent and ``backend_error = "row cap exceeded"``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from tests.integration.postgres_support import pg_tool, run_tool

from sqlbastion.config import loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

PASSWORDS = {"capped": "capped-pass-1", "exporter": "exporter-pass-1"}
PG_ENV = "SQLBASTION_TEST_ROWCAP_PG_ONLY_PW"
CAP = 5
TEN = "SELECT id, name FROM customers ORDER BY id LIMIT 10"
FIVE = "SELECT id, name FROM customers ORDER BY id LIMIT 5"
CAP_TEXT = "result exceeds the row cap of 5 rows for this person"
EXPORT_TEXT = "exporting larger results needs the export action"

POLICY = f"""
[[persons]]
name = "capped"
roles = ["reader"]
max_rows = {CAP}

[[persons]]
name = "exporter"
roles = ["reader", "exporter"]
max_rows = {CAP}

[[roles]]
name = "reader"
grants = [{{ actions = ["select"], objects = ["pg:bank.public.*"] }}]
masks = {{ mobile = "mobile" }}

[[classifications]]
objects = ["pg:bank.public.customers.mobile"]
type = "mobile"
level = 3

[[roles]]
name = "exporter"
grants = [{{ actions = ["export"], objects = ["pg:bank.public.*"] }}]
"""


@dataclass
class Running:
    directory: Path
    port: int

    def dsn(self, person: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={person} password={PASSWORDS[person]} dbname=bank sslmode=disable"

    def pg(self, person: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(person), autocommit=True, connect_timeout=10)

    async def apg(self, person: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=person, password=PASSWORDS[person], database="bank", ssl=False
        )

    def event(self, ref: str) -> dict[str, Any]:
        """The audit event with this id, from the JSON-lines sink (waits for the pipeline)."""
        deadline = time.monotonic() + 20
        path = self.directory / "audit.jsonl"
        while time.monotonic() < deadline:
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    if ref in line:
                        event: dict[str, Any] = json.loads(line)
                        if event.get("event_id") == ref:
                            return event
            time.sleep(0.05)
        raise LookupError(f"no audit event {ref}")


@pytest.fixture(scope="module")
def running(
    sample_bank: LoadedBank, postgres_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("row-cap-pg")
    (directory / "policy.toml").write_text(POLICY, encoding="utf-8")
    users = UsersFile(path=directory / "users.toml")
    for name, pw in PASSWORDS.items():
        users.persons[name] = make_credentials(name, pw, ("scram_sha_256",))
    users.save()
    saved = os.environ.get(PG_ENV)
    os.environ[PG_ENV] = postgres_server.service_password
    port = free_port()
    text = (
        'users_file = "users.toml"\n[admin]\nenabled = false\n[policy]\nfiles = ["policy.toml"]\n'
        f'[audit]\nspool_dir = "{directory / "spool"}"\n'
        f'[[audit.sinks]]\ntype = "jsonl"\npath = "{directory / "audit.jsonl"}"\n'
        f'[[backends]]\nname = "pg"\nprotocol = "postgres"\nlisten = "127.0.0.1:{port}"\n'
        f'host = "{postgres_server.host}"\nport = {postgres_server.port}\nuser = "{postgres_server.service_user}"\n'
        f'password = "env:{PG_ENV}"\ndatabase = "bank"\n'
    )
    settings = loads(text, source=str(directory / "sqlbastion.toml"))
    from sqlbastion.proxy.server import build_services

    thread = ProxyThread(settings, services=build_services(settings))
    thread.start()
    try:
        yield Running(directory, port)
    finally:
        thread.stop()
        if saved is None:
            os.environ.pop(PG_ENV, None)
        else:
            os.environ[PG_ENV] = saved


def _ref(message: str) -> str:
    assert CAP_TEXT in message, message
    assert EXPORT_TEXT in message
    return message.rsplit("Audit ref ", 1)[1].strip().rstrip(".")


def _stream(conn: psycopg.Connection[tuple[object, ...]], sql: str, got: list[tuple[object, ...]]) -> None:
    for row in conn.cursor().stream(sql):
        got.append(row)


async def _cursor_ids(conn: asyncpg.Connection, sql: str, prefetch: int, got: list[int]) -> None:
    """Read ids through a cursor in a transaction (one Execute per ``prefetch`` rows)."""
    async with conn.transaction():
        async for record in conn.cursor(sql, prefetch=prefetch):
            got.append(record["id"])


def _status(conn: psycopg.Connection[tuple[object, ...]]) -> TransactionStatus:
    return conn.info.transaction_status


def _check_event(running: Running, ref: str, rows: int = CAP) -> None:
    event = running.event(ref)
    assert event["kind"] == "statement"
    assert event["person"] == "capped"
    assert event["rows"] == rows
    assert event["backend_error"] == "row cap exceeded"


def test_psycopg_simple_query_gets_the_cap_error_and_stays_usable(running: Running) -> None:
    with running.pg("capped") as conn:
        with pytest.raises(pg_errors.InsufficientPrivilege) as info:
            conn.execute(TEN)  # no parameters: the simple query protocol
        assert info.value.sqlstate == "42501"
        _check_event(running, _ref(str(info.value)))
        # The connection answers the next statement; exactly the cap passes.
        assert len(conn.execute(FIVE).fetchall()) == CAP
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_extended_rows_one_by_one_then_the_error(running: Running) -> None:
    with running.pg("capped") as conn:
        got: list[tuple[object, ...]] = []
        with pytest.raises(pg_errors.InsufficientPrivilege) as info:
            _stream(conn, TEN, got)  # extended protocol, single-row mode
        assert [r[0] for r in got] == [1, 2, 3, 4, 5]
        _check_event(running, _ref(str(info.value)))
        params = conn.execute("SELECT id FROM customers WHERE id <= %s ORDER BY id", (CAP,)).fetchall()
        assert len(params) == CAP


def test_psycopg_inside_a_transaction_commit_answers_rollback(running: Running) -> None:
    with running.pg("capped") as conn:
        conn.execute("BEGIN")
        assert conn.execute(FIVE).fetchall()
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute(TEN)
        # As after any failed statement: the client and the server both see a failed transaction.
        assert _status(conn) == TransactionStatus.INERROR
        with pytest.raises(pg_errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        cur = conn.execute("COMMIT")
        assert cur.statusmessage == "ROLLBACK"
        assert _status(conn) == TransactionStatus.IDLE
        assert conn.execute("SELECT 2").fetchone() == (2,)


async def test_asyncpg_binary_extended_and_portal_suspension(running: Running) -> None:
    conn = await running.apg("capped")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
            await conn.fetch(TEN)  # Parse/Bind/Execute, binary results
        _check_event(running, _ref(str(info.value)))
        assert len(await conn.fetch(FIVE)) == CAP
        # A cursor fetches one row per Execute (portal suspension): the cap counts across them,
        # and the sixth Execute gets the error in place of its row.
        got: list[int] = []
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
            await _cursor_ids(conn, TEN, 1, got)
        assert got == [1, 2, 3, 4, 5]
        _check_event(running, _ref(str(info.value)), rows=0)
        # Two rows per Execute: the third Execute sends row 5, then the error; asyncpg drops a
        # batch that ends in an error, so the application sees rows 1-4.
        got = []
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
            await _cursor_ids(conn, TEN, 2, got)
        assert got == [1, 2, 3, 4]
        _check_event(running, _ref(str(info.value)), rows=1)
        assert await conn.fetchval("SELECT 3") == 3
    finally:
        await conn.close()


def test_psql_prints_the_cap_error(running: Running) -> None:
    result = run_tool(
        [pg_tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", running.dsn("capped"), "-c", TEN],
        password=PASSWORDS["capped"],
    )
    assert result.returncode != 0
    assert CAP_TEXT in result.stderr
    ok = run_tool([pg_tool("psql"), "-X", "-A", "-t", running.dsn("capped"), "-c", FIVE], password="")
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.strip().splitlines()) == CAP


def test_masked_rows_are_capped_and_masked(running: Running, sample_bank: LoadedBank) -> None:
    with running.pg("capped") as conn:
        got: list[tuple[object, ...]] = []
        with pytest.raises(pg_errors.InsufficientPrivilege) as info:
            _stream(conn, "SELECT id, mobile FROM customers ORDER BY id LIMIT 10", got)
        assert [r[0] for r in got] == [1, 2, 3, 4, 5]
        assert got[0][1] != sample_bank.canary.mobile  # masked, as without the cap
        assert all(sample_bank.canary.mobile not in str(r) for r in got)
        _check_event(running, _ref(str(info.value)))
        # Simple query: the same cap, the same masking.
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute("SELECT id, mobile FROM customers ORDER BY id LIMIT 10")
        five = conn.execute("SELECT id, mobile FROM customers ORDER BY id LIMIT 5").fetchall()
        assert len(five) == CAP
        assert five[0][1] != sample_bank.canary.mobile


def test_exporter_gets_every_row(running: Running) -> None:
    with running.pg("exporter") as conn:
        assert len(conn.execute(TEN).fetchall()) == 10
        assert len(conn.execute("SELECT id FROM customers WHERE id <= %s", (10,)).fetchall()) == 10


async def test_exporter_gets_every_row_with_asyncpg(running: Running) -> None:
    conn = await running.apg("exporter")
    try:
        assert len(await conn.fetch(TEN)) == 10
    finally:
        await conn.close()
