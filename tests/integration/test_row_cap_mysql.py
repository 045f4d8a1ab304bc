"""The per-person row cap (docs/policy.md, ``max_rows``) through the MySQL proxy, end to end.

The proxy runs as ``serve`` composes it (the policy store over a policy file,
the sample bank in MariaDB, audit to a JSON-lines sink). A person with
``max_rows = 5`` receives the first five rows of a ten-row result, then error
1227 in place of the sixth, and the connection stays usable; a result of
exactly five rows passes; a person whose role holds ``export`` gets every row.
Clients: pymysql (text protocol), mysql-connector-python's pure-Python
prepared cursor (binary protocol), the ``mariadb`` CLI, and a packet-level
client reading a server-side cursor with COM_STMT_FETCH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pymysql.cursors
import pytest
from tests.integration.mysql_support import RawClient

from sqlbastion.config import loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.proxy.mysql.constants import ServerStatus
from sqlbastion.proxy.mysql.packets import ErrPacket
from sqlbastion.proxy.server import build_services
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

PASSWORDS = {"capped": "capped-pass-1", "exporter": "exporter-pass-1"}
MY_ENV = "SQLBASTION_TEST_ROWCAP_MY_PW"
CAP = 5
TEN = "SELECT id, city FROM customers ORDER BY id LIMIT 10"
FIVE = "SELECT id, city FROM customers ORDER BY id LIMIT 5"
CAP_TEXT = "sqlbastion: result exceeds the row cap of 5 rows for this person"

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
grants = [{{ actions = ["select"], objects = ["my:bank.*"] }}]

[[roles]]
name = "exporter"
grants = [{{ actions = ["export"], objects = ["my:bank.*"] }}]

[[classifications]]
objects = ["*:bank.customers.mobile"]
type = "mobile"
level = 3

[[classifications]]
objects = ["*:bank.customers.id_card"]
type = "id_card"
level = 4
"""


@dataclass
class Running:
    directory: Path
    port: int

    def pymysql(self, person: str, **kw: Any) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=person,
            password=PASSWORDS[person],
            database="bank",
            connect_timeout=10,
            read_timeout=20,
            autocommit=True,
            **kw,
        )

    def connector(self, person: str) -> Any:
        return mysql.connector.connect(
            host="127.0.0.1",
            port=self.port,
            user=person,
            password=PASSWORDS[person],
            database="bank",
            use_pure=True,
            ssl_disabled=True,
            connection_timeout=20,  # also the socket timeout: a hang fails the test instead of stalling it
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
    sample_bank: LoadedBank, mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("row-cap-mysql")
    (directory / "policy.toml").write_text(POLICY, encoding="utf-8")
    users = UsersFile(path=directory / "users.toml")
    for name, pw in PASSWORDS.items():
        users.persons[name] = make_credentials(name, pw, ("mysql_native", "caching_sha2"))
    users.save()
    saved = os.environ.get(MY_ENV)
    os.environ[MY_ENV] = mariadb_server.service_password
    port = free_port()
    text = (
        'users_file = "users.toml"\n[admin]\nenabled = false\n[policy]\nfiles = ["policy.toml"]\n'
        f'[audit]\nspool_dir = "{directory / "spool"}"\n'
        f'[[audit.sinks]]\ntype = "jsonl"\npath = "{directory / "audit.jsonl"}"\n'
        f'[[backends]]\nname = "my"\nprotocol = "mysql"\nlisten = "127.0.0.1:{port}"\n'
        f'host = "{mariadb_server.host}"\nport = {mariadb_server.port}\nuser = "{mariadb_server.service_user}"\n'
        f'password = "env:{MY_ENV}"\ndatabase = "bank"\n'
    )
    settings = loads(text, source=str(directory / "sqlbastion.toml"))
    thread = ProxyThread(settings, services=build_services(settings))
    thread.start()
    try:
        yield Running(directory, port)
    finally:
        thread.stop()
        if saved is None:
            os.environ.pop(MY_ENV, None)
        else:
            os.environ[MY_ENV] = saved


def _ref(message: str) -> str:
    assert CAP_TEXT in message, message
    assert "exporting larger results needs the export action" in message
    return message.rsplit("Audit ref ", 1)[1].rstrip(".")


def _check_capped_event(running: Running, ref: str, rows: int = CAP) -> None:
    event = running.event(ref)
    assert event["rows"] == rows
    assert event["backend_error"] == "row cap exceeded"


# -- pymysql: the text protocol -------------------------------------------------------


def test_text_protocol_sends_the_cap_then_the_error(running: Running) -> None:
    with running.pymysql("capped") as conn:
        cur = conn.cursor(pymysql.cursors.SSCursor)  # unbuffered: the rows before the error are seen
        cur.execute(TEN)
        got: list[tuple[Any, ...]] = []
        with pytest.raises(pymysql.err.MySQLError) as info:
            got.extend(cur)
        assert len(got) == CAP
        assert [r[0] for r in got] == sorted(r[0] for r in got)
        assert info.value.args[0] == 1227
        _check_capped_event(running, _ref(str(info.value.args[1])))
        cur.close()
        # Usable afterwards, and a result of exactly the cap passes.
        with conn.cursor() as cur2:
            cur2.execute(FIVE)
            assert len(cur2.fetchall()) == CAP
            cur2.execute("SELECT 1")
            assert cur2.fetchone() == (1,)


def test_capped_rows_are_masked_as_usual(running: Running, sample_bank: LoadedBank) -> None:
    canary = sample_bank.canary
    with running.pymysql("capped") as conn:
        cur = conn.cursor(pymysql.cursors.SSCursor)
        cur.execute("SELECT id, mobile, id_card FROM customers ORDER BY id LIMIT 10")
        got: list[tuple[Any, ...]] = []
        with pytest.raises(pymysql.err.MySQLError) as info:
            got.extend(cur)
        assert info.value.args[0] == 1227
        assert len(got) == CAP
        assert got[0][0] == canary.customer_id
        assert got[0][1] != canary.mobile
        assert got[0][2] != canary.id_card
        cur.close()
    # Prepared (binary rows, the pure-Python client: held, then the error alone).
    conn2 = running.connector("capped")
    try:
        pcur = conn2.cursor(prepared=True)
        pcur.execute("SELECT id, mobile FROM customers WHERE id <= ? ORDER BY id", (5,))
        rows = pcur.fetchall()
        assert len(rows) == CAP
        assert rows[0][1] != canary.mobile
        pcur.execute("SELECT id, mobile FROM customers WHERE id <= ? ORDER BY id", (6,))
        with pytest.raises(mysql.connector.Error) as err:
            pcur.fetchall()
        assert err.value.errno == 1227
        pcur.close()
    finally:
        conn2.close()


def test_buffered_text_result_over_the_cap_is_an_error(running: Running) -> None:
    with running.pymysql("capped") as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SELECT id FROM customers ORDER BY id LIMIT 7")
        assert info.value.args[0] == 1227
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)


def test_transaction_stays_open_after_the_cap(running: Running) -> None:
    with running.pymysql("capped") as conn, conn.cursor() as cur:
        cur.execute("BEGIN")
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute(TEN)
        assert info.value.args[0] == 1227
        cur.execute("SELECT @@in_transaction")
        assert cur.fetchone() == (1,)
        cur.execute("COMMIT")
        cur.execute("SELECT @@in_transaction")
        assert cur.fetchone() == (0,)


def test_multi_statement_counts_every_result_and_drops_the_rest(running: Running) -> None:
    with (
        running.pymysql("capped", client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT id FROM customers ORDER BY id LIMIT 3; SELECT id FROM customers ORDER BY id LIMIT 3")
        assert len(cur.fetchall()) == 3
        # The second result passes the cap of 5 over the whole message; a third would be dropped unseen.
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.nextset()
        assert info.value.args[0] == 1227
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)


def test_exporter_gets_every_row(running: Running) -> None:
    with running.pymysql("exporter") as conn, conn.cursor() as cur:
        cur.execute(TEN)
        assert len(cur.fetchall()) == 10
        cur.execute("SELECT id FROM customers ORDER BY id LIMIT 50")
        assert len(cur.fetchall()) == 50


# -- mysql-connector-python, pure Python, prepared: the binary protocol -----------------


def test_connector_prepared_fetchall_gets_the_error_not_a_hang(running: Running) -> None:
    conn = running.connector("capped")
    try:
        cur = conn.cursor(prepared=True)
        started = time.monotonic()
        cur.execute(TEN)
        with pytest.raises(mysql.connector.Error) as info:
            cur.fetchall()
        assert time.monotonic() - started < 15
        assert info.value.errno == 1227
        assert info.value.sqlstate == "42000"
        # The rows were held back: none of the capped result reached the client (docs/mysql.md).
        _check_capped_event(running, _ref(str(info.value.msg)), rows=0)
        cur.close()
        # The connection is usable; a result of exactly the cap passes with every row.
        cur = conn.cursor(prepared=True)
        cur.execute(FIVE)
        assert [r[0] for r in cur.fetchall()] == [r[0] for r in sorted(_first_rows(running))]
        cur.execute("SELECT id FROM customers WHERE id = ?", (1,))
        assert cur.fetchall() == [(1,)]
        cur.close()
    finally:
        conn.close()


def test_connector_prepared_fetchone_gets_the_error(running: Running) -> None:
    conn = running.connector("capped")
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(TEN)
        with pytest.raises(mysql.connector.Error) as info:
            _fetch_until_none(cur)
        assert info.value.errno == 1227
        cur.close()
        cur = conn.cursor()
        cur.execute("SELECT 4")
        assert cur.fetchall() == [(4,)]
    finally:
        conn.close()


def test_connector_text_protocol_gets_the_cap_then_the_error(running: Running) -> None:
    # The pure-Python text reader reads an ERR after rows correctly: rows are not held back.
    conn = running.connector("capped")
    try:
        conn.cmd_query(TEN)
        rows, error = _rows_then_error(conn)
        assert rows == CAP
        assert error is not None
        assert error.errno == 1227
        cur = conn.cursor()
        cur.execute(FIVE)
        assert len(cur.fetchall()) == CAP
        cur.execute(TEN)
        with pytest.raises(mysql.connector.Error) as info:
            cur.fetchall()
        assert info.value.errno == 1227
        cur.close()
    finally:
        conn.close()


def _rows_then_error(conn: Any) -> tuple[int, Any]:
    """Rows read one by one at the connection level (the cursors read one row ahead), then the error."""
    n = 0
    try:
        while conn.get_row()[0] is not None:
            n += 1
    except mysql.connector.Error as exc:
        return n, exc
    return n, None


def test_connector_prepared_exporter_gets_every_row(running: Running) -> None:
    conn = running.connector("exporter")
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(TEN)
        assert len(cur.fetchall()) == 10
    finally:
        conn.close()


def _fetch_until_none(cur: Any) -> None:
    while cur.fetchone() is not None:
        pass


def _first_rows(running: Running) -> list[tuple[Any, ...]]:
    with running.pymysql("exporter") as conn, conn.cursor() as cur:
        cur.execute(FIVE)
        return list(cur.fetchall())


# -- mysql-connector-python's C extension (libmysqlclient): rows stream, then the error ------

# In a process of its own: the C extension holds the GIL in some calls (test_mysql_tools.py).
C_EXTENSION_CAPPED = """
import json, sys
import mysql.connector
port, user, password, sql = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
conn = mysql.connector.connect(
    host="127.0.0.1", port=port, user=user, password=password, database="bank",
    use_pure=False, ssl_disabled=True, connection_timeout=20,
)
out = {}
# Row by row at the connection level: the cursors read one row ahead of what they return.
conn.cmd_query(sql)
rows = 0
try:
    while conn.get_row()[0] is not None:
        rows += 1
    out["False"] = [rows, None, None]
except mysql.connector.Error as exc:
    out["False"] = [rows, exc.errno, exc.msg]
stmt = conn.cmd_stmt_prepare(sql.encode())
conn.cmd_stmt_execute(stmt)
rows = 0
try:
    while conn.get_row(binary=True, prep_stmt=stmt)[0] is not None:
        rows += 1
    out["True"] = [rows, None, None]
except mysql.connector.Error as exc:
    out["True"] = [rows, exc.errno, exc.msg]
cur = conn.cursor()
cur.execute("SELECT 7")
out["after"] = cur.fetchall()[0][0]
conn.close()
print(json.dumps(out))
"""


def test_connector_c_extension_gets_the_cap_then_the_error(running: Running) -> None:
    done = subprocess.run(
        [sys.executable, "-c", C_EXTENSION_CAPPED, str(running.port), "capped", PASSWORDS["capped"], TEN],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for protocol in ("False", "True"):  # text, then prepared (binary rows)
        rows, _, message = out[protocol]
        assert rows == CAP, protocol
        _check_capped_event(running, _ref(message))
    assert out["False"][1] == 1227
    # The C extension turns any error of mysql_stmt_fetch into an InterfaceError without the
    # errno (as it does when a real server fails a statement mid-result); the text stays.
    assert out["True"][1] in (1227, -1, None)
    assert out["after"] == 7


# -- a packet-level client: binary rows streamed, and a server-side cursor -----------------


def test_binary_rows_stream_then_the_error(running: Running) -> None:
    c = RawClient(running.port, database="bank", user="capped", password=PASSWORDS["capped"])
    try:
        stmt = c.prepare(TEN)
        sid = stmt.statement_id.to_bytes(4, "little")
        first = c.command(b"\x17" + sid + b"\x00" + (1).to_bytes(4, "little"))
        with pytest.raises(RuntimeError, match="row cap of 5 rows"):
            c.read_result(first, binary=True)
        assert c.command(b"\x0e").payload[0] == 0  # COM_PING: the connection is in step
    finally:
        c.close()


def test_cursor_fetches_count_against_one_cap(running: Running) -> None:
    c = RawClient(running.port, database="bank", user="capped", password=PASSWORDS["capped"])
    try:
        stmt = c.prepare(TEN)
        sid = stmt.statement_id.to_bytes(4, "little")
        # COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH of 3 rows at a time.
        first = c.command(b"\x17" + sid + b"\x01" + (1).to_bytes(4, "little"))
        _, _, status = c.read_result(first, binary=True)
        assert status & ServerStatus.CURSOR_EXISTS
        got = 0
        err = None
        for _ in range(4):
            c.send(0, b"\x1c" + sid + (3).to_bytes(4, "little"))
            while True:
                p = c.read()
                if p.payload[0] == 0xFF:
                    err = ErrPacket.decode(p.payload)
                    break
                if p.payload[0] == 0xFE and len(p.payload) < 9:
                    break
                got += 1
            if err is not None:
                break
        assert got == CAP
        assert err is not None
        assert err.errno == 1227
        # Each fetch is a statement event of its own: the capped one sent the two rows left.
        _check_capped_event(running, _ref(err.message), rows=2)
        assert c.command(b"\x0e").payload[0] == 0
    finally:
        c.close()


# -- the mariadb CLI ---------------------------------------------------------------


def test_cli_prints_the_cap_then_the_error(running: Running) -> None:
    cli = shutil.which("mariadb") or shutil.which("mysql")
    assert cli, "the mariadb client is installed by scripts/install-deps.sh (mariadb-client)"
    base = [
        cli,
        "--no-defaults",
        "-h127.0.0.1",
        f"-P{running.port}",
        "-ucapped",
        f"-p{PASSWORDS['capped']}",
        "--skip-ssl",
        "-N",
        "-B",
        "bank",
    ]
    # --quick reads row by row (mysql_use_result): the five rows are printed, then the error.
    done = subprocess.run([*base, "--quick", "-e", TEN], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert len(done.stdout.strip().splitlines()) == CAP
    assert "ERROR 1227 (42000)" in done.stderr
    assert CAP_TEXT in done.stderr
    # Exactly the cap passes; with --force the CLI goes on after the error on the same connection.
    done = subprocess.run(
        [*base, "--force"],
        input=f"{TEN};\n{FIVE};\nSELECT 'after';\n",
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == CAP + 1, (done.stdout, done.stderr)
    assert lines[-1] == "after"
    assert "ERROR 1227 (42000) at line 1" in done.stderr
