"""The sample bank: a deterministic dataset of customers, accounts and transactions.

The demo and the integration tests load it into MariaDB (database ``bank``) and
PostgreSQL (database ``bank``, schema ``public``). The same seed and scale give
the same rows, byte for byte, on every machine, so tests can name values.

Sizes at scale 1: 10,000 customers, 20,000 accounts, 70,000 transactions. Every
customer has at least one account; about 4% have no e-mail address (NULL), so
masking meets NULLs in a sensitive column. Customer 1 and account 1 are the *canary*:
fixed, distinctive values (``CANARY``) that masking tests search for in
everything a client could see; no generated row repeats any of them.

Loading is fast on purpose: multi-row INSERTs for MariaDB (rows rendered as
literals into statements of about a million characters; no LOCAL INFILE, which
the servers do not need to allow) and binary COPY for PostgreSQL
(asyncpg ``copy_records_to_table``). Loading drops and recreates the database,
so tests that change rows must use their own tables or roll back.

Command line::

    python -m sqlbastion.devtools.sample_bank --servers var/servers/servers.json
    python -m sqlbastion.devtools.sample_bank --mariadb 127.0.0.1:3306 --postgres 127.0.0.1:5432 \\
        --user bastion_admin --password-env BANK_LOADER_PASSWORD [--scale 0.1] [--seed 20240601]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql

from sqlbastion.devtools.fakedata import (
    BANK_BINS,
    REGIONS,
    PersonFaker,
    Region,
    id_card_check_char,
    luhn_check_digit,
)
from sqlbastion.devtools.servers import ServerInfo

__all__ = [
    "CANARY",
    "COLUMNS",
    "DEFAULT_DATABASE",
    "DEFAULT_SEED",
    "BankData",
    "CanaryRow",
    "LoadedBank",
    "generate",
    "load_mariadb",
    "load_postgres",
    "load_postgres_async",
    "load_servers",
    "mysql_literal",
]

DEFAULT_SEED = 20240601
DEFAULT_DATABASE = "bank"
CUSTOMERS_PER_SCALE = 10_000
ACCOUNTS_PER_CUSTOMER = 2
TRANSACTIONS_PER_CUSTOMER = 7
NO_EMAIL_SHARE = 0.04  # customers without an e-mail address (NULL)
# Generation holds every row in memory (about 45 MB per 100k rows), so the scale
# stops at 2 million rows; larger benchmarks want a streaming generator.
MAX_SCALE = 20.0

Row = tuple[Any, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class CanaryRow:
    """Customer 1 and its account 1: known, distinctive values tests can search for."""

    customer_id: int
    account_id: int
    name: str
    id_card: str
    mobile: str
    email: str
    address: str
    birth_date: date
    gender: str
    city: str
    card_no: str

    def sensitive_values(self) -> tuple[str, ...]:
        """The values that must never reach a person whose role masks them (for leak searches)."""
        return (self.name, self.id_card, self.mobile, self.email, self.address, self.card_no)


def _canary() -> CanaryRow:
    # 上官 is a compound surname, so the canary also exercises name masking's
    # compound-surname handling. The values are valid but match no generated row.
    id_body = "44030519870721248"  # 南山区, 1987-07-21, sequence 248 (even: female)
    card_body = "622202075520260521"  # 中国工商银行 BIN, 19 digits with the check digit
    return CanaryRow(
        customer_id=1,
        account_id=1,
        name="上官婉清",
        id_card=id_body + id_card_check_char(id_body),
        mobile="13923572468",
        email="shangguan.wanqing@163.com",
        address="广东省深圳市南山区科技路88号御景园8栋2单元1808室",  # generated rooms end in 1-4: never this one
        birth_date=date(1987, 7, 21),
        gender="F",
        city="深圳市",
        card_no=card_body + luhn_check_digit(card_body),
    )


CANARY = _canary()

# Column order of the rows below and of the tables (the contract in the docs).
COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": (
        "id",
        "name",
        "id_card",
        "mobile",
        "email",
        "address",
        "birth_date",
        "gender",
        "city",
        "created_at",
    ),
    "accounts": ("id", "customer_id", "card_no", "account_type", "balance", "opened_at", "status", "branch"),
    "transactions": (
        "id",
        "account_id",
        "amount",
        "currency",
        "tx_time",
        "channel",
        "counterparty_name",
        "counterparty_card",
        "memo",
    ),
}

# The same types in both dialects; TIMESTAMP is MariaDB's TIMESTAMP and
# PostgreSQL's timestamp without time zone. Secondary indexes support the joins
# the demo shows; there are no foreign keys so tests may delete freely in copies.
_DDL_COMMON = {
    "customers": """(
  id BIGINT PRIMARY KEY,
  name VARCHAR(64) NOT NULL,
  id_card CHAR(18) NOT NULL,
  mobile CHAR(11) NOT NULL,
  email VARCHAR(128),
  address VARCHAR(255) NOT NULL,
  birth_date DATE NOT NULL,
  gender CHAR(1) NOT NULL,
  city VARCHAR(32) NOT NULL,
  created_at TIMESTAMP NULL
)""",
    "accounts": """(
  id BIGINT PRIMARY KEY,
  customer_id BIGINT NOT NULL,
  card_no VARCHAR(19) NOT NULL,
  account_type VARCHAR(16) NOT NULL,
  balance DECIMAL(18,2) NOT NULL,
  opened_at DATE NOT NULL,
  status VARCHAR(8) NOT NULL,
  branch VARCHAR(64) NOT NULL
)""",
    "transactions": """(
  id BIGINT PRIMARY KEY,
  account_id BIGINT NOT NULL,
  amount DECIMAL(18,2) NOT NULL,
  currency CHAR(3) NOT NULL,
  tx_time TIMESTAMP NULL,
  channel VARCHAR(16) NOT NULL,
  counterparty_name VARCHAR(64),
  counterparty_card VARCHAR(19),
  memo VARCHAR(128)
)""",
}
_INDEXES = (
    ("accounts", "idx_accounts_customer", "customer_id"),
    ("transactions", "idx_transactions_account", "account_id"),
    ("transactions", "idx_transactions_time", "tx_time"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class BankData:
    """Generated rows, in ``COLUMNS`` order, ready for either loader."""

    seed: int
    scale: float
    customers: list[Row]
    accounts: list[Row]
    transactions: list[Row]
    canary: CanaryRow

    def rows(self, table: str) -> list[Row]:
        rows: list[Row] = getattr(self, table)
        return rows


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadedBank:
    """What the ``sample_bank`` fixture returns: where the bank is and what is in it."""

    database: str
    customers: int
    accounts: int
    transactions: int
    canary: CanaryRow
    seed: int = DEFAULT_SEED
    scale: float = 1.0
    schema: str = "public"  # PostgreSQL schema of the tables
    customer_without_email: int = 0  # the lowest customer id whose email is NULL (0: none at this scale)
    customer_with_rare_name: int = 0  # the lowest customer id whose name has a character outside the BMP

    @property
    def rows(self) -> int:
        return self.customers + self.accounts + self.transactions


# -- generation -----------------------------------------------------------------


class _Weighted:
    """A weighted choice with its cumulative weights computed once (choices() is hot here)."""

    def __init__(self, table: tuple[tuple[str, int], ...]) -> None:
        self.values = [v for v, _ in table]
        self.cumulative = list(itertools.accumulate(w for _, w in table))

    def __call__(self, rng: random.Random) -> str:
        return rng.choices(self.values, cum_weights=self.cumulative)[0]


_ACCOUNT_TYPE = _Weighted((("debit", 55), ("credit", 20), ("savings", 15), ("fixed", 10)))
_STATUS = _Weighted((("active", 90), ("dormant", 5), ("frozen", 3), ("closed", 2)))
_CURRENCY = _Weighted((("CNY", 95), ("USD", 3), ("HKD", 1), ("EUR", 1)))
_MERCHANTS = (
    ("美团外卖", "餐饮", "wechat"),
    ("京东商城", "网购", "online"),
    ("拼多多", "网购", "mobile"),
    ("中国石化加油站", "加油", "pos"),
    ("星巴克咖啡", "餐饮", "alipay"),
    ("国家电网", "电费", "mobile"),
    ("滴滴出行", "交通", "alipay"),
    ("盒马鲜生", "超市购物", "pos"),
    ("携程旅行", "机票酒店", "online"),
    ("中国移动", "话费充值", "mobile"),
    ("沃尔玛超市", "超市购物", "pos"),
    ("自来水公司", "水费", "online"),
)
# Memos a person typed: about 1% carry what text handling gets wrong (4-byte
# UTF-8, quotes, backslashes, SQL comment markers, % and _, tabs, line breaks).
_AWKWARD_MEMOS = (
    "生日快乐🎂🎉",
    "AA制 'dinner' 分摊",
    'say "hi" 转账',
    "报销 C:\\票据\\2025",
    "定金 50% 余款_尾款",
    "房租 -- 三月 /* 押一付三 */",
    "第一行\n第二行",
    "tab\t分隔",
    "𠮷野家 午餐",
)
AWKWARD_MEMO_SHARE = 0.01
_TRANSFER_MEMOS = ("转账", "房租", "生活费", "还款", "红包", "借款", "货款", "学费")
_EMPLOYERS = ("腾云科技有限公司", "华信证券股份有限公司", "长江制造集团", "东方物流有限公司", "市第一人民医院")
_CREATED_FROM = datetime(2012, 1, 1)
_CREATED_TO = datetime(2025, 6, 30, 23, 59, 59)
_TX_FROM = datetime(2024, 1, 1)
_TX_TO = datetime(2025, 10, 31, 23, 59, 59)


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    seconds = max(0, int((end - start).total_seconds()))
    return start + timedelta(seconds=rng.randrange(seconds + 1))


def _branch(bank: str, person_home: str, district: str) -> str:
    return f"{bank}{person_home.removesuffix('市')}{district.removesuffix('区')}支行"


def _reserved() -> frozenset[str]:
    return frozenset({CANARY.name, CANARY.id_card, CANARY.mobile, CANARY.email, CANARY.card_no})


def _customers(rng: random.Random, faker: PersonFaker, count: int) -> tuple[list[Row], list[Region]]:
    """Customer rows, and where each customer lives (their accounts are opened at a branch there)."""
    rows: list[Row] = []
    c = CANARY
    homes = [next(r for r in REGIONS if r.code == c.id_card[:6])]
    rows.append(
        (1, c.name, c.id_card, c.mobile, c.email, c.address, c.birth_date, c.gender, c.city, datetime(2016, 3, 8, 10))
    )
    for cid in range(2, count + 1):
        p = faker.person()
        adult = datetime(p.birth_date.year + 18, p.birth_date.month, min(p.birth_date.day, 28))
        created = _between(rng, max(_CREATED_FROM, adult), _CREATED_TO)
        # Some customers gave no e-mail address: NULLs in a sensitive column are
        # what masking must pass through untouched (and MySQL's NULL bitmap carries).
        email = None if rng.random() < NO_EMAIL_SHARE else p.email
        rows.append((cid, p.name, p.id_card, p.mobile, email, p.address, p.birth_date, p.gender, p.home.city, created))
        homes.append(p.home)
    return rows, homes


def _accounts(
    rng: random.Random, faker: PersonFaker, customers: list[Row], homes: list[Region], count: int
) -> list[Row]:
    canary_region = homes[0]
    canary_branch = _branch("中国工商银行", canary_region.city, canary_region.district)
    rows: list[Row] = [(1, 1, CANARY.card_no, "debit", Decimal("88888.88"), date(2016, 3, 8), "active", canary_branch)]
    n_customers = len(customers)
    for aid in range(2, count + 1):
        # The first accounts give every customer one; the rest go to random customers.
        cid = aid if aid <= n_customers else rng.randrange(1, n_customers + 1)
        customer = customers[cid - 1]
        bin_ = rng.choice(BANK_BINS)
        kind = _ACCOUNT_TYPE(rng)
        if kind == "credit":
            balance = -round(rng.uniform(0, 50_000), 2) if rng.random() < 0.6 else 0.0
        elif kind == "fixed":
            balance = round(rng.choice((10_000, 50_000, 100_000, 200_000, 500_000)) * rng.uniform(1.0, 1.2), 2)
        else:
            balance = round(min(rng.lognormvariate(9.0, 1.6), 50_000_000.0), 2)
        opened = _between(rng, customer[9], _CREATED_TO).date()
        region = homes[cid - 1]
        rows.append(
            (
                aid,
                cid,
                faker.bank_card(bin_),
                kind,
                Decimal(f"{balance:.2f}"),
                opened,
                _STATUS(rng),
                _branch(bin_.bank, region.city, region.district),
            )
        )
    return rows


def _transactions(
    rng: random.Random, faker: PersonFaker, customers: list[Row], accounts: list[Row], count: int
) -> list[Row]:
    rows: list[Row] = []
    n_accounts = len(accounts)
    for tid in range(1, count + 1):
        account = accounts[rng.randrange(n_accounts)]
        opened = datetime.combine(account[5], datetime.min.time())
        when = _between(rng, max(_TX_FROM, opened), _TX_TO)
        currency = _CURRENCY(rng)
        roll = rng.random()
        cp_card: str | None = None
        if roll < 0.55:
            merchant, memo, channel = rng.choice(_MERCHANTS)
            cp_name: str = merchant
            amount = -max(0.01, round(rng.lognormvariate(4.5, 1.1), 2))  # never a zero amount
        elif roll < 0.9:
            if rng.random() < 0.5:
                other = accounts[rng.randrange(n_accounts)]
                cp_card = other[2]
                cp_name = customers[other[1] - 1][1]  # a transfer to another customer of the bank
            else:
                cp_name = faker.name("M" if rng.random() < 0.5 else "F")[0]
                cp_card = faker.bank_card()
            memo = rng.choice(_TRANSFER_MEMOS)
            channel = rng.choice(("mobile", "online", "counter", "atm"))
            amount = max(0.01, round(rng.lognormvariate(6.5, 1.3), 2)) * (1 if rng.random() < 0.45 else -1)
        else:
            cp_name = rng.choice(_EMPLOYERS)
            memo = "工资"
            channel = "online"
            amount = round(rng.uniform(4_000, 60_000), 2)
        if rng.random() < AWKWARD_MEMO_SHARE:
            memo = rng.choice(_AWKWARD_MEMOS)
        rows.append((tid, account[0], Decimal(f"{amount:.2f}"), currency, when, channel, cp_name, cp_card, memo))
    return rows


def generate(*, seed: int = DEFAULT_SEED, scale: float = 1.0) -> BankData:
    """The whole dataset for ``seed`` at ``scale`` (1.0 ≈ 100k rows). Pure and deterministic."""
    if not 0 < scale <= MAX_SCALE:
        raise ValueError(f"scale must be in (0, {MAX_SCALE}]")
    n_customers = max(2, round(CUSTOMERS_PER_SCALE * scale))
    # One random stream per table, so a change to how transactions are drawn
    # leaves customers and accounts as they were (string seeds hash stably).
    faker = PersonFaker(random.Random(f"{seed}:people"), reserved=_reserved())
    customers, homes = _customers(random.Random(f"{seed}:customers"), faker, n_customers)
    accounts = _accounts(
        random.Random(f"{seed}:accounts"), faker, customers, homes, n_customers * ACCOUNTS_PER_CUSTOMER
    )
    transactions = _transactions(
        random.Random(f"{seed}:transactions"), faker, customers, accounts, n_customers * TRANSACTIONS_PER_CUSTOMER
    )
    return BankData(
        seed=seed, scale=scale, customers=customers, accounts=accounts, transactions=transactions, canary=CANARY
    )


def _loaded(data: BankData, database: str) -> LoadedBank:
    return LoadedBank(
        database=database,
        customers=len(data.customers),
        accounts=len(data.accounts),
        transactions=len(data.transactions),
        canary=data.canary,
        seed=data.seed,
        scale=data.scale,
        customer_without_email=next((r[0] for r in data.customers if r[4] is None), 0),
        customer_with_rare_name=next((r[0] for r in data.customers if max(r[1]) > "\uffff"), 0),
    )


def _check_identifier(database: str) -> str:
    # The name is spliced into DDL (it cannot be a bound parameter), so only
    # plain identifiers are accepted.
    if not database.replace("_", "").isalnum() or not database.isascii() or len(database) > 63:
        raise ValueError(f"database name {database!r} must be ASCII letters, digits or '_'")
    return database


# -- MariaDB ----------------------------------------------------------------------

# Multi-row INSERTs of about a million characters (at most 4 MB of UTF-8): below
# any server's max_allowed_packet (16 MB by default), large enough that
# per-statement costs vanish.
_INSERT_STATEMENT_CHARS = 1 << 20

# Escaping of a string literal for MySQL with NO_BACKSLASH_ESCAPES off (the session
# mode is set below), as mysql_real_escape_string does: NUL, LF, CR, Ctrl-Z, quotes
# and the backslash itself (MySQL Reference Manual, "String Literals", the table of
# special character escape sequences; MariaDB's is the same). The text is UTF-8 and the connection charset utf8mb4,
# so no multi-byte sequence can end in a byte that looks like a quote.
_MYSQL_ESCAPES = str.maketrans(
    {"\0": "\\0", "\n": "\\n", "\r": "\\r", "\x1a": "\\Z", "'": "\\'", '"': '\\"', "\\": "\\\\"}
)


def mysql_literal(value: object) -> str:
    """``value`` (None, str, int, Decimal, date, datetime) as a MySQL SQL literal.

    Rendered here rather than by pymysql's per-value escaping, which took most of
    the load time; the round-trip tests compare every stored value with the data.
    """
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.translate(_MYSQL_ESCAPES) + "'"
    if isinstance(value, bool):
        raise TypeError("booleans are not part of the sample bank")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite decimal: {value}")
        return format(value, "f")
    if isinstance(value, datetime):  # before date: a datetime is a date
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"'{value.isoformat()}'"
    raise TypeError(f"cannot render {type(value).__name__} as a MySQL literal")


def _insert_statements(table: str, rows: Sequence[Row]) -> Iterator[str]:
    head = f"INSERT INTO `{table}` ({', '.join(COLUMNS[table])}) VALUES "  # noqa: S608  constant names
    parts: list[str] = []
    size = len(head)
    for row in rows:
        text = "(" + ",".join(map(mysql_literal, row)) + ")"
        if parts and size + len(text) + 1 > _INSERT_STATEMENT_CHARS:
            yield head + ",".join(parts)
            parts, size = [], len(head)
        parts.append(text)
        size += len(text) + 1
    if parts:
        yield head + ",".join(parts)


def load_mariadb(
    data: BankData, *, host: str, port: int, user: str, password: str, database: str = DEFAULT_DATABASE
) -> LoadedBank:
    """Drop and recreate ``database`` on a MariaDB/MySQL server and load ``data`` into it."""
    db = _check_identifier(database)
    conn = pymysql.connect(
        host=host, port=port, user=user, password=password, charset="utf8mb4", autocommit=True, connect_timeout=10
    )
    try:
        with conn.cursor() as cur:
            # A known mode whatever the server's default: strict, so a value too long for its
            # column is an error rather than a silent cut, and none of the modes that change
            # lexing (ANSI_QUOTES, NO_BACKSLASH_ESCAPES, PIPES_AS_CONCAT).
            cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
            cur.execute(f"USE `{db}`")
            for table, body in _DDL_COMMON.items():
                cur.execute(f"CREATE TABLE `{table}` {body} ENGINE=InnoDB")
            conn.autocommit(False)
            for table in COLUMNS:
                for statement in _insert_statements(table, data.rows(table)):
                    cur.execute(statement)
            conn.commit()
            conn.autocommit(True)
            for table, index, column in _INDEXES:
                cur.execute(f"CREATE INDEX `{index}` ON `{table}` ({column})")
            cur.execute("ANALYZE TABLE customers, accounts, transactions")
            cur.fetchall()
    finally:
        conn.close()
    return _loaded(data, db)


# -- PostgreSQL -------------------------------------------------------------------


async def load_postgres_async(
    data: BankData, *, host: str, port: int, user: str, password: str, database: str = DEFAULT_DATABASE
) -> LoadedBank:
    """Drop and recreate ``database`` on a PostgreSQL server and COPY ``data`` into schema ``public``."""
    import asyncpg

    db = _check_identifier(database)
    admin = await asyncpg.connect(host=host, port=port, user=user, password=password, database="postgres", timeout=10)
    try:
        # WITH (FORCE) (PostgreSQL 13+) ends sessions left over from earlier runs.
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.execute(f"CREATE DATABASE \"{db}\" ENCODING 'UTF8' TEMPLATE template0")
    finally:
        await admin.close()
    conn = await asyncpg.connect(host=host, port=port, user=user, password=password, database=db, timeout=10)
    try:
        async with conn.transaction():
            for table, body in _DDL_COMMON.items():
                await conn.execute(f"CREATE TABLE public.{table} {body}")
            for table, cols in COLUMNS.items():
                await conn.copy_records_to_table(
                    table, records=data.rows(table), columns=list(cols), schema_name="public"
                )
            for table, index, column in _INDEXES:
                await conn.execute(f"CREATE INDEX {index} ON public.{table} ({column})")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return _loaded(data, db)


def load_postgres(
    data: BankData, *, host: str, port: int, user: str, password: str, database: str = DEFAULT_DATABASE
) -> LoadedBank:
    """Synchronous ``load_postgres_async`` on a private event loop.

    A private loop (never installed as the thread's current loop) keeps this
    usable from synchronous pytest fixtures while pytest-asyncio owns the loop.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(
            load_postgres_async(data, host=host, port=port, user=user, password=password, database=database)
        )
    finally:
        loop.close()


# -- both servers -------------------------------------------------------------------


def load_servers(
    *,
    mariadb: ServerInfo | None,
    postgres: ServerInfo | None,
    seed: int = DEFAULT_SEED,
    scale: float = 1.0,
    database: str = DEFAULT_DATABASE,
    data: BankData | None = None,
) -> LoadedBank:
    """Generate once and load into both servers at the same time (as their admin accounts)."""
    data = data or generate(seed=seed, scale=scale)
    jobs: list[Callable[[], LoadedBank]] = []
    if mariadb is not None:
        m = mariadb
        jobs.append(
            lambda: load_mariadb(
                data, host=m.host, port=m.port, user=m.admin_user, password=m.admin_password, database=database
            )
        )
    if postgres is not None:
        p = postgres
        jobs.append(
            lambda: load_postgres(
                data, host=p.host, port=p.port, user=p.admin_user, password=p.admin_password, database=database
            )
        )
    results: list[LoadedBank | BaseException] = [_loaded(data, database)] * len(jobs)

    def run(i: int, job: Callable[[], LoadedBank]) -> None:
        try:
            results[i] = job()
        except BaseException as exc:  # handed to the caller below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, j), name=f"sample-bank-{i}") for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return _loaded(data, database)


# -- command line --------------------------------------------------------------------


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} must look like HOST:PORT")
    return host or "127.0.0.1", int(port)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sqlbastion.devtools.sample_bank",
        description="Generate the sample bank and load it into MariaDB and/or PostgreSQL (database 'bank').",
    )
    parser.add_argument("--servers", help="servers.json written by 'python -m sqlbastion.devtools.servers start'")
    parser.add_argument("--mariadb", type=_hostport, metavar="HOST:PORT", help="a MariaDB/MySQL server")
    parser.add_argument("--postgres", type=_hostport, metavar="HOST:PORT", help="a PostgreSQL server")
    parser.add_argument("--user", help="account that may create databases (with --mariadb/--postgres)")
    parser.add_argument("--password-env", metavar="VAR", help="environment variable holding that account's password")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="database name (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 10k customers, ~100k rows (default: 1.0)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)

    mariadb: ServerInfo | None = None
    postgres: ServerInfo | None = None
    if args.servers:
        known = json.loads(Path(args.servers).read_text())
        mariadb = ServerInfo(**known["mariadb"]) if "mariadb" in known else None
        postgres = ServerInfo(**known["postgres"]) if "postgres" in known else None
    if args.mariadb or args.postgres:
        if not args.user or not args.password_env:
            parser.error("--mariadb/--postgres need --user and --password-env")
        password = os.environ.get(args.password_env)
        if password is None:
            parser.error(f"environment variable {args.password_env} is not set")

        def info(kind: str, where: tuple[str, int]) -> ServerInfo:
            return ServerInfo(
                kind=kind,
                host=where[0],
                port=where[1],
                directory="",
                pid=0,
                admin_user=args.user,
                admin_password=password,
                service_user="",
                service_password="",
                socket="",
            )

        mariadb = info("mariadb", args.mariadb) if args.mariadb else mariadb
        postgres = info("postgres", args.postgres) if args.postgres else postgres
    if mariadb is None and postgres is None:
        parser.error("name the servers: --servers FILE, or --mariadb/--postgres HOST:PORT")
    started = time.monotonic()
    try:
        bank = load_servers(
            mariadb=mariadb, postgres=postgres, seed=args.seed, scale=args.scale, database=args.database
        )
    except (ValueError, OSError, pymysql.MySQLError) as exc:
        sys.stderr.write(f"sample_bank: {exc}\n")
        return 1
    except Exception as exc:  # asyncpg's errors have no common importable base here
        sys.stderr.write(f"sample_bank: {type(exc).__name__}: {exc}\n")
        return 1
    where = ", ".join(f"{s.kind} {s.host}:{s.port}" for s in (mariadb, postgres) if s is not None)
    sys.stdout.write(
        f"sample bank loaded into {where}: database {bank.database}, {bank.customers} customers, "
        f"{bank.accounts} accounts, {bank.transactions} transactions ({time.monotonic() - started:.1f}s)\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
