"""End to end through the PostgreSQL proxy: masked roles never receive a canary value, by any path.

Every statement below reads customer 1's canary values through another shape
(aliases, views, CTEs, set operations, functions, casts, whole-row references,
cursors, RETURNING, COPY, SQL-level PREPARE, errors and notices). Each runs
through psycopg (extended protocol, text and binary results), asyncpg (binary,
prepared) and psql (simple query protocol) via a relay that records every byte
the proxy sends. The masked person's bytes must hold no form of any canary
value; the clear person's bytes must hold them (the statements do reach data).
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import asyncpg
import psycopg
import pytest
from tests.integration.masking_support import (
    PASSWORDS,
    MaskingProxy,
    RecordingRelay,
    find_leaks,
    hidden_parts,
    run_masking_proxy,
)
from tests.integration.postgres_support import RawClient

from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.masking.functions import build_function, chinese_name, keep, mobile
from sqlbastion.proxy.postgres import protocol as pgp

pytestmark = pytest.mark.integration

C = "customers"
ONE = "WHERE id = 1"

STATEMENTS: tuple[str, ...] = (
    f"SELECT name, id_card, mobile, email, address FROM {C} {ONE}",
    f"SELECT * FROM {C} {ONE}",
    f"SELECT c.* FROM {C} c WHERE c.id = 1",
    f"WITH c AS (SELECT * FROM {C} {ONE}) TABLE c",
    f"SELECT x FROM (SELECT mobile AS x FROM {C} {ONE}) d",
    f"WITH c AS (SELECT mobile m, name n FROM {C} {ONE}) SELECT m, n FROM c",
    f"WITH RECURSIVE r(m, k) AS (SELECT mobile, 1 FROM {C} {ONE} UNION ALL SELECT m, k + 1 FROM r WHERE k < 2) "
    "SELECT m FROM r",
    f"SELECT (SELECT mobile FROM {C} {ONE}) AS s",
    f"SELECT mobile FROM {C} {ONE} UNION SELECT 'x'",
    f"SELECT id_card FROM {C} {ONE} INTERSECT SELECT id_card FROM {C} {ONE}",
    f"SELECT email FROM {C} {ONE} EXCEPT SELECT 'nobody'",
    "SELECT mobile, name FROM bank_v WHERE id = 1",
    f"SELECT mobile || '' FROM {C} {ONE}",
    f"SELECT concat(mobile, ''), concat_ws('-', name, id_card) FROM {C} {ONE}",
    f"SELECT substring(mobile from 1 for 11), substr(id_card, 1) FROM {C} {ONE}",
    f"SELECT encode(convert_to(mobile, 'UTF8'), 'hex'), encode(convert_to(name, 'UTF8'), 'base64') FROM {C} {ONE}",
    f"SELECT md5(mobile), md5(id_card), reverse(mobile), reverse(name) FROM {C} {ONE}",
    f"SELECT upper(email), lower(address), initcap(email) FROM {C} {ONE}",
    f"SELECT mobile::bytea, convert_to(name, 'UTF8') FROM {C} {ONE}",
    f'SELECT CAST(mobile AS varchar(20)) COLLATE "C", mobile::text FROM {C} {ONE}',
    f"SELECT json_build_object('m', mobile), jsonb_build_array(name, id_card) FROM {C} {ONE}",
    f"SELECT string_agg(mobile, ','), array_agg(id_card), min(name), max(email) FROM {C} {ONE}",
    f"SELECT row_to_json(c), to_jsonb(c) FROM {C} c WHERE c.id = 1",
    f"SELECT c::text FROM {C} c WHERE c.id = 1",
    f"SELECT (c).mobile, (c).name FROM {C} c WHERE c.id = 1",
    f"SELECT c FROM {C} c WHERE c.id = 1",
    f"SELECT CASE WHEN id = 1 THEN mobile ELSE 'x' END, coalesce(email, '') FROM {C} {ONE}",
    f"SELECT format('%s', mobile), left(id_card, 18), right(mobile, 11) FROM {C} {ONE}",
    f"SELECT x.m FROM {C} c, LATERAL (SELECT c.mobile AS m) x WHERE c.id = 1",
    f"SELECT unnest(ARRAY[mobile, id_card]) FROM {C} {ONE}",
    f"SELECT first_value(mobile) OVER (), lag(name) OVER () FROM {C} {ONE}",
    f'SELECT "mobile", U&"\\006dobile" FROM "customers" {ONE}',
    "SELECT a.card_no, t.counterparty_card FROM accounts a, transactions t WHERE a.id = 1 AND t.account_id = 1",
    f"SELECT CAST(mobile AS int) FROM {C} {ONE}",  # the error text would echo the value
    f"SELECT CAST(name AS date) FROM {C} {ONE}",
    f"SELECT xmlparse(content name) FROM {C} {ONE}",
    f"SELECT id FROM {C} {ONE} AND CAST(mobile AS int) = 1",
    f"SELECT id FROM {C} WHERE id = CAST((SELECT id_card FROM {C} {ONE}) AS int)",
    f"SELECT id FROM {C} {ONE} ORDER BY CAST(name AS int)",
    f"SELECT count(*) FROM {C} GROUP BY CAST(email AS date)",
    f"SELECT id FROM {C} WHERE mobile = '13900000000' OR id = (SELECT id FROM {C} WHERE name LIKE '上%' LIMIT 1)",
    f"DO $$ BEGIN RAISE NOTICE '%', (SELECT mobile FROM {C} {ONE}); END $$",
    f"DO $$ BEGIN RAISE EXCEPTION '%', (SELECT id_card FROM {C} {ONE}); END $$",
    f"SELECT 1; SELECT mobile FROM {C} {ONE}",
    "SELECT * FROM customers JOIN accounts USING (id) WHERE id = 1",
    "SELECT * FROM customers NATURAL JOIN accounts WHERE id = 1",
    f"SELECT mobile AS id_card, id_card AS mobile, name AS city FROM {C} {ONE}",
    f"SELECT DISTINCT ON (id) mobile FROM {C} {ONE}",
    f"SELECT mobile FROM {C} {ONE} FOR UPDATE",
    f"SELECT ALL mobile FROM ONLY {C} {ONE}",
    f'SELECT "customers"."mobile" FROM "public"."customers" {ONE}',
    f"SELECT s.m FROM (VALUES (1)) v(x), LATERAL (SELECT mobile AS m FROM {C} WHERE id = v.x) s",
    f"SELECT * FROM (SELECT * FROM {C}) AS d WHERE d.id = 1",
    "SELECT c.*, a.* FROM customers c, accounts a WHERE c.id = 1 AND a.id = 1",
)

TRANSACTION_SCRIPTS: tuple[tuple[str, ...], ...] = (
    ("BEGIN", f"UPDATE {C} SET city = city {ONE} RETURNING mobile, name, id_card", "ROLLBACK"),
    ("BEGIN", f"DECLARE cur CURSOR FOR SELECT mobile, name FROM {C} {ONE}", "FETCH ALL FROM cur", "ROLLBACK"),
    (
        "BEGIN",
        f"DECLARE cur2 CURSOR FOR SELECT mobile || '', md5(id_card) FROM {C} {ONE}",
        "FETCH 5 FROM cur2",
        "ROLLBACK",
    ),
    ("BEGIN", f"DECLARE cur3 BINARY CURSOR FOR SELECT mobile FROM {C} {ONE}", "FETCH ALL FROM cur3", "ROLLBACK"),
    (f"PREPARE p1 AS SELECT mobile, id_card FROM {C} {ONE}", "EXECUTE p1", "DEALLOCATE p1"),
    (f"PREPARE p2 AS SELECT reverse(mobile) FROM {C} {ONE}", "EXECUTE p2", "DEALLOCATE p2"),
)

COPY_STATEMENTS: tuple[str, ...] = (
    f"COPY (SELECT mobile, name FROM {C} {ONE}) TO STDOUT",
    f"COPY (SELECT * FROM {C} {ONE}) TO STDOUT WITH (FORMAT csv)",
    f"COPY (SELECT id_card FROM {C} {ONE}) TO STDOUT WITH (FORMAT binary)",
)


@pytest.fixture(scope="module")
def pg_bank(sample_bank: LoadedBank, postgres_server: ServerInfo) -> LoadedBank:
    s = postgres_server
    with psycopg.connect(
        host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, dbname="bank", autocommit=True
    ) as conn:
        conn.execute("CREATE OR REPLACE VIEW bank_v AS SELECT id, name, mobile, id_card FROM customers")
    return sample_bank


@pytest.fixture(scope="module")
def proxy(
    pg_bank: LoadedBank, postgres_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MaskingProxy]:
    yield from run_masking_proxy(tmp_path_factory.mktemp("masking-pg"), postgres=postgres_server)


def _dsn(port: int, person: str) -> str:
    return f"host=127.0.0.1 port={port} user={person} password={PASSWORDS[person]} dbname=bank sslmode=disable"


def _run_psycopg(port: int, person: str, *, binary: bool) -> list[str]:
    """Every statement and script through psycopg; returns the error texts the client saw."""
    errors: list[str] = []
    with psycopg.connect(_dsn(port, person), autocommit=True, connect_timeout=10) as conn:
        for sql in STATEMENTS:
            if ";" in sql and binary:
                continue  # several statements need the simple query protocol (psql covers them)
            try:
                with conn.cursor(binary=binary) as cur:
                    cur.execute(sql.encode())
                    while True:
                        if cur.description is not None:
                            cur.fetchall()
                        if not cur.nextset():
                            break
            except psycopg.Error as exc:
                errors.append(str(exc))
        for script in TRANSACTION_SCRIPTS:
            for sql in script:
                try:
                    with conn.cursor(binary=binary) as cur:
                        cur.execute(sql.encode())
                        if cur.description is not None:
                            cur.fetchall()
                except psycopg.Error as exc:
                    errors.append(str(exc))
            conn.execute("ROLLBACK") if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE else None
        for sql in COPY_STATEMENTS:
            try:
                with conn.cursor() as cur, cur.copy(sql.encode()) as copy:
                    for _ in copy:
                        pass
            except psycopg.Error as exc:
                errors.append(str(exc))
    return errors


async def _run_asyncpg(port: int, person: str) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=port, user=person, password=PASSWORDS[person], database="bank", ssl=False, timeout=10
    )
    try:
        for sql in STATEMENTS:
            if ";" in sql or sql.startswith("DO "):
                continue
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
                await conn.fetch(sql)
            try:
                stmt = await conn.prepare(sql)
                await stmt.fetch()
                await stmt.fetch()  # executed twice: the plan is reused
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
        try:
            async with conn.transaction():
                cur = await conn.cursor(f"SELECT mobile, name, id_card FROM {C} {ONE}")
                await cur.fetch(5)
        except (asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
    finally:
        await conn.close()


def _psql() -> str | None:
    for base in ("/usr/lib/postgresql/15/bin", "/usr/bin"):
        if (Path(base) / "psql").exists():
            return str(Path(base) / "psql")
    return None


def _run_psql(port: int, person: str, directory: Path) -> str:
    psql = _psql()
    assert psql is not None, "psql is installed with PostgreSQL 15"
    script = directory / f"statements-{person}.sql"
    lines = [s + ";" for s in STATEMENTS]
    for sc in TRANSACTION_SCRIPTS:
        lines += [s + ";" for s in sc] + ["ROLLBACK;"]
    lines += [s + ";" for s in COPY_STATEMENTS]
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = dict(os.environ, PGPASSWORD=PASSWORDS[person], PGCONNECT_TIMEOUT="10", PGSSLMODE="disable")
    out = subprocess.run(
        [
            psql,
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            person,
            "-d",
            "bank",
            "-v",
            "ON_ERROR_STOP=0",
            "-f",
            str(script),
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")


def _all_paths(proxy: MaskingProxy, person: str, directory: Path) -> tuple[bytes, str]:
    relay = RecordingRelay(proxy.ports["pg"])
    try:
        errors = _run_psycopg(relay.port, person, binary=False)
        errors += _run_psycopg(relay.port, person, binary=True)
        import asyncio

        asyncio.run(_run_asyncpg(relay.port, person))
        printed = _run_psql(relay.port, person, directory)
        return relay.received(), printed + "\n".join(errors)
    finally:
        relay.close()


def test_masked_person_receives_no_canary_by_any_path(proxy: MaskingProxy, pg_bank: LoadedBank, tmp_path: Path) -> None:
    wire, printed = _all_paths(proxy, "dev", tmp_path)
    assert len(wire) > 10_000, "the statements produced traffic"
    values = pg_bank.canary.sensitive_values() + hidden_parts(pg_bank.canary)
    assert find_leaks(wire, values) == []
    assert find_leaks(printed.encode(), values) == []
    # masked values did flow (the statements were not simply all refused)
    canary = pg_bank.canary
    for masked in (mobile(canary.mobile), keep(canary.id_card, 6, 4), chinese_name(canary.name)):
        assert masked.encode() in wire, masked


def test_clear_person_sees_the_true_values(proxy: MaskingProxy, pg_bank: LoadedBank, tmp_path: Path) -> None:
    wire, _ = _all_paths(proxy, "dba", tmp_path)
    canary = pg_bank.canary
    leaks = find_leaks(wire, canary.sensitive_values())
    for form in ("as utf-8", "as hex", "as md5", "as reversed"):
        assert any(form in leak for leak in leaks), form
    with psycopg.connect(_dsn(proxy.ports["pg"], "dba"), autocommit=True) as conn:
        row = conn.execute(f"SELECT name, id_card, mobile, email, address FROM {C} {ONE}").fetchone()
    assert row == (canary.name, canary.id_card, canary.mobile, canary.email, canary.address)


def test_plain_columns_show_their_mask(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    canary = pg_bank.canary
    expected = (chinese_name(canary.name), keep(canary.id_card, 6, 4), mobile(canary.mobile), canary.city)
    sql = f"SELECT name, id_card, mobile, city FROM {C} {ONE}"
    with psycopg.connect(_dsn(proxy.ports["pg"], "dev"), autocommit=True) as conn:
        for binary in (False, True):
            assert conn.cursor(binary=binary).execute(sql.encode()).fetchone() == expected
        # an expression over a masked column is blocked by the engine, or else fully masked
        blocked = None
        try:
            row = conn.execute(f"SELECT city, mobile || '' FROM {C} {ONE}".encode()).fetchone()
        except psycopg.errors.InsufficientPrivilege as exc:
            blocked = str(exc)
        if blocked is None:
            assert row == (canary.city, "****")
        else:
            assert "sqlbastion:" in blocked


def test_keyed_functions_are_consistent_across_sessions(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    canary = pg_bank.canary
    seen = []
    for _ in range(2):
        with psycopg.connect(_dsn(proxy.ports["pg"], "analyst"), autocommit=True) as conn:
            seen.append(conn.execute(f"SELECT mobile, id_card FROM {C} {ONE}".encode()).fetchone())
    assert seen[0] == seen[1]
    assert seen[0] is not None
    token, id_card = seen[0]
    assert isinstance(token, str)
    assert len(token) == 16
    assert token != canary.mobile
    assert id_card is None  # level 4 is NULL for analysts


def test_numbers_and_dates_keep_their_types_in_text_and_binary(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    with psycopg.connect(_dsn(proxy.ports["pg"], "dba"), autocommit=True) as conn:
        clear = conn.execute(b"SELECT balance FROM accounts WHERE id = 1").fetchone()
    assert clear is not None
    balance = clear[0]
    assert isinstance(balance, Decimal)
    expected = (build_function("band").decimal(balance), date(pg_bank.canary.birth_date.year, 1, 1))
    accounts = b"SELECT balance FROM accounts WHERE id = 1"
    customers = b"SELECT birth_date FROM customers WHERE id = 1"
    with psycopg.connect(_dsn(proxy.ports["pg"], "dev"), autocommit=True) as conn:
        for binary in (False, True):
            a = conn.cursor(binary=binary).execute(accounts).fetchone()
            c = conn.cursor(binary=binary).execute(customers).fetchone()
            assert a is not None
            assert c is not None
            assert (a[0], c[0]) == expected, binary

    async def binary_protocol() -> tuple[object, object]:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=proxy.ports["pg"], user="dev", password=PASSWORDS["dev"], database="bank", ssl=False
        )
        try:
            return await conn.fetchval(accounts.decode()), await conn.fetchval(customers.decode())
        finally:
            await conn.close()

    import asyncio

    assert asyncio.run(binary_protocol()) == expected


INFERENCE = (
    f"SELECT id FROM {C} WHERE mobile LIKE '139%'",
    f"SELECT id FROM {C} WHERE id_card > '4403'",
    f"SELECT id FROM {C} WHERE mobile ~ '^139'",
    f"SELECT id FROM {C} ORDER BY id_card LIMIT 1",
    f"SELECT count(*) FROM {C} GROUP BY name",
    f"SELECT DISTINCT email FROM {C}",
    f"SELECT id FROM {C} WHERE id_card = '{{id_card}}'",  # equality, but no lookup allowed on id_card
    f"SELECT CASE WHEN substr(mobile, 4, 1) = '2' THEN pg_sleep(0.2) END FROM {C} {ONE}",  # timing
    f"SELECT id FROM {C} {ONE} AND (CASE WHEN mobile LIKE '1392%' THEN pg_sleep(0.2) END) IS NULL",
)


def test_inference_guard_and_allowed_lookups(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    canary = pg_bank.canary
    with psycopg.connect(_dsn(proxy.ports["pg"], "dev"), autocommit=True) as conn:
        for sql in INFERENCE:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="sqlbastion: statement blocked"):
                conn.execute(sql.format(id_card=canary.id_card).encode())
        # mobile is a lookup column for developers: equality finds the customer, masked
        row = conn.execute(f"SELECT id, mobile FROM {C} WHERE mobile = '{canary.mobile}'".encode()).fetchone()
        assert row == (1, mobile(canary.mobile))


NOT_SENSITIVE = (
    "SELECT 1",
    "SHOW search_path",
    f"SELECT count(*) FROM {C}",
    f"SELECT city, count(*) FROM {C} GROUP BY city ORDER BY city LIMIT 5",
    f"EXPLAIN (COSTS OFF) SELECT mobile FROM {C} {ONE}",
    "SELECT id, customer_id, account_type, status FROM accounts ORDER BY id LIMIT 5",
)


def test_statements_that_read_nothing_sensitive_are_untouched(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    results = {}
    for person in ("dba", "dev"):
        with psycopg.connect(_dsn(proxy.ports["pg"], person), autocommit=True) as conn:
            results[person] = [conn.execute(sql.encode()).fetchall() for sql in NOT_SENSITIVE]
    assert results["dev"] == results["dba"]


def _bind(portal: bytes, stmt: bytes, formats: tuple[int, ...] = ()) -> bytes:
    body = portal + b"\x00" + stmt + b"\x00" + b"\x00\x00" + b"\x00\x00"
    body += struct.pack("!h", len(formats)) + b"".join(struct.pack("!h", f) for f in formats)
    return pgp.encode_message(pgp.BIND, body)


def _execute(portal: bytes) -> bytes:
    return pgp.encode_message(pgp.EXECUTE, portal + b"\x00" + struct.pack("!i", 0))


def test_pipelines_mask_the_statement_actually_executed(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    """Re-Parse of the unnamed statement, portals bound before and after, executed out of order, mixed formats."""
    canary = pg_bank.canary
    raw = RawClient(proxy.ports["pg"], user="dev", password=PASSWORDS["dev"], database="bank")
    try:
        batch = (
            pgp.encode_parse(b"", f"SELECT city FROM {C} {ONE}".encode())
            + _bind(b"p_city", b"")
            + pgp.encode_parse(b"", f"SELECT mobile FROM {C} {ONE}".encode())
            + _bind(b"p_mobile", b"", (1,))
            + pgp.encode_parse(b"named", f"SELECT id_card, city FROM {C} {ONE}".encode())
            + _bind(b"p_named", b"named", (0, 1))
            + _execute(b"p_mobile")
            + _execute(b"p_city")
            + _execute(b"p_named")
            + pgp.encode_message(pgp.SYNC)
        )
        raw.send_raw(batch)
        out = raw.until_ready()
    finally:
        raw.close()
    rows = [pgp.decode_data_row(body) for kind, body in out if kind == "D"]
    errors = [body for kind, body in out if kind == "E"]
    assert not errors, errors
    assert rows == [
        [mobile(canary.mobile).encode()],
        [canary.city.encode()],
        [keep(canary.id_card, 6, 4).encode(), canary.city.encode()],
    ]
    wire = b"".join(body for _, body in out)
    assert find_leaks(wire, canary.sensitive_values()) == []


def test_denied_columns_are_refused(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    for sql in (
        "SELECT memo FROM transactions WHERE id = 1",
        "SELECT * FROM transactions WHERE id = 1",
        "SELECT t.id, x.m FROM transactions t, LATERAL (SELECT t.memo AS m) x WHERE t.id = 1",
    ):
        with (
            psycopg.connect(_dsn(proxy.ports["pg"], "dev"), autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="sqlbastion: "),
        ):
            conn.execute(sql.encode())
        with psycopg.connect(_dsn(proxy.ports["pg"], "dba"), autocommit=True) as conn:
            assert conn.execute(sql.encode()).fetchall()


def test_prepared_statements_executed_many_times(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    canary = pg_bank.canary
    sql = b"SELECT mobile, id_card, city FROM customers WHERE id = %s"
    expected = (mobile(canary.mobile), keep(canary.id_card, 6, 4), canary.city)
    with psycopg.connect(_dsn(proxy.ports["pg"], "dev"), autocommit=True) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            for _ in range(8):  # a named server-side statement, bound and executed again and again
                assert cur.execute(sql, (1,), prepare=True).fetchone() == expected
            assert cur.execute(sql, (2,), prepare=True).fetchone() != expected


def test_other_sessions_statements_do_not_leak(proxy: MaskingProxy, pg_bank: LoadedBank) -> None:
    """A clear person's running statement (with a canary literal) is not visible to a masked person."""
    import threading

    canary = pg_bank.canary

    finished: list[object] = []

    def long_query() -> None:
        # A deliberately slow join that carries the canary as a literal in its text.
        sql = (
            "SELECT count(*) FROM transactions t1, transactions t2 "
            f"WHERE t1.id < 4000 AND t2.id < 4000 AND t1.memo IS DISTINCT FROM '{canary.mobile}'"
        )
        with psycopg.connect(_dsn(proxy.ports["pg"], "dba"), autocommit=True) as conn:
            finished.append(conn.execute(sql.encode()).fetchone())

    worker = threading.Thread(target=long_query)
    worker.start()
    relay = RecordingRelay(proxy.ports["pg"])
    try:
        time.sleep(0.5)
        with psycopg.connect(_dsn(relay.port, "dev"), autocommit=True) as conn:
            for sql in (
                "SELECT query FROM pg_stat_activity",
                "SELECT * FROM pg_stat_activity",
                "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
            ):
                with contextlib.suppress(psycopg.Error):
                    conn.execute(sql.encode()).fetchall()
        wire = relay.received()
    finally:
        relay.close()
        worker.join()
    assert finished, "the clear person's statement ran"
    assert find_leaks(wire, canary.sensitive_values()) == []
