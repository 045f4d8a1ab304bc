"""The per-person row cap (docs/policy.md, ``max_rows``) enforced by both proxies, end to end.

A person with ``max_rows = 5`` receives the first five rows of a ten-row result,
then the cap's error in place of the sixth, and the connection stays usable; a
result of exactly five rows passes; a person whose role holds ``export`` gets
every row. The statement's audit event records the rows sent and the cap.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from sqlbastion.config import loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

PASSWORDS = {"capped": "capped-pass-1", "exporter": "exporter-pass-1"}
MY_ENV = "SQLBASTION_TEST_ROWCAP_MY_PW"
PG_ENV = "SQLBASTION_TEST_ROWCAP_PG_PW"
CAP = 5
TEN = "SELECT id, name FROM customers ORDER BY id LIMIT 10"
FIVE = "SELECT id, name FROM customers ORDER BY id LIMIT 5"
CAP_TEXT = "result exceeds the row cap of 5 rows for this person"

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
grants = [{{ actions = ["select"], objects = ["my:bank.*", "pg:bank.public.*"] }}]

[[roles]]
name = "exporter"
grants = [{{ actions = ["export"], objects = ["my:bank.*", "pg:bank.public.*"] }}]
"""


@dataclass
class Running:
    directory: Path
    my_port: int
    pg_port: int

    def mysql(self, person: str) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.my_port,
            user=person,
            password=PASSWORDS[person],
            database="bank",
            connect_timeout=10,
            autocommit=True,
        )

    def pg(self, person: str, *, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.pg_port,
            user=person,
            password=PASSWORDS[person],
            dbname="bank",
            sslmode="disable",
            connect_timeout=10,
            autocommit=autocommit,
        )

    def event(self, ref: str) -> dict[str, Any]:
        """The audit event with this id, from the JSON-lines sink (waits for the pipeline)."""
        deadline = time.monotonic() + 15
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
    sample_bank: LoadedBank,
    mariadb_server: ServerInfo,
    postgres_server: ServerInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("row-cap")
    (directory / "policy.toml").write_text(POLICY, encoding="utf-8")
    users = UsersFile(path=directory / "users.toml")
    for name, pw in PASSWORDS.items():
        users.persons[name] = make_credentials(name, pw, ("mysql_native", "caching_sha2", "scram_sha_256"))
    users.save()
    saved = {k: os.environ.get(k) for k in (MY_ENV, PG_ENV)}
    os.environ[MY_ENV] = mariadb_server.service_password
    os.environ[PG_ENV] = postgres_server.service_password
    my_port, pg_port = free_port(), free_port()
    text = (
        'users_file = "users.toml"\n[admin]\nenabled = false\n[policy]\nfiles = ["policy.toml"]\n'
        f'[audit]\nspool_dir = "{directory / "spool"}"\n'
        f'[[audit.sinks]]\ntype = "jsonl"\npath = "{directory / "audit.jsonl"}"\n'
        f'[[backends]]\nname = "my"\nprotocol = "mysql"\nlisten = "127.0.0.1:{my_port}"\n'
        f'host = "{mariadb_server.host}"\nport = {mariadb_server.port}\nuser = "{mariadb_server.service_user}"\n'
        f'password = "env:{MY_ENV}"\ndatabase = "bank"\n'
        f'[[backends]]\nname = "pg"\nprotocol = "postgres"\nlisten = "127.0.0.1:{pg_port}"\n'
        f'host = "{postgres_server.host}"\nport = {postgres_server.port}\nuser = "{postgres_server.service_user}"\n'
        f'password = "env:{PG_ENV}"\ndatabase = "bank"\n'
    )
    settings = loads(text, source=str(directory / "sqlbastion.toml"))
    from sqlbastion.proxy.server import build_services

    thread = ProxyThread(settings, services=build_services(settings))
    thread.start()
    try:
        yield Running(directory, my_port, pg_port)
    finally:
        thread.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ref(message: str) -> str:
    assert CAP_TEXT in message, message
    assert "exporting larger results needs the export action" in message
    return message.rsplit("Audit ref ", 1)[1].rstrip(".")


def _check_event(running: Running, ref: str) -> None:
    event = running.event(ref)
    assert event["rows"] == CAP
    assert event["backend_error"] == "row cap exceeded"


# -- MySQL ----------------------------------------------------------------------------


def test_mysql_text_protocol_sends_the_cap_then_the_error(running: Running) -> None:
    with running.mysql("capped") as conn:
        cur = conn.cursor(pymysql.cursors.SSCursor)  # unbuffered: the rows before the error are seen
        cur.execute(TEN)
        got = []
        with pytest.raises(pymysql.err.MySQLError) as info:
            for row in cur:
                got.append(row)
        assert len(got) == CAP
        assert info.value.args[0] == 1227
        _check_event(running, _ref(str(info.value.args[1])))
        cur.close()
        # Usable afterwards, and a result of exactly the cap passes.
        with conn.cursor() as cur2:
            cur2.execute(FIVE)
            assert len(cur2.fetchall()) == CAP
            cur2.execute("SELECT 1")
            assert cur2.fetchone() == (1,)


def test_mysql_multi_result_remainder_is_discarded(running: Running) -> None:
    conn = pymysql.connect(
        host="127.0.0.1",
        port=running.my_port,
        user="capped",
        password=PASSWORDS["capped"],
        database="bank",
        connect_timeout=10,
        autocommit=True,
    )
    with conn, conn.cursor() as cur:
        # Over the cap inside one result: the error, and the connection answers the next statement.
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SELECT id FROM customers ORDER BY id LIMIT 7")
        assert CAP_TEXT in str(info.value.args[1])
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)


def test_mysql_exporter_gets_every_row(running: Running) -> None:
    with running.mysql("exporter") as conn, conn.cursor() as cur:
        cur.execute(TEN)
        assert len(cur.fetchall()) == 10
