"""End to end through the MySQL proxy: masked roles never receive a canary value, by any path.

Every statement below reads customer 1's canary values through another shape
(aliases, views, CTEs, set operations, functions, casts, executable comments,
comments that lexers read differently, user variables, dynamic SQL, errors
that echo values, character-set changes). Each runs through PyMySQL (text
protocol, several statements per message), MySQL Connector/Python prepared
statements (COM_STMT_EXECUTE, binary rows) and the mysql command-line client,
via a relay that records every byte the proxy sends. The masked person's bytes
must hold no form of any canary value; the clear person's bytes must hold them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT
from tests.integration.masking_support import (
    PASSWORDS,
    MaskingProxy,
    RecordingRelay,
    find_leaks,
    hidden_parts,
    run_masking_proxy,
)

from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.masking.functions import build_function, chinese_name, keep, keep_digits, mobile
from sqlbastion.proxy.mysql import auth
from sqlbastion.proxy.mysql.constants import Capability, ServerStatus
from sqlbastion.proxy.mysql.framing import Packet, PacketFramer, frame
from sqlbastion.proxy.mysql.packets import (
    ColumnDefinition,
    EofPacket,
    ErrPacket,
    HandshakeResponse,
    HandshakeV10,
    StmtPrepareOk,
)
from sqlbastion.proxy.mysql.rows import decode_binary_row

pytestmark = pytest.mark.integration

C = "customers"
ONE = "WHERE id = 1"
LEAK_FILE = f"/tmp/sqlbastion-masking-leak-{os.getpid()}-{time.time_ns()}.txt"  # must never be written

STATEMENTS: tuple[str, ...] = (
    f"SELECT name, id_card, mobile, email, address FROM {C} {ONE}",
    f"SELECT * FROM {C} {ONE}",
    f"SELECT c.* FROM {C} c WHERE c.id = 1",
    f"SELECT `mobile`, `c`.`name` FROM `bank`.`{C}` `c` WHERE `c`.`id` = 1",
    f"SELECT x FROM (SELECT mobile AS x FROM {C} {ONE}) d",
    f"WITH c AS (SELECT mobile m, name n FROM {C} {ONE}) SELECT m, n FROM c",
    f"WITH RECURSIVE r(m, k) AS (SELECT mobile, 1 FROM {C} {ONE} UNION ALL SELECT m, k + 1 FROM r WHERE k < 2) "
    "SELECT m FROM r",
    f"SELECT (SELECT mobile FROM {C} {ONE}) AS s",
    f"SELECT mobile FROM {C} {ONE} UNION SELECT 'x'",
    f"SELECT id_card FROM {C} {ONE} UNION ALL SELECT id_card FROM {C} {ONE}",
    "SELECT mobile, name FROM customers_v WHERE id = 1",
    f"SELECT CONCAT(mobile, ''), CONCAT_WS('-', name, id_card) FROM {C} {ONE}",
    f"SELECT SUBSTRING(mobile, 1, 11), MID(id_card, 1, 18), LEFT(name, 9), RIGHT(email, 40) FROM {C} {ONE}",
    f"SELECT HEX(mobile), TO_BASE64(name), MD5(id_card), SHA1(mobile), REVERSE(address) FROM {C} {ONE}",
    f"SELECT UPPER(email), LOWER(name), LPAD(mobile, 12, '0'), REPLACE(mobile, '1', '1') FROM {C} {ONE}",
    f"SELECT CAST(mobile AS BINARY), CONVERT(name USING utf8mb4), mobile COLLATE utf8mb4_bin FROM {C} {ONE}",
    f"SELECT JSON_OBJECT('m', mobile), JSON_ARRAY(name, id_card) FROM {C} {ONE}",
    f"SELECT GROUP_CONCAT(mobile), MIN(name), MAX(id_card), JSON_ARRAYAGG(email) FROM {C} {ONE}",
    f"SELECT CASE WHEN id = 1 THEN mobile END, COALESCE(email, ''), IFNULL(name, '') FROM {C} {ONE}",
    f"SELECT QUOTE(mobile), INSERT(mobile, 1, 0, ''), TRIM(name), ELT(1, id_card) FROM {C} {ONE}",
    f"/*!50000 SELECT mobile FROM {C} {ONE} */",
    f"SELECT /*! mobile, */ id FROM {C} {ONE}",
    f"/*M!100000 SELECT name FROM {C} {ONE} */",
    f"SELECT id/*!, mobile */ FROM {C} {ONE}",
    f"SELECT mobile/**/FROM/**/{C}/**/{ONE}",
    f"SELECT id -- \n, mobile FROM {C} {ONE}",
    f"SELECT id #\n, mobile FROM {C} {ONE}",
    f"SELECT @m := mobile FROM {C} {ONE}",
    "SELECT @m",
    f"SELECT mobile INTO @v FROM {C} {ONE}",
    "SELECT @v",
    f"SELECT UpdateXML(1, CONCAT(0x7e, mobile), 1) FROM {C} {ONE}",
    f"SELECT ExtractValue(1, CONCAT(0x7e, id_card)) FROM {C} {ONE}",
    f"SELECT CAST(name AS DECIMAL) FROM {C} {ONE}",
    f"SELECT COUNT(*), CONCAT(mobile, FLOOR(RAND(0) * 2)) AS x FROM {C} GROUP BY x",
    f"SELECT id FROM {C} {ONE} AND EXTRACTVALUE(1, CONCAT(0x7e, (SELECT mobile FROM {C} {ONE})))",
    f"SELECT id FROM {C} WHERE id = 1 AND 1 = UpdateXML(1, CONCAT(0x7e, id_card), 1)",
    f"SELECT id FROM {C} {ONE} AND EXP(~(SELECT * FROM (SELECT mobile FROM {C} {ONE}) x))",
    f"SELECT id FROM {C} WHERE mobile = '{{}}' OR 1 = (SELECT 1 FROM {C} WHERE id = 1 AND name LIKE '上%')",
    f"PREPARE s1 FROM 'SELECT mobile FROM {C} {ONE}'",
    "EXECUTE s1",
    f"SET @q = 'SELECT id_card FROM {C} {ONE}'",
    "PREPARE s2 FROM @q",
    "EXECUTE s2",
    f"CREATE TEMPORARY TABLE tmp_m AS SELECT mobile FROM {C} {ONE}",
    "SELECT * FROM tmp_m",
    "SELECT a.card_no, t.counterparty_card FROM accounts a JOIN transactions t ON t.account_id = a.id WHERE a.id = 1",
    f"SELECT mobile FROM {C} {ONE} INTO OUTFILE '{LEAK_FILE}'",
    "SET NAMES gbk",
    f"SELECT name, mobile, address FROM {C} {ONE}",
    "SET NAMES utf8mb4",
    "SET NAMES latin1",
    f"SELECT name, mobile, address, id_card FROM {C} {ONE}",
    "SET character_set_results = binary",
    f"SELECT name, mobile, address, id_card FROM {C} {ONE}",
    "SET NAMES utf8mb4",
    "SET sql_mode = 'ANSI_QUOTES'",
    f'SELECT "mobile" FROM "{C}" {ONE}',
    "SET sql_mode = DEFAULT",
    "SELECT * FROM customers JOIN accounts USING (id) WHERE id = 1",
    "SELECT * FROM customers NATURAL JOIN accounts WHERE id = 1",
    f"SELECT mobile AS id_card, id_card AS mobile, name AS city FROM {C} {ONE}",
    f"SELECT SQL_NO_CACHE HIGH_PRIORITY mobile FROM {C} {ONE}",
    f"SELECT mobile FROM {C} {ONE} LOCK IN SHARE MODE",
    f"SELECT mobile, id_card FROM {C} PROCEDURE ANALYSE()",
    f"SELECT * FROM (SELECT * FROM {C}) AS d WHERE d.id = 1",
    "SELECT c.*, a.* FROM customers c, accounts a WHERE c.id = 1 AND a.id = 1",
    f"SELECT mobile FROM {C} {ONE} UNION ALL SELECT mobile FROM {C} {ONE} ORDER BY 1",
    "BEGIN",
    f"DELETE FROM {C} {ONE} RETURNING mobile, name, id_card",
    f"INSERT INTO {C} (id, name, mobile) SELECT id + 1000000, name, mobile FROM {C} {ONE} RETURNING mobile, name",
    "ROLLBACK",
)

MULTI: tuple[str, ...] = (
    f"SELECT 1; SELECT mobile FROM {C} {ONE}",
    f"SELECT id FROM {C} {ONE}; SELECT name, id_card FROM {C} {ONE}",
)

PREPARED: tuple[str, ...] = (
    f"SELECT name, id_card, mobile, email, address, birth_date, id FROM {C} {ONE}",
    f"SELECT * FROM {C} {ONE}",
    f"SELECT card_no, balance, opened_at FROM accounts {ONE}",
    f"SELECT CONCAT(mobile, ''), HEX(id_card) FROM {C} {ONE}",
    "SELECT mobile, name FROM customers WHERE id = ?",
)


@pytest.fixture(scope="module")
def my_bank(sample_bank: LoadedBank, mariadb_server: ServerInfo) -> LoadedBank:
    s = mariadb_server
    conn = pymysql.connect(host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, database="bank")
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE OR REPLACE VIEW customers_v AS SELECT id, name, mobile, id_card FROM customers")
        conn.commit()
    finally:
        conn.close()
    return sample_bank


@pytest.fixture(scope="module")
def proxy(
    my_bank: LoadedBank, mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MaskingProxy]:
    yield from run_masking_proxy(tmp_path_factory.mktemp("masking-my"), mariadb=mariadb_server)


def _pymysql(port: int, person: str, **kwargs: Any) -> pymysql.Connection[Any]:
    return pymysql.connect(
        host="127.0.0.1",
        port=port,
        user=person,
        password=PASSWORDS[person],
        database="bank",
        connect_timeout=10,
        charset="utf8mb4",
        **kwargs,
    )


def _run_pymysql(port: int, person: str) -> None:
    conn = _pymysql(port, person, client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        with conn.cursor() as cur:
            for sql in STATEMENTS + MULTI:
                try:
                    cur.execute(sql)
                    cur.fetchall()
                    while cur.nextset():
                        cur.fetchall()
                except pymysql.MySQLError:
                    pass
    finally:
        conn.close()


def _run_connector(port: int, person: str) -> None:
    conn = mysql.connector.connect(
        host="127.0.0.1",
        port=port,
        user=person,
        password=PASSWORDS[person],
        database="bank",
        connection_timeout=10,
        ssl_disabled=True,
        use_pure=True,
    )
    try:
        for sql in PREPARED:
            try:
                cur = conn.cursor(prepared=True)
                params = (1,) if "?" in sql else ()
                for _ in range(2):  # executed twice: the prepared statement is reused
                    cur.execute(sql, params)
                    cur.fetchall()
                cur.close()
            except mysql.connector.Error:
                pass
    finally:
        conn.close()


def _run_cli(port: int, person: str, directory: Path) -> str:
    script = directory / f"statements-{person}.sql"
    script.write_text(";\n".join(STATEMENTS + MULTI) + ";\n", encoding="utf-8")
    env = dict(os.environ, MYSQL_PWD=PASSWORDS[person])
    with script.open("rb") as stdin:
        out = subprocess.run(
            [
                "mysql",
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-P",
                str(port),
                "-u",
                person,
                "--force",
                "--skip-ssl",
                "--default-character-set=utf8mb4",
                "bank",
            ],
            stdin=stdin,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    return out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")


def _all_paths(proxy: MaskingProxy, person: str, directory: Path) -> tuple[bytes, str]:
    relay = RecordingRelay(proxy.ports["my"])
    try:
        _run_pymysql(relay.port, person)
        _run_connector(relay.port, person)
        printed = _run_cli(relay.port, person, directory)
        return relay.received(), printed
    finally:
        relay.close()


def test_masked_person_receives_no_canary_by_any_path(proxy: MaskingProxy, my_bank: LoadedBank, tmp_path: Path) -> None:
    wire, printed = _all_paths(proxy, "dev", tmp_path)
    assert len(wire) > 10_000, "the statements produced traffic"
    values = my_bank.canary.sensitive_values() + hidden_parts(my_bank.canary)
    assert find_leaks(wire, values) == []
    assert find_leaks(printed.encode(), values) == []
    canary = my_bank.canary
    for masked in (mobile(canary.mobile), keep(canary.id_card, 6, 4), chinese_name(canary.name)):
        assert masked.encode() in wire, masked
    assert not Path(LEAK_FILE).exists()


def test_clear_person_sees_the_true_values(proxy: MaskingProxy, my_bank: LoadedBank, tmp_path: Path) -> None:
    wire, _ = _all_paths(proxy, "dba", tmp_path)
    canary = my_bank.canary
    leaks = find_leaks(wire, canary.sensitive_values())
    for form in ("as utf-8", "as HEX", "as MD5", "as reversed"):
        assert any(form.lower() in leak.lower() for leak in leaks), form
    conn = _pymysql(proxy.ports["my"], "dba")
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT name, id_card, mobile, email, address FROM {C} {ONE}")
            row = cur.fetchone()
    finally:
        conn.close()
    assert row == (canary.name, canary.id_card, canary.mobile, canary.email, canary.address)


def test_text_and_binary_rows_show_their_mask(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    canary = my_bank.canary
    expected = (chinese_name(canary.name), keep(canary.id_card, 6, 4), mobile(canary.mobile), canary.city)
    sql = f"SELECT name, id_card, mobile, city FROM {C} {ONE}"
    conn = _pymysql(proxy.ports["my"], "dev")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            assert cur.fetchone() == expected
    finally:
        conn.close()
    mc = mysql.connector.connect(
        host="127.0.0.1",
        port=proxy.ports["my"],
        user="dev",
        password=PASSWORDS["dev"],
        database="bank",
        ssl_disabled=True,
        use_pure=True,
    )
    try:
        cur = mc.cursor(prepared=True)
        cur.execute(sql)
        row = cur.fetchone()
        assert row is not None
        assert tuple(v.decode() if isinstance(v, bytes | bytearray) else v for v in row) == expected
        cur.execute(f"SELECT card_no, id FROM accounts {ONE}")
        card = cur.fetchone()
        assert isinstance(card, tuple)
        assert card[1] == 1
        assert card[0] in (keep_digits(canary.card_no, 6, 4), keep_digits(canary.card_no, 6, 4).encode())
        cur.close()
    finally:
        mc.close()


def test_keyed_functions_are_consistent_across_sessions_and_protocols(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    seen = []
    for _ in range(2):
        conn = _pymysql(proxy.ports["my"], "analyst")
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT mobile, id_card FROM {C} {ONE}")
                seen.append(cur.fetchone())
        finally:
            conn.close()
    assert seen[0] == seen[1]
    assert seen[0] is not None
    token, id_card = seen[0]
    assert len(token) == 16
    assert token != my_bank.canary.mobile
    assert id_card is None


def test_numbers_and_dates_keep_their_types_in_text_and_binary_rows(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    conn = _pymysql(proxy.ports["my"], "dba")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT balance FROM accounts WHERE id = 1")
            clear = cur.fetchone()
    finally:
        conn.close()
    assert clear is not None
    balance = clear[0]
    assert isinstance(balance, Decimal)
    expected = (build_function("band").decimal(balance), date(my_bank.canary.birth_date.year, 1, 1))
    accounts = "SELECT balance FROM accounts WHERE id = 1"
    customers = "SELECT birth_date FROM customers WHERE id = 1"
    conn = _pymysql(proxy.ports["my"], "dev")
    try:
        with conn.cursor() as cur:
            cur.execute(accounts)
            a = cur.fetchone()
            cur.execute(customers)
            c = cur.fetchone()
    finally:
        conn.close()
    assert a is not None
    assert c is not None
    assert (a[0], c[0]) == expected
    mc = mysql.connector.connect(
        host="127.0.0.1",
        port=proxy.ports["my"],
        user="dev",
        password=PASSWORDS["dev"],
        database="bank",
        ssl_disabled=True,
        use_pure=True,
    )
    try:
        cur = mc.cursor(prepared=True)
        cur.execute(accounts)
        a = cur.fetchone()
        cur.execute(customers)
        c = cur.fetchone()
        cur.close()
    finally:
        mc.close()
    assert isinstance(a, tuple)
    assert isinstance(c, tuple)
    assert (a[0], c[0]) == expected


INFERENCE = (
    f"SELECT id FROM {C} WHERE mobile LIKE '139%'",
    f"SELECT id FROM {C} WHERE id_card > '4403'",
    f"SELECT id FROM {C} WHERE mobile REGEXP '^139'",
    f"SELECT id FROM {C} ORDER BY id_card LIMIT 1",
    f"SELECT COUNT(*) FROM {C} GROUP BY name",
    f"SELECT DISTINCT email FROM {C}",
    f"SELECT id FROM {C} WHERE id_card = '{{id_card}}'",  # equality, but no lookup allowed on id_card
    f"SELECT IF(SUBSTRING(mobile, 4, 1) = '2', SLEEP(0.2), 0) FROM {C} {ONE}",  # timing
    f"SELECT id FROM {C} {ONE} AND IF(mobile LIKE '1392%', SLEEP(0.2), 0) = 0",
    f"SELECT id FROM {C} {ONE} AND IF(ASCII(name) > 200, BENCHMARK(100000, MD5(1)), 0) = 0",
)


def test_inference_guard_and_allowed_lookups(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    canary = my_bank.canary
    conn = _pymysql(proxy.ports["my"], "dev")
    try:
        with conn.cursor() as cur:
            for sql in INFERENCE:
                with pytest.raises(pymysql.MySQLError, match="sqlbastion: statement blocked"):
                    cur.execute(sql.format(id_card=canary.id_card))
            # mobile is a lookup column for developers: equality finds the customer, masked
            cur.execute(f"SELECT id, mobile FROM {C} WHERE mobile = %s", (canary.mobile,))
            assert cur.fetchone() == (1, mobile(canary.mobile))
    finally:
        conn.close()


def test_returning_rows_are_masked(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    canary = my_bank.canary
    conn = _pymysql(proxy.ports["my"], "dev")
    try:
        conn.begin()
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {C} {ONE} RETURNING id, mobile, name")
            row = cur.fetchone()
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {C} {ONE}")
            assert cur.fetchone() == (1,)  # rolled back
    finally:
        conn.close()
    assert row == (1, mobile(canary.mobile), chinese_name(canary.name))


NOT_SENSITIVE = (
    "SELECT 1",
    "SHOW TABLES",
    f"SELECT COUNT(*) FROM {C}",
    f"SELECT city, COUNT(*) FROM {C} GROUP BY city ORDER BY city LIMIT 5",
    f"EXPLAIN SELECT mobile FROM {C} {ONE}",
    "SELECT id, customer_id, account_type, status FROM accounts ORDER BY id LIMIT 5",
)


def test_statements_that_read_nothing_sensitive_are_untouched(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    results = {}
    for person in ("dba", "dev"):
        conn = _pymysql(proxy.ports["my"], person)
        try:
            with conn.cursor() as cur:
                out = []
                for sql in NOT_SENSITIVE:
                    cur.execute(sql)
                    out.append(cur.fetchall())
                results[person] = out
        finally:
            conn.close()
    assert results["dev"] == results["dba"]


class CursorClient:
    """A minimal blocking client over sqlbastion's own MySQL codec: prepare, execute with a cursor, fetch."""

    def __init__(self, port: int, person: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.framer = PacketFramer()
        self.received = bytearray()
        greeting = HandshakeV10.decode(self.read().payload)
        caps = int(
            Capability.PROTOCOL_41
            | Capability.SECURE_CONNECTION
            | Capability.PLUGIN_AUTH
            | Capability.LONG_PASSWORD
            | Capability.TRANSACTIONS
            | Capability.CONNECT_WITH_DB
        )
        response = HandshakeResponse(
            capabilities=caps,
            max_packet=1 << 24,
            charset=45,  # utf8mb4_general_ci
            user=person.encode(),
            auth_response=auth.native_scramble(PASSWORDS[person].encode(), greeting.auth_data),
            database=b"bank",
            auth_plugin=auth.NATIVE,
        )
        self.sock.sendall(frame(1, response.encode())[0])
        assert self.read().payload[0] == 0x00

    def read(self) -> Packet:
        while (p := self.framer.next_packet()) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.received += chunk
            self.framer.receive_data(chunk)
        return p

    def command(self, payload: bytes) -> Packet:
        self.sock.sendall(frame(0, payload)[0])
        return self.read()

    def cursor_rows(self, sql: str, fetch: int) -> list[list[bytes | None]]:
        """COM_STMT_PREPARE, COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH."""
        p = self.command(b"\x16" + sql.encode())
        if p.payload[0] == 0xFF:
            raise RuntimeError(ErrPacket.decode(p.payload).message)
        ok = StmtPrepareOk.decode(p.payload)
        for _ in range(ok.num_params + bool(ok.num_params) + ok.num_columns + bool(ok.num_columns)):
            self.read()
        sid = ok.statement_id.to_bytes(4, "little")
        first = self.command(b"\x17" + sid + b"\x01" + (1).to_bytes(4, "little"))
        if first.payload[0] == 0xFF:
            raise RuntimeError(ErrPacket.decode(first.payload).message)
        types = [ColumnDefinition.decode(self.read().payload).type for _ in range(first.payload[0])]
        assert EofPacket.decode(self.read().payload).status & ServerStatus.CURSOR_EXISTS
        self.sock.sendall(frame(0, b"\x1c" + sid + fetch.to_bytes(4, "little"))[0])
        rows: list[list[bytes | None]] = []
        while True:
            p = self.read()
            if p.payload[0] == 0xFE and len(p.payload) < 9:
                return rows
            if p.payload[0] == 0xFF:
                raise RuntimeError(ErrPacket.decode(p.payload).message)
            rows.append(decode_binary_row(p.payload, types))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(frame(0, b"\x01")[0])
        self.sock.close()


def test_server_side_cursor_rows_are_masked(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    sql = f"SELECT id, mobile, id_card, city FROM {C} WHERE id <= 3 ORDER BY id"
    clear, masked = CursorClient(proxy.ports["my"], "dba"), CursorClient(proxy.ports["my"], "dev")
    try:
        truth = clear.cursor_rows(sql, 10)
        rows = masked.cursor_rows(sql, 10)
    finally:
        clear.close()
        masked.close()
    assert len(truth) == len(rows) == 3
    for t, r in zip(truth, rows, strict=True):
        assert r[0] == t[0]
        assert r[3] == t[3]
        assert r[1] == mobile((t[1] or b"").decode()).encode()
        assert r[2] == keep((t[2] or b"").decode(), 6, 4).encode()
    assert find_leaks(bytes(masked.received), my_bank.canary.sensitive_values()) == []
    assert my_bank.canary.mobile.encode() in clear.received


def test_denied_columns_are_refused(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    for sql in (
        "SELECT memo FROM transactions WHERE id = 1",
        "SELECT * FROM transactions WHERE id = 1",
        "SELECT x.m FROM (SELECT memo AS m FROM transactions WHERE id = 1) x",
    ):
        conn = _pymysql(proxy.ports["my"], "dev")
        try:
            with conn.cursor() as cur, pytest.raises(pymysql.MySQLError, match="sqlbastion: "):
                cur.execute(sql)
        finally:
            conn.close()
        conn = _pymysql(proxy.ports["my"], "dba")
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                assert cur.fetchall()
        finally:
            conn.close()


def test_other_sessions_statements_do_not_leak(proxy: MaskingProxy, my_bank: LoadedBank) -> None:
    """A clear person's running statement (with a canary literal) is not visible to a masked person."""
    import threading

    canary = my_bank.canary

    finished: list[object] = []

    def long_query() -> None:
        # A deliberately slow join that carries the canary as a literal in its text.
        sql = (
            "SELECT COUNT(*) FROM transactions t1, transactions t2 "
            f"WHERE t1.id < 4000 AND t2.id < 4000 AND NOT t1.memo <=> '{canary.mobile}'"
        )
        conn = _pymysql(proxy.ports["my"], "dba")
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                finished.append(cur.fetchall())
        finally:
            conn.close()

    worker = threading.Thread(target=long_query)
    worker.start()
    relay = RecordingRelay(proxy.ports["my"])
    try:
        time.sleep(0.5)
        conn = _pymysql(relay.port, "dev")
        try:
            with conn.cursor() as cur:
                for sql in (
                    "SHOW FULL PROCESSLIST",
                    "SELECT info FROM information_schema.processlist",
                    "SELECT * FROM information_schema.PROCESSLIST",
                ):
                    with contextlib.suppress(pymysql.MySQLError):
                        cur.execute(sql)
                        cur.fetchall()
        finally:
            conn.close()
        wire = relay.received()
    finally:
        relay.close()
        worker.join()
    assert finished, "the clear person's statement ran"
    assert find_leaks(wire, canary.sensitive_values()) == []
