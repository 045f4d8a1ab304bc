"""Every command path through sqlbastion against the real MariaDB, with pymysql and mysql-connector."""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import COMMAND
from tests.integration.mysql_support import (
    PASSWORD,
    PERSON,
    SHA2_PASSWORD,
    SHA2_PERSON,
    Proxy,
    prepare_test_database,
    run_proxy,
)

from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.proxy.mysql.packets import ColumnDefinition

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    prepare_test_database(mariadb_server)
    yield from run_proxy(mariadb_server, tmp_path_factory.mktemp("mysql-commands"))


def connector(proxy: Proxy, **kwargs: Any) -> Any:
    kwargs.setdefault("use_pure", True)
    return mysql.connector.connect(
        host="127.0.0.1",
        port=proxy.port,
        user=PERSON,
        password=PASSWORD,
        database="proxytest",
        connection_timeout=10,
        ssl_disabled=True,
        **kwargs,
    )


def test_blocked_statement_keeps_connection_usable(proxy: Proxy) -> None:
    with proxy.connect(database="proxytest") as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("DROP TABLE t")
        code, text = info.value.args
        assert code == 1227
        assert text.startswith("sqlbastion: statement blocked by rule TEST-DROP (DROP in tests): DROP. Audit ref ")
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone() == (3,)
    with proxy.admin() as admin, admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM proxytest.t")
        assert cur.fetchone() == (3,)  # the table is still there
    blocked = [e for e in proxy.audit.of_kind("statement") if e["decision"] == "block"]
    assert any(e["sql_text"] == "DROP TABLE t" for e in blocked)


def test_multi_statement_with_one_blocked_is_refused_whole(proxy: Proxy) -> None:
    flags = pymysql.constants.CLIENT.MULTI_STATEMENTS
    with proxy.connect(database="proxytest", client_flag=flags) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS multi_probe (x INT)")
        cur.execute("DELETE FROM multi_probe")
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("INSERT INTO multi_probe VALUES (1); DROP TABLE t; INSERT INTO multi_probe VALUES (2)")
        assert info.value.args[0] == 1227
        cur.execute("SELECT COUNT(*) FROM multi_probe")
        assert cur.fetchone() == (0,)  # not even the first statement ran
        cur.execute("SELECT 1; SELECT 2")  # allowed multi-statements still work, both results
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2,),)


def test_session_state_follows_use_and_sql_mode(proxy: Proxy) -> None:
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("USE proxytest")
        cur.execute("SELECT 'after use'")
        assert proxy.engine.contexts_for("'after use'")[-1].database == "proxytest"
        conn.select_db("mysql")  # COM_INIT_DB
        cur.execute("SELECT 'after init_db'")
        assert proxy.engine.contexts_for("'after init_db'")[-1].database == "mysql"
        cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'")
        cur.execute("SELECT 'after sql_mode'")
        ctx = proxy.engine.contexts_for("'after sql_mode'")[-1]
        assert ctx.ansi_quotes
        assert ctx.no_backslash_escapes
        cur.execute("SET sql_mode = ''")
        cur.execute("SET NAMES latin1")
        cur.execute("SELECT 'after names'")
        ctx = proxy.engine.contexts_for("'after names'")[-1]
        assert not ctx.ansi_quotes
        assert not ctx.no_backslash_escapes
        assert ctx.client_encoding == "latin1"
        cur.execute("BEGIN")
        cur.execute("SELECT 'in tx'")
        assert proxy.engine.contexts_for("'in tx'")[-1].in_transaction


def test_init_db_blocked(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        with pytest.raises(pymysql.err.OperationalError) as info:
            conn.select_db("forbidden_db")
        assert info.value.args[0] == 1227
        conn.ping()


def test_connect_with_blocked_database_is_refused(proxy: Proxy) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect(database="forbidden_db")
    assert info.value.args[0] == 1227


def test_ping_statistics_set_option(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        conn.ping(reconnect=False)
        conn._execute_command(COMMAND.COM_STATISTICS, b"")
        assert b"Uptime" in conn._read_packet().get_all_data()
        conn._execute_command(COMMAND.COM_SET_OPTION, struct.pack("<H", 0))  # MYSQL_OPTION_MULTI_STATEMENTS_ON
        packet = conn._read_packet()
        assert packet.is_eof_packet() or packet.is_ok_packet()
        with conn.cursor() as cur:
            cur.execute("SELECT 7")
            assert cur.fetchone() == (7,)


def test_field_list(proxy: Proxy) -> None:
    with proxy.connect(database="proxytest") as conn:
        conn._execute_command(COMMAND.COM_FIELD_LIST, b"t\x00")
        names = []
        while True:
            packet = conn._read_packet()
            if packet.is_eof_packet():
                break
            names.append(ColumnDefinition.decode(packet.get_all_data()).name.decode())
        assert names == ["id", "name", "secret", "n", "d"]
        conn._execute_command(COMMAND.COM_FIELD_LIST, b"forbidden\x00")
        with pytest.raises(pymysql.err.OperationalError) as info:
            conn._read_packet()
        assert info.value.args[0] == 1227
        conn.ping(reconnect=False)


def test_unknown_and_refused_commands(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        for command in (COMMAND.COM_DEBUG, COMMAND.COM_PROCESS_INFO, COMMAND.COM_BINLOG_DUMP, 0x42):
            conn._execute_command(command, b"")
            with pytest.raises(pymysql.err.OperationalError):
                conn._read_packet()
        conn.ping(reconnect=False)


def test_prepared_statements_connector(proxy: Proxy) -> None:
    conn = connector(proxy)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, name, n, d FROM t WHERE id >= ? ORDER BY id", (2,))
        rows = cur.fetchall()
        assert [r[0] for r in rows] == [2, 3]
        assert rows[0][2] == 20
        cur.execute("SELECT id, name, n, d FROM t WHERE id >= ? ORDER BY id", (3,))
        assert [r[0] for r in cur.fetchall()] == [3]
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute("DROP TABLE t WHERE 1 = ?", (1,))
        assert info.value.errno == 1227
        cur.close()
    finally:
        conn.close()
    executes = [e for e in proxy.audit.of_kind("statement") if "WHERE id >= ?" in str(e["sql_text"])]
    assert len({e["event_id"] for e in executes}) == len(executes) >= 3  # prepare + each execute, own ids


def test_prepared_statement_commands_raw(proxy: Proxy) -> None:
    conn = connector(proxy)
    try:
        sid = conn.cmd_stmt_prepare(b"SELECT name FROM t WHERE id = ?")["statement_id"]
        conn.cmd_stmt_reset(sid)
        conn.cmd_stmt_send_long_data(sid, 0, __import__("io").BytesIO(b"1"))
        conn.cmd_stmt_close(sid)
        with pytest.raises(mysql.connector.Error) as info:
            conn.cmd_stmt_reset(sid)
        assert info.value.errno == 1243
        conn.cmd_ping()
    finally:
        conn.close()


def test_statistics_and_reset_connector(proxy: Proxy) -> None:
    conn = connector(proxy)
    try:
        assert "Uptime" in conn.cmd_statistics()
        cur = conn.cursor()
        cur.execute("SET @v = 5")
        conn.cmd_reset_connection()
        cur.execute("SELECT @v, DATABASE()")
        assert cur.fetchone() == (None, "proxytest")
        conn.cmd_ping()
    finally:
        conn.close()


def test_change_user_reauthenticates_through_sqlbastion(proxy: Proxy) -> None:
    conn = connector(proxy)
    try:
        cur = conn.cursor()
        cur.execute("SET @left_behind = 'alice''s'")
        cur.close()
        conn.cmd_change_user(username=SHA2_PERSON, password=SHA2_PASSWORD, database="mysql")
        cur = conn.cursor()
        cur.execute("SELECT @left_behind, DATABASE(), 'as-shaw'")
        assert cur.fetchone() == (None, "mysql", "as-shaw")  # the backend session was reset
        cur.close()
        assert proxy.engine.contexts_for("'as-shaw'")[-1].person == SHA2_PERSON
        closed = [e for e in proxy.audit.of_kind("connection_closed") if e["reason"] == "change_user"]
        assert closed
        assert closed[-1]["person"] == PERSON
    finally:
        conn.close()


def test_change_user_failure_ends_connection(proxy: Proxy) -> None:
    before = proxy.backend_connection_count()
    conn = connector(proxy)
    with pytest.raises(mysql.connector.Error) as info:
        conn.cmd_change_user(username=SHA2_PERSON, password="wrong")
    assert info.value.errno == 1045
    with pytest.raises(mysql.connector.Error):
        conn.cmd_ping()
    for _ in range(50):
        if proxy.backend_connection_count() <= before:
            break
        time.sleep(0.1)
    assert proxy.backend_connection_count() <= before


def _own_backend_id(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def test_kill_only_own_sessions(proxy: Proxy, mariadb_server: ServerInfo) -> None:
    admin = proxy.admin()
    mine = proxy.connect()
    victim = proxy.connect()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            admin_id = int(cur.fetchone()[0])
        with mine.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute(f"KILL {admin_id}")
            assert info.value.args[0] == 1095
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("KILL USER bastion_admin")
            assert info.value.args[0] == 1227
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute("SELECT * FROM information_schema.PROCESSLIST")
            # Kill the person's other session by its client-facing id (what Ctrl-C in the CLI uses).
            cur.execute(f"KILL CONNECTION {victim.thread_id()}")
        with pytest.raises(pymysql.err.OperationalError), victim.cursor() as vcur:
            vcur.execute("SELECT 1")
        admin.ping(reconnect=False)  # the admin's connection was never touched
        mine.ping(reconnect=False)
        # COM_PROCESS_KILL with another account's id is refused too.
        mine._execute_command(COMMAND.COM_PROCESS_KILL, struct.pack("<I", admin_id))
        with pytest.raises(pymysql.err.OperationalError) as info:
            mine._read_packet()
        assert info.value.args[0] == 1095
    finally:
        for c in (admin, mine, victim):
            with contextlib.suppress(Exception):
                c.close()


def test_process_list_shows_only_own_sessions(proxy: Proxy) -> None:
    mine = proxy.connect()
    other_mine = proxy.connect()
    someone_else = proxy.connect(user=SHA2_PERSON, password=SHA2_PASSWORD)
    admin = proxy.admin()
    try:
        ids = {_own_backend_id(c) for c in (mine, other_mine)}
        with mine.cursor() as cur:
            cur.execute("SHOW FULL PROCESSLIST")
            rows = cur.fetchall()
        assert {int(r[0]) for r in rows} == ids
        assert any(r[7] == "SHOW FULL PROCESSLIST" for r in rows)  # Info of the running statement
        with someone_else.cursor() as cur:
            cur.execute("SHOW PROCESSLIST")
            assert {int(r[0]) for r in cur.fetchall()} == {_own_backend_id(someone_else)}
    finally:
        for c in (mine, other_mine, someone_else, admin):
            c.close()


def test_large_query_20mib(proxy: Proxy) -> None:
    payload = "x" * (20 << 20)
    with proxy.connect(max_allowed_packet=64 << 20) as conn, conn.cursor() as cur:
        cur.execute("SELECT LENGTH(%s), 'tail'", (payload,))
        assert cur.fetchone() == (20 << 20, "tail")
        cur.execute("SELECT REPEAT('y', 17 * 1024 * 1024)")  # a result row over 16 MiB
        row = cur.fetchone()
        assert row is not None
        assert len(row[0]) == 17 << 20


def test_oversize_statement_refused(proxy: Proxy) -> None:
    with proxy.connect(max_allowed_packet=64 << 20) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("SELECT %s", ("z" * (33 << 20),))
        assert info.value.args[0] == 1227
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
