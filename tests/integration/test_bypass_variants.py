"""Bypass variants end to end: both proxies, several client paths, no canary form on the wire.

The variants read customer 1's canary values through shapes the masking and
policy suites do not use (window and JSON functions, lateral joins, GROUPING
SETS, numeric "lookups", charset words, executing EXPLAIN, ``sql_mode`` bit sets,
error-echo casts, user variables …). Each runs for the masked person through a
relay that records every byte the proxy sends: MariaDB with pymysql (text
protocol, multi-statements) and mysql-connector (COM_STMT_PREPARE, binary rows);
PostgreSQL with psycopg (extended protocol, text and binary results) and psql
(simple query protocol). No form of any canary value may cross, and the
statements closed by class must be refused with the proxy's own message.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import psycopg
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

pytestmark = pytest.mark.integration

C = "customers"
ONE = "WHERE id = 1"

MYSQL_VARIANTS: tuple[str, ...] = (
    f"SELECT id, LAG(mobile) OVER (ORDER BY id) FROM {C} WHERE id IN (1, 2)",
    f"SELECT FIRST_VALUE(id_card) OVER (), NTH_VALUE(name, 1) OVER () FROM {C} {ONE}",
    f"SELECT JSON_OBJECT('m', mobile), JSON_ARRAY(name, id_card) FROM {C} {ONE}",
    f"SELECT JSON_ARRAYAGG(mobile), JSON_OBJECTAGG(id, email) FROM {C} {ONE}",
    f"SELECT JSON_UNQUOTE(JSON_EXTRACT(JSON_OBJECT('a', id_card), '$.a')) FROM {C} {ONE}",
    f"SELECT x.m FROM {C} c, LATERAL (SELECT c.mobile AS m) x WHERE c.id = 1",
    f"SELECT city, mobile FROM {C} {ONE} GROUP BY city, mobile WITH ROLLUP",
    f"SELECT LPAD(mobile, 20, '*'), INSERT(id_card, 1, 0, 'x'), REPLACE(name, 'z', 'y') FROM {C} {ONE}",
    f"SELECT CONCAT_WS('|', mobile, email), ELT(1, address), MAKE_SET(1, name) FROM {C} {ONE}",
    f"SELECT TO_BASE64(mobile), HEX(name), MD5(id_card), SHA2(mobile, 256), CRC32(mobile) FROM {C} {ONE}",
    f"SELECT UNCOMPRESS(COMPRESS(mobile)), CONVERT(name USING latin1), mobile COLLATE utf8mb4_bin FROM {C} {ONE}",
    f"SELECT CAST(mobile AS DECIMAL(20)), CAST(mobile AS SIGNED), id_card + 0, -mobile FROM {C} {ONE}",
    f"SELECT CAST(email AS CHAR(3)), CAST(id_card AS BINARY), BINARY name FROM {C} {ONE}",
    f"SELECT IF(id = 1, mobile, NULL), IFNULL(email, ''), GREATEST(mobile, '0'), NULLIF(name, '') FROM {C} {ONE}",
    f"SELECT _binary mobile FROM {C} {ONE}",
    f"SELECT _utf8mb4 id_card FROM {C} {ONE}",
    f"SELECT id FROM {C} {ONE} AND EXTRACTVALUE(1, CONCAT(0x7e, name)) IS NULL",
    f"SELECT UPDATEXML(1, CONCAT(0x7e, id_card), 1) FROM {C} {ONE}",
    f"SELECT id FROM {C} {ONE} AND JSON_EXTRACT(name, '$') IS NULL",
    f"SELECT id FROM {C} WHERE mobile = {0} OR id = 1",
    f"SELECT id FROM {C} WHERE id_card = 110101 AND id = 1",
    f"SELECT id FROM {C} {ONE} ORDER BY (SELECT mobile FROM {C} {ONE})",
    f"SELECT id FROM {C} WHERE EXISTS (SELECT 1 FROM {C} c2 WHERE c2.id = 1 AND c2.mobile > '1')",
    f"SET @v := (SELECT mobile FROM {C} {ONE})",
    f"SELECT @w := name FROM {C} {ONE}",
    "SELECT @v, @w",
    f"SELECT mobile INTO @x FROM {C} {ONE}",
    "SELECT @x",
    f"SELECT * FROM (VALUES ROW((SELECT mobile FROM {C} {ONE}))) v",
    f"VALUES ROW((SELECT id_card FROM {C} {ONE}))",
    f"TABLE {C}",
    f"SELECT * FROM JSON_TABLE((SELECT JSON_ARRAYAGG(mobile) FROM {C} {ONE}), '$[*]' COLUMNS (m TEXT PATH '$')) j",
    f"HANDLER {C} OPEN",
    f"HANDLER {C} READ FIRST",
    f"HANDLER {C} CLOSE",
    f"EXPLAIN FORMAT=JSON SELECT mobile FROM {C} WHERE mobile LIKE '1%'",
    f"ANALYZE FORMAT=JSON SELECT CAST(name AS SIGNED) FROM {C} {ONE}",
    "SELECT min_value, max_value FROM mysql.column_stats",
    f"ANALYZE TABLE {C} PERSISTENT FOR COLUMNS (mobile) INDEXES ()",
    f"SELECT id /*!, mobile */ FROM {C} {ONE}",
    f"SELECT id FROM /*!99999 (SELECT 'a' AS mobile, 1 AS id) AS */ {C} WHERE mobile > '1' AND id = 1",
    f"SELECT /*!99999 'x' AS */ name FROM {C} {ONE}",
    f"SELECT id /*M!100000 , name */ FROM {C} {ONE}",
    f"SELECT id FROM {C} {ONE} /*!50000 UNION SELECT id_card FROM {C} */",
    f"SELECT `MOBILE`, MoBiLe FROM `bank`.`CUSTOMERS` {ONE}",
    f"SELECT id FROM {C} {ONE}; SELECT mobile FROM {C} {ONE}",
    f"SELECT city FROM (SELECT mobile AS city, city AS mobile FROM {C} {ONE}) t",
    f"WITH {C} AS (SELECT mobile AS city FROM {C} {ONE}) SELECT city FROM {C}",
    "SET sql_mode = 4",
    f'SELECT "mobile" FROM {C} {ONE}',
    "SET sql_mode = ''",
    f"CREATE TEMPORARY TABLE tmp_b AS SELECT mobile FROM {C} {ONE}",
    "SELECT * FROM tmp_b",
    f"SELECT mobile FROM {C} {ONE} INTO OUTFILE '/tmp/sqlbastion-bypass-out'",
    f"PREPARE s9 FROM 'SELECT id_card FROM {C} {ONE}'",
    "EXECUTE s9",
)

# Statements refused by the classes closed with these variants (the proxy's own error).
MYSQL_REFUSED: tuple[str, ...] = (
    f"SELECT id FROM {C} WHERE mobile = 0",
    f"SELECT id FROM {C} WHERE mobile IN ('1', 13800138000)",
    f"SELECT id FROM {C} WHERE mobile = @n",
    f"SELECT _binary mobile FROM {C} {ONE}",
    "SET sql_mode = 4",
    "SET SESSION sql_mode = '4'",
    f"EXPLAIN ANALYZE SELECT CAST(name AS SIGNED) FROM {C} {ONE}",
    f"SELECT id FROM /*!99999 (SELECT 'a' AS mobile, 1 AS id) AS */ {C} WHERE mobile > '1'",
    f"SELECT /*M!999999 'x' AS */ id_card FROM {C} {ONE}",
    f"SELECT count(NULLIF(mobile > '1', false)) FROM {C}",
    f"SELECT id, mobile AS city FROM {C} HAVING city > '1'",
)

PG_VARIANTS: tuple[str, ...] = (
    f"SELECT id, lag(mobile) OVER (ORDER BY id), lead(name) OVER w FROM {C} WHERE id IN (1, 2) WINDOW w AS ()",
    f"SELECT nth_value(id_card, 1) OVER (), first_value(email) OVER () FROM {C} {ONE}",
    f"SELECT json_agg(mobile), jsonb_build_object('a', name), to_jsonb(c) FROM {C} c WHERE c.id = 1",
    f"SELECT jsonb_agg(c), to_json(c.*) FROM {C} c WHERE c.id = 1",
    f"SELECT j.value FROM {C} c, json_each_text(row_to_json(c)) j WHERE c.id = 1",
    f"SELECT j.* FROM {C} c, jsonb_each_text(to_jsonb(c)) j WHERE c.id = 1",
    f"SELECT x.m FROM {C} c CROSS JOIN LATERAL (SELECT c.id_card) x(m) WHERE c.id = 1",
    f"SELECT city, mobile FROM {C} {ONE} GROUP BY GROUPING SETS ((city), (mobile))",
    f"SELECT s FROM {C} c, regexp_split_to_table(c.mobile, '') s WHERE c.id = 1",
    f"SELECT x FROM {C} c, unnest(ARRAY[c.name, c.email]) AS u(x) WHERE c.id = 1",
    f"SELECT translate(mobile, '0', 'o'), overlay(id_card placing 'x' from 1 for 0) FROM {C} {ONE}",
    f"SELECT encode(convert_to(mobile, 'UTF8'), 'base64'), decode(encode(name::bytea, 'hex'), 'hex') FROM {C} {ONE}",
    f"SELECT sha256(id_card::bytea), md5(email), lpad(address, 60, '*') FROM {C} {ONE}",
    f"SELECT mobile::text[], ARRAY[id_card]::text, mobile::char(20), id_card::numeric FROM {C} {ONE}",
    f"SELECT CAST(name AS int) FROM {C} {ONE}",
    f"SELECT id FROM {C} {ONE} AND name::json IS NOT NULL",
    f"SELECT id FROM {C} {ONE} AND email::regclass IS NOT NULL",
    f"EXPLAIN ANALYZE SELECT CAST(name AS int) FROM {C} {ONE}",
    f"EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT id_card::uuid FROM {C} {ONE}",
    f"EXPLAIN (ANALYZE, VERBOSE) SELECT mobile FROM {C} {ONE}",
    f"SELECT pg_notify('ch', mobile) FROM {C} {ONE}",
    f"SELECT set_config('bypass.v', (SELECT mobile FROM {C} {ONE}), false)",
    "SELECT current_setting('bypass.v', true)",
    f"SELECT * FROM (VALUES ((SELECT id_card FROM {C} {ONE}))) v(a)",
    f"WITH RECURSIVE r(n, m) AS (SELECT 1, mobile FROM {C} {ONE} UNION ALL SELECT n + 1, m FROM r WHERE n < 2) "
    "SELECT m FROM r",
    f"SELECT id FROM {C} c WHERE c.id = 1 AND row_to_json(c)::text LIKE '%1%'",
    f"SELECT id FROM {C} c WHERE c.id = 1 AND to_jsonb(c) ? 'mobile'",
    f"SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY mobile), mode() WITHIN GROUP (ORDER BY name) FROM {C} {ONE}",
    f"SELECT (array_agg(id_card))[1], max(email) FILTER (WHERE id = 1) FROM {C} {ONE}",
    "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE tablename = 'customers'",
    f"SELECT query_to_xml('SELECT mobile FROM {C} {ONE}', true, true, '')",
    f"SELECT table_to_xml('{C}', true, true, '')",
    f"SELECT xmlforest(mobile), xmlelement(name x, id_card) FROM {C} {ONE}",
    f"SELECT format('%s-%s', mobile, name), concat_ws(',', email, address) FROM {C} {ONE}",
    f"SELECT $x$a$x$ || mobile FROM {C} {ONE}",
    f'SELECT U&"\\0069d_card", "customers"."mobile" FROM "public"."customers" {ONE}',
    f"SELECT id FROM {C} {ONE}; SELECT name FROM {C} {ONE}",
    f"TABLE {C}",
    f"COPY (SELECT x FROM (SELECT mobile AS x FROM {C} {ONE}) d) TO STDOUT",
    f"CREATE TEMP TABLE tmp_b AS SELECT mobile FROM {C} {ONE}",
    "SELECT * FROM tmp_b",
    f"PREPARE p9 AS SELECT lpad(id_card, 30) FROM {C} {ONE}",
    "EXECUTE p9",
)

PG_REFUSED: tuple[str, ...] = (
    f"SELECT count(CASE WHEN name LIKE '%' THEN 1 END) FROM {C}",
    f"EXPLAIN ANALYZE SELECT CAST(name AS int) FROM {C} {ONE}",
    f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT name::json FROM {C} {ONE}",
    f"EXPLAIN (ANALYSE true) SELECT to_number(id_card, '9') FROM {C} {ONE}",
)


@pytest.fixture(scope="module")
def proxy(
    sample_bank: LoadedBank,
    mariadb_server: ServerInfo,
    postgres_server: ServerInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MaskingProxy]:
    yield from run_masking_proxy(tmp_path_factory.mktemp("bypass"), postgres=postgres_server, mariadb=mariadb_server)


def _values(bank: LoadedBank) -> tuple[str, ...]:
    return bank.canary.sensitive_values() + hidden_parts(bank.canary)


# -- MariaDB ------------------------------------------------------------------------------


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


def _mysql_text(port: int, person: str) -> list[str]:
    errors: list[str] = []
    conn = _pymysql(port, person, client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        with conn.cursor() as cur:
            for sql in MYSQL_VARIANTS:
                try:
                    cur.execute(sql)
                    cur.fetchall()
                    while cur.nextset():
                        cur.fetchall()
                except pymysql.MySQLError as exc:
                    errors.append(str(exc))
    finally:
        conn.close()
    return errors


def _mysql_binary(port: int, person: str) -> None:
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
        for sql in MYSQL_VARIANTS:
            if ";" in sql or sql.startswith(("HANDLER", "SET", "PREPARE", "EXECUTE")):
                continue  # not preparable in the binary protocol
            try:
                cur = conn.cursor(prepared=True)
                for _ in range(2):  # executed twice: the prepared statement is reused
                    cur.execute(sql)
                    cur.fetchall()
                cur.close()
            except mysql.connector.Error:
                pass  # refused or failed: the relay has recorded whatever the proxy sent
    finally:
        conn.close()


def test_mysql_variants_leak_no_canary(proxy: MaskingProxy, sample_bank: LoadedBank) -> None:
    relay = RecordingRelay(proxy.ports["my"])
    try:
        errors = _mysql_text(relay.port, "dev")
        _mysql_binary(relay.port, "dev")
        wire = relay.received()
    finally:
        relay.close()
    assert len(wire) > 5_000, "the statements produced traffic"
    assert find_leaks(wire, _values(sample_bank)) == []
    assert find_leaks("\n".join(errors).encode(), _values(sample_bank)) == []
    assert any("sqlbastion:" in e for e in errors)


@pytest.mark.parametrize("sql", MYSQL_REFUSED)
def test_mysql_closed_classes_are_refused_by_the_proxy(proxy: MaskingProxy, sql: str) -> None:
    conn = _pymysql(proxy.ports["my"], "dev")
    try:
        with conn.cursor() as cur:
            if "@n" in sql and not sql.startswith("SET"):
                cur.execute("SET @n = '13800138000'")  # an allowed string value; the use is still refused
            with pytest.raises(pymysql.MySQLError) as info:
                cur.execute(sql)  # pymysql reads the whole reply (or its error) in execute
            assert "sqlbastion:" in str(info.value), info.value
            cur.execute("SELECT 1")  # the connection stays usable
            assert cur.fetchall() == ((1,),)
    finally:
        conn.close()


def test_mysql_string_lookup_still_works(proxy: MaskingProxy, sample_bank: LoadedBank) -> None:
    conn = _pymysql(proxy.ports["my"], "dev")
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id FROM {C} WHERE mobile = %s", (sample_bank.canary.mobile,))
            assert cur.fetchall() == ((1,),)
    finally:
        conn.close()


# -- PostgreSQL ---------------------------------------------------------------------------


def _dsn(port: int, person: str) -> str:
    return f"host=127.0.0.1 port={port} user={person} password={PASSWORDS[person]} dbname=bank sslmode=disable"


def _pg_extended(port: int, person: str, *, binary: bool) -> list[str]:
    errors: list[str] = []
    with psycopg.connect(_dsn(port, person), autocommit=True, connect_timeout=10) as conn:
        for sql in PG_VARIANTS:
            if ";" in sql:
                continue  # several statements need the simple query protocol (psql covers them)
            try:
                if sql.startswith("COPY"):
                    with conn.cursor() as cur, cur.copy(sql.encode()) as copy:
                        for _ in copy:
                            pass
                    continue
                with conn.cursor(binary=binary) as cur:
                    cur.execute(sql.encode())
                    if cur.description is not None:
                        cur.fetchall()
            except psycopg.Error as exc:
                errors.append(str(exc))
    return errors


def _pg_simple(port: int, person: str, directory: Path) -> str:
    psql = next((str(p) for p in (Path("/usr/lib/postgresql/15/bin/psql"), Path("/usr/bin/psql")) if p.exists()), None)
    assert psql is not None, "psql is installed with PostgreSQL 15"
    script = directory / f"bypass-{person}.sql"
    script.write_text("\n".join(s + ";" for s in PG_VARIANTS) + "\n", encoding="utf-8")
    env = dict(os.environ, PGPASSWORD=PASSWORDS[person], PGCONNECT_TIMEOUT="10", PGSSLMODE="disable")
    flags = ("-f", str(script))
    out = subprocess.run(
        [psql, "-X", "-h", "127.0.0.1", "-p", str(port), "-U", person, "-d", "bank", "-v", "ON_ERROR_STOP=0", *flags],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")


def test_postgres_variants_leak_no_canary(proxy: MaskingProxy, sample_bank: LoadedBank, tmp_path: Path) -> None:
    relay = RecordingRelay(proxy.ports["pg"])
    try:
        errors = _pg_extended(relay.port, "dev", binary=False)
        errors += _pg_extended(relay.port, "dev", binary=True)
        printed = _pg_simple(relay.port, "dev", tmp_path)
        wire = relay.received()
    finally:
        relay.close()
    assert len(wire) > 5_000, "the statements produced traffic"
    assert find_leaks(wire, _values(sample_bank)) == []
    assert find_leaks((printed + "\n".join(errors)).encode(), _values(sample_bank)) == []
    assert any("sqlbastion:" in e for e in errors)


@pytest.mark.parametrize("sql", PG_REFUSED)
def test_postgres_closed_classes_are_refused_by_the_proxy(proxy: MaskingProxy, sql: str) -> None:
    with psycopg.connect(_dsn(proxy.ports["pg"], "dev"), autocommit=True, connect_timeout=10) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute(sql.encode())
        assert "sqlbastion:" in str(info.value)
        assert conn.execute(b"SELECT 1").fetchone() == (1,)
