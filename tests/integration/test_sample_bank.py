"""The sample bank loaded into real MariaDB and PostgreSQL servers: counts, round trip, validity."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import pymysql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.devtools.fakedata import (
    id_card_birth_date,
    id_card_gender,
    is_valid_address,
    is_valid_bank_card,
    is_valid_chinese_name,
    is_valid_email,
    is_valid_id_card,
    is_valid_mobile,
)
from sqlbastion.devtools.sample_bank import (
    COLUMNS,
    BankData,
    LoadedBank,
    _main,
    generate,
    load_mariadb,
    load_postgres_async,
    mysql_literal,
)
from sqlbastion.devtools.servers import ServerInfo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mysql_conn(mariadb_server: ServerInfo, sample_bank: LoadedBank) -> Iterator[pymysql.Connection[Any]]:
    conn = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.service_user,
        password=mariadb_server.service_password,
        database=sample_bank.database,
        charset="utf8mb4",
    )
    yield conn
    conn.close()


@pytest.fixture(scope="module")
async def pg_conn(postgres_server: ServerInfo, sample_bank: LoadedBank) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(
        host=postgres_server.host,
        port=postgres_server.port,
        user=postgres_server.service_user,
        password=postgres_server.service_password,
        database=sample_bank.database,
    )
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
def bank_data(sample_bank: LoadedBank) -> BankData:
    return generate(seed=sample_bank.seed, scale=sample_bank.scale)


def _mysql_rows(conn: pymysql.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_default_size_is_about_100k_rows(sample_bank: LoadedBank) -> None:
    assert (sample_bank.customers, sample_bank.accounts, sample_bank.transactions) == (10_000, 20_000, 70_000)
    assert sample_bank.rows == 100_000
    assert sample_bank.database == "bank"
    assert sample_bank.schema == "public"


def test_mariadb_row_counts(mysql_conn: pymysql.Connection[Any], sample_bank: LoadedBank) -> None:
    for table, expected in (
        ("customers", sample_bank.customers),
        ("accounts", sample_bank.accounts),
        ("transactions", sample_bank.transactions),
    ):
        assert _mysql_rows(mysql_conn, f"SELECT COUNT(*) FROM {table}") == [(expected,)]


async def test_postgres_row_counts(pg_conn: asyncpg.Connection, sample_bank: LoadedBank) -> None:
    for table, expected in (
        ("customers", sample_bank.customers),
        ("accounts", sample_bank.accounts),
        ("transactions", sample_bank.transactions),
    ):
        assert await pg_conn.fetchval(f"SELECT COUNT(*) FROM public.{table}") == expected


def test_mariadb_rows_round_trip_exactly(mysql_conn: pymysql.Connection[Any], bank_data: BankData) -> None:
    data = bank_data
    for table, cols in COLUMNS.items():
        stored = _mysql_rows(mysql_conn, f"SELECT {', '.join(cols)} FROM {table} ORDER BY id")
        assert stored == data.rows(table), table


async def test_postgres_rows_round_trip_exactly(pg_conn: asyncpg.Connection, bank_data: BankData) -> None:
    data = bank_data
    for table, cols in COLUMNS.items():
        stored = await pg_conn.fetch(f"SELECT {', '.join(cols)} FROM public.{table} ORDER BY id")
        assert [tuple(r) for r in stored] == data.rows(table), table


def test_every_stored_personal_value_validates(mysql_conn: pymysql.Connection[Any]) -> None:
    customers = _mysql_rows(
        mysql_conn, "SELECT name, id_card, mobile, email, address, birth_date, gender FROM customers"
    )
    for name, id_card, mobile, email, address, birth, gender in customers:
        assert is_valid_chinese_name(name), name
        assert is_valid_id_card(id_card, known_regions_only=True), id_card
        assert id_card_birth_date(id_card) == birth, id_card
        assert id_card_gender(id_card) == gender, id_card
        assert is_valid_mobile(mobile), mobile
        assert email is None or is_valid_email(email), email
        assert is_valid_address(address), address
    cards = _mysql_rows(mysql_conn, "SELECT card_no FROM accounts")
    assert all(is_valid_bank_card(c) for (c,) in cards)
    counterparties = _mysql_rows(
        mysql_conn, "SELECT counterparty_card FROM transactions WHERE counterparty_card IS NOT NULL"
    )
    assert len(counterparties) > 10_000
    assert all(is_valid_bank_card(c) for (c,) in counterparties)


async def test_postgres_values_validate_and_are_unique(pg_conn: asyncpg.Connection) -> None:
    rows = await pg_conn.fetch("SELECT id_card, mobile, email FROM customers")
    assert all(is_valid_id_card(r["id_card"]) and is_valid_mobile(r["mobile"]) for r in rows)
    for column in ("id_card", "mobile"):
        assert len({r[column] for r in rows}) == len(rows), column
    emails = [r["email"] for r in rows if r["email"] is not None]
    assert len(set(emails)) == len(emails)
    assert 0 < len(rows) - len(emails) < len(rows) // 10  # some customers have no e-mail (NULL)
    cards = await pg_conn.fetch("SELECT card_no FROM accounts")
    assert len({r["card_no"] for r in cards}) == len(cards)
    assert all(is_valid_bank_card(r["card_no"]) for r in cards)


def test_canary_is_customer_one_and_unique(mysql_conn: pymysql.Connection[Any], sample_bank: LoadedBank) -> None:
    c = sample_bank.canary
    assert _mysql_rows(mysql_conn, "SELECT name, id_card, mobile, email, address FROM customers WHERE id = 1") == [
        (c.name, c.id_card, c.mobile, c.email, c.address)
    ]
    assert _mysql_rows(mysql_conn, "SELECT customer_id, card_no FROM accounts WHERE id = 1") == [(1, c.card_no)]
    with mysql_conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM customers WHERE id_card = %s OR mobile = %s OR email = %s OR name = %s",
            (c.id_card, c.mobile, c.email, c.name),
        )
        assert cur.fetchone() == (1,)
        cur.execute("SELECT COUNT(*) FROM accounts WHERE card_no = %s", (c.card_no,))
        assert cur.fetchone() == (1,)


async def test_accounts_and_transactions_reference_existing_rows(pg_conn: asyncpg.Connection) -> None:
    orphans = await pg_conn.fetchval(
        "SELECT COUNT(*) FROM accounts a LEFT JOIN customers c ON c.id = a.customer_id WHERE c.id IS NULL"
    )
    assert orphans == 0
    orphans = await pg_conn.fetchval(
        "SELECT COUNT(*) FROM transactions t LEFT JOIN accounts a ON a.id = t.account_id WHERE a.id IS NULL"
    )
    assert orphans == 0
    no_account = await pg_conn.fetchval(
        "SELECT COUNT(*) FROM customers c WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.customer_id = c.id)"
    )
    assert no_account == 0
    before_opening = await pg_conn.fetchval(
        "SELECT COUNT(*) FROM transactions t JOIN accounts a ON a.id = t.account_id WHERE t.tx_time < a.opened_at"
    )
    assert before_opening == 0


async def test_reload_into_another_database_replaces_it(
    mariadb_server: ServerInfo, postgres_server: ServerInfo
) -> None:
    """Loading twice (a rerun against reused servers) replaces the database instead of failing."""
    small = generate(seed=7, scale=0.01)
    for _ in range(2):
        loaded = load_mariadb(
            small,
            host=mariadb_server.host,
            port=mariadb_server.port,
            user=mariadb_server.admin_user,
            password=mariadb_server.admin_password,
            database="bank_small",
        )
        pg_loaded = await load_postgres_async(
            small,
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.admin_user,
            password=postgres_server.admin_password,
            database="bank_small",
        )
        assert loaded == pg_loaded
        assert (loaded.customers, loaded.accounts, loaded.transactions) == (100, 200, 700)
    conn = await asyncpg.connect(
        host=postgres_server.host,
        port=postgres_server.port,
        user=postgres_server.admin_user,
        password=postgres_server.admin_password,
        database="bank_small",
    )
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM transactions") == 700
    finally:
        await conn.close()
        admin = await asyncpg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.admin_user,
            password=postgres_server.admin_password,
            database="postgres",
        )
        await admin.execute("DROP DATABASE bank_small WITH (FORCE)")
        await admin.close()
    m = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.admin_user,
        password=mariadb_server.admin_password,
    )
    with m.cursor() as cur:
        cur.execute("DROP DATABASE bank_small")
    m.close()


def test_mariadb_load_is_exact_whatever_the_server_sql_mode(mariadb_server: ServerInfo) -> None:
    """Backslashes and quotes in memos survive a server whose default sql_mode changes lexing."""
    data = generate(seed=11, scale=0.05)
    awkward = [r for r in data.transactions if "\\" in r[8] or "'" in r[8] or '"' in r[8]]
    assert awkward
    admin = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.admin_user,
        password=mariadb_server.admin_password,
        autocommit=True,
    )
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.sql_mode")
            (saved,) = cur.fetchone() or ("",)
            cur.execute("SET GLOBAL sql_mode = 'NO_BACKSLASH_ESCAPES,ANSI_QUOTES,PIPES_AS_CONCAT'")
        try:
            load_mariadb(
                data,
                host=mariadb_server.host,
                port=mariadb_server.port,
                user=mariadb_server.admin_user,
                password=mariadb_server.admin_password,
                database="bank_modes",
            )
        finally:
            with admin.cursor() as cur:
                cur.execute("SET GLOBAL sql_mode = %s", (saved,))
        with admin.cursor() as cur:
            cur.execute("SELECT id, memo FROM bank_modes.transactions ORDER BY id")
            stored = dict(cur.fetchall())
            cur.execute("DROP DATABASE bank_modes")
    finally:
        admin.close()
    for row in awkward:
        assert stored[row[0]] == row[8]


async def test_command_line_loads_both_servers(
    mariadb_server: ServerInfo, postgres_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mariadb_server.admin_user == postgres_server.admin_user
    monkeypatch.setenv("SQLBASTION_TEST_BANK_LOADER_PW", mariadb_server.admin_password)
    argv = [
        "--mariadb",
        f"{mariadb_server.host}:{mariadb_server.port}",
        "--postgres",
        f"{postgres_server.host}:{postgres_server.port}",
        "--user",
        mariadb_server.admin_user,
        "--password-env",
        "SQLBASTION_TEST_BANK_LOADER_PW",
        "--scale",
        "0.01",
        "--seed",
        "5",
        "--database",
        "bank_cli",
    ]
    assert _main(argv) == 0
    expected = generate(seed=5, scale=0.01)
    m = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.admin_user,
        password=mariadb_server.admin_password,
        database="bank_cli",
    )
    try:
        assert _mysql_rows(m, "SELECT COUNT(*) FROM transactions") == [(700,)]
        assert _mysql_rows(m, "SELECT id, name FROM customers ORDER BY id LIMIT 3") == [
            r[:2] for r in expected.customers[:3]
        ]
        with m.cursor() as cur:
            cur.execute("DROP DATABASE bank_cli")
    finally:
        m.close()
    conn = await asyncpg.connect(
        host=postgres_server.host,
        port=postgres_server.port,
        user=postgres_server.admin_user,
        password=postgres_server.admin_password,
        database="postgres",
    )
    try:
        assert await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'bank_cli'") == 1
        await conn.execute("DROP DATABASE bank_cli WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def scratch(mariadb_server: ServerInfo) -> Iterator[pymysql.Connection[Any]]:
    conn = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.admin_user,
        password=mariadb_server.admin_password,
        charset="utf8mb4",
        autocommit=True,
    )
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
        cur.execute("CREATE DATABASE IF NOT EXISTS bank_literals CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        cur.execute("CREATE TABLE IF NOT EXISTS bank_literals.t (id INT PRIMARY KEY, v VARCHAR(200), d DECIMAL(18,2))")
    yield conn
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE bank_literals")
    conn.close()


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60),
    amount=st.decimals(min_value=-(10**15), max_value=10**15, places=2, allow_nan=False),
)
def test_mysql_literals_round_trip_through_mariadb(
    scratch: pymysql.Connection[Any], text: str, amount: Decimal
) -> None:
    """Whatever the text (quotes, backslashes, NUL, Ctrl-Z, astral characters), the server stores it exactly."""
    with scratch.cursor() as cur:
        cur.execute("DELETE FROM bank_literals.t")
        cur.execute(f"INSERT INTO bank_literals.t VALUES (1, {mysql_literal(text)}, {mysql_literal(amount)})")
        cur.execute("SELECT v, d FROM bank_literals.t WHERE id = 1")
        assert cur.fetchone() == (text, amount)
