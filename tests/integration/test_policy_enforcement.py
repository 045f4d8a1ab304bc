"""The policy engine end to end, through both proxies, against real servers with the sample bank.

The proxy runs exactly as ``serve`` composes it (``build_runtime``: the policy
store over a policy file, catalogs loaded from the servers before the
listeners open). Checked: a developer's DROP TABLE is refused and the table is
still there; UPDATE … WHERE 1=1 is refused and no row changed; a column the
role was not granted is refused; a person outside their network or time
window can neither log in nor (after a reload narrows their network) run
statements; a reload with an invalid policy keeps the old one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pymysql
import pytest

from sqlbastion.config import loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.policies.store import PolicyStore
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

PASSWORDS = {
    "dev": "dev-pass-1",
    "analyst": "analyst-pass-1",
    "outsider": "outsider-pass-1",
    "night": "night-pass-1",
    "ops": "ops-pass-1",
    "solo": "solo-pass-1",
}
MY_ENV = "SQLBASTION_TEST_POLICY_MY_PW"
PG_ENV = "SQLBASTION_TEST_POLICY_PG_PW"
SCRATCH = "policy_scratch"

POLICY = """
[[persons]]
name = "dev"
roles = ["developer"]
networks = ["127.0.0.0/8", "::1/128"]

[[persons]]
name = "analyst"
roles = ["analyst"]

[[persons]]
name = "outsider"
roles = ["developer"]
networks = ["192.0.2.0/24"]

[[persons]]
name = "night"
roles = ["developer"]
# A window of one minute a week, far from the hour the tests run at.
time_windows = [{ days = "sun", start = "03:00", end = "03:01", tz = "Pacific/Kiritimati" }]

[[persons]]
name = "ops"
roles = ["ops"]

[[persons]]
name = "solo"
roles = ["developer"]
max_sessions = 1

[[roles]]
name = "ops"
grants = [{ actions = ["all"], objects = ["my:*", "pg:*"] }]
masks = { id_card = "clear", mobile = "clear" }
rule_overrides = { "HR-DDL-DROP" = "allow" }

[[roles]]
name = "developer"
grants = [{ actions = ["select", "insert", "update", "delete"], objects = ["my:bank.*", "pg:bank.public.*"] }]
masks = { id_card = "id_card", mobile = "mobile" }

[[roles]]
name = "analyst"
grants = [
  { actions = ["select"], objects = ["my:bank.customers.{id,name,city}", "pg:bank.public.customers.{id,name,city}"] },
]
masks = { id_card = "id_card", mobile = "mobile" }

[[classifications]]
objects = ["my:bank.customers.id_card", "pg:bank.public.customers.id_card"]
type = "id_card"
level = 4

[[classifications]]
objects = ["my:bank.customers.mobile", "pg:bank.public.customers.mobile"]
type = "mobile"
level = 3
"""


@dataclass
class Running:
    thread: ProxyThread
    directory: Path
    my_port: int
    pg_port: int
    mariadb: ServerInfo
    postgres: ServerInfo

    @property
    def store(self) -> PolicyStore:
        services = self.thread.services
        assert services is not None
        engine = services.runtime.engine
        assert isinstance(engine, PolicyStore)
        return engine

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

    def pg(self, person: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.pg_port,
            user=person,
            password=PASSWORDS[person],
            dbname="bank",
            sslmode="disable",
            connect_timeout=10,
            autocommit=True,
        )


def _scratch_tables(mariadb: ServerInfo, postgres: ServerInfo) -> None:
    conn = pymysql.connect(
        host=mariadb.host, port=mariadb.port, user=mariadb.admin_user, password=mariadb.admin_password, database="bank"
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {SCRATCH} (id INT PRIMARY KEY, status VARCHAR(8))")
            cur.execute(f"REPLACE INTO {SCRATCH} VALUES (1, 'open'), (2, 'open')")
        conn.commit()
    finally:
        conn.close()
    with psycopg.connect(
        host=postgres.host,
        port=postgres.port,
        user=postgres.admin_user,
        password=postgres.admin_password,
        dbname="bank",
        autocommit=True,
    ) as pg:
        pg.execute(f"CREATE TABLE IF NOT EXISTS {SCRATCH} (id int PRIMARY KEY, status text)")
        pg.execute(f"DELETE FROM {SCRATCH}")
        pg.execute(f"INSERT INTO {SCRATCH} VALUES (1, 'open'), (2, 'open')")
        pg.execute(f"GRANT ALL ON {SCRATCH} TO {postgres.service_user}")


def _drop_scratch_tables(mariadb: ServerInfo, postgres: ServerInfo) -> None:
    """Leave the shared bank database as the tests found it."""
    conn = pymysql.connect(
        host=mariadb.host, port=mariadb.port, user=mariadb.admin_user, password=mariadb.admin_password, database="bank"
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
            cur.execute("DROP VIEW IF EXISTS policy_scratch_v")
        conn.commit()
    finally:
        conn.close()
    with psycopg.connect(
        host=postgres.host,
        port=postgres.port,
        user=postgres.admin_user,
        password=postgres.admin_password,
        dbname="bank",
        autocommit=True,
    ) as pg:
        pg.execute("DROP VIEW IF EXISTS policy_scratch_v")
        pg.execute(f"DROP TABLE IF EXISTS {SCRATCH}")


@pytest.fixture(scope="module")
def running(
    sample_bank: LoadedBank,
    mariadb_server: ServerInfo,
    postgres_server: ServerInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    _scratch_tables(mariadb_server, postgres_server)
    directory = tmp_path_factory.mktemp("policy-e2e")
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
        f'[[backends]]\nname = "my"\nprotocol = "mysql"\nlisten = "127.0.0.1:{my_port}"\n'
        f'host = "{mariadb_server.host}"\nport = {mariadb_server.port}\nuser = "{mariadb_server.service_user}"\n'
        f'password = "env:{MY_ENV}"\ndatabase = "bank"\n'
        f'[[backends]]\nname = "pg"\nprotocol = "postgres"\nlisten = "127.0.0.1:{pg_port}"\n'
        f'host = "{postgres_server.host}"\nport = {postgres_server.port}\nuser = "{postgres_server.service_user}"\n'
        f'password = "env:{PG_ENV}"\ndatabase = "bank"\n'
    )
    settings = loads(text, source=str(directory / "sqlbastion.toml"))
    from sqlbastion.proxy.server import build_services

    services = build_services(settings)
    thread = ProxyThread(settings, services=services)
    thread.start()
    try:
        yield Running(thread, directory, my_port, pg_port, mariadb_server, postgres_server)
    finally:
        thread.stop()
        _drop_scratch_tables(mariadb_server, postgres_server)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _mysql_error(exc: BaseException) -> tuple[int, str]:
    assert isinstance(exc, pymysql.err.MySQLError)
    return int(exc.args[0]), str(exc.args[1])


# -- MySQL ----------------------------------------------------------------------------


def test_mysql_drop_table_is_blocked_and_the_table_remains(running: Running) -> None:
    with running.mysql("dev") as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute(f"DROP TABLE {SCRATCH}")
        code, message = _mysql_error(info.value)
        assert code == 1227
        assert "HR-DDL-DROP" in message
        # The connection stays usable and the table is still there.
        cur.execute(f"SELECT count(*) FROM {SCRATCH}")
        assert cur.fetchone() == (2,)


def test_mysql_tautological_update_is_blocked(running: Running) -> None:
    with running.mysql("dev") as conn, conn.cursor() as cur:
        for sql in (
            f"UPDATE {SCRATCH} SET status = 'gone' WHERE 1=1",
            f"UPDATE {SCRATCH} SET status = 'gone' WHERE id > 0 OR 1",
            f"UPDATE {SCRATCH} SET status = 'gone'",
            f"UPDATE {SCRATCH} SET status = 'gone' WHERE id = 1 /*! OR 1=1 */",
        ):
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute(sql)
            code, message = _mysql_error(info.value)
            assert code == 1227
            assert "HR-DML-" in message
        cur.execute(f"SELECT count(*) FROM {SCRATCH} WHERE status = 'gone'")
        assert cur.fetchone() == (0,)
        cur.execute(f"UPDATE {SCRATCH} SET status = 'open' WHERE id = 2")


def test_mysql_ungranted_column_is_refused(running: Running) -> None:
    with running.mysql("analyst") as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, city FROM customers WHERE id = 1")
        assert cur.fetchone() is not None
        for sql in ("SELECT id_card FROM customers WHERE id = 1", "SELECT * FROM customers LIMIT 1"):
            with pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute(sql)
            code, message = _mysql_error(info.value)
            assert code == 1227
            assert "SB-GRANT-DENIED" in message


def test_mysql_person_outside_network_or_time_window_cannot_log_in(running: Running) -> None:
    for person in ("outsider", "night"):
        with pytest.raises(pymysql.err.OperationalError) as info:
            running.mysql(person)
        assert info.value.args[0] == 1045


# -- PostgreSQL ---------------------------------------------------------------------------


def test_postgres_drop_table_is_blocked_and_the_table_remains(running: Running) -> None:
    with running.pg("dev") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="HR-DDL-DROP"):
            conn.execute(f"DROP TABLE {SCRATCH}")
        row = conn.execute(f"SELECT count(*) FROM {SCRATCH}").fetchone()
        assert row == (2,)


def test_postgres_tautological_update_is_blocked(running: Running) -> None:
    with running.pg("dev") as conn:
        for sql in (
            f"UPDATE {SCRATCH} SET status = 'gone' WHERE 1=1",
            f"UPDATE {SCRATCH} SET status = 'gone' WHERE TRUE",
            f"UPDATE {SCRATCH} SET status = 'gone' WHERE NOT FALSE",
            f"DELETE FROM {SCRATCH}",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="HR-DML-"):
                conn.execute(sql)
        row = conn.execute(f"SELECT count(*) FROM {SCRATCH} WHERE status = 'open'").fetchone()
        assert row == (2,)


def test_postgres_ungranted_column_is_refused(running: Running) -> None:
    with running.pg("analyst") as conn:
        assert conn.execute("SELECT id, name, city FROM customers WHERE id = 1").fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="SB-GRANT-DENIED"):
            conn.execute("SELECT id_card FROM customers WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="SB-GRANT-DENIED"):
            conn.execute("TABLE customers")


def test_postgres_person_outside_network_or_time_window_cannot_log_in(running: Running) -> None:
    for person in ("outsider", "night"):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            running.pg(person)


# -- reload: statements are checked against the policy in force -------------------------------


def test_reload_narrowing_the_network_stops_statements_and_invalid_reload_keeps_policy(running: Running) -> None:
    policy_file = running.directory / "policy.toml"
    store = running.store
    my = running.mysql("dev")
    pg = running.pg("dev")
    try:
        pg.execute("SELECT 1")
        narrowed = POLICY.replace('networks = ["127.0.0.0/8", "::1/128"]', 'networks = ["198.51.100.0/24"]', 1)
        policy_file.write_text(narrowed, encoding="utf-8")
        ok, _ = store.reload()
        assert ok
        with my.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute(f"SELECT id FROM {SCRATCH} WHERE id = 1")
        assert "SB-ADMISSION" in _mysql_error(info.value)[1]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="SB-ADMISSION"):
            pg.execute(f"SELECT id FROM {SCRATCH} WHERE id = 1")
        version = store.version
        policy_file.write_text("[[persons]]\nname = 'broken'\n", encoding="utf-8")
        ok, message = store.reload()
        assert not ok
        assert "roles" in message
        assert store.version == version
    finally:
        policy_file.write_text(POLICY, encoding="utf-8")
        assert store.reload()[0]
        my.close()
        pg.close()
    with running.pg("dev") as conn:
        assert conn.execute(f"SELECT id FROM {SCRATCH} WHERE id = 1").fetchone() == (1,)


# -- ordinary drivers work under the policy ------------------------------------------------


async def test_asyncpg_prepared_statements_and_refusals(running: Running) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host="127.0.0.1", port=running.pg_port, user="dev", password=PASSWORDS["dev"], database="bank", ssl=False
    )
    try:
        row = await conn.fetchrow("SELECT id, balance, opened_at, status FROM accounts WHERE id = $1", 1)
        assert row is not None
        assert row["id"] == 1
        rows = await conn.fetch(
            "SELECT c.id, a.card_no FROM customers c JOIN accounts a ON a.customer_id = c.id WHERE c.id = $1", 1
        )
        assert rows
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="MASK-INFERENCE"):
            await conn.fetch("SELECT id FROM customers WHERE mobile LIKE $1", "138%")
        assert await conn.fetchval("SELECT count(*) FROM accounts WHERE id = $1", 1) == 1
    finally:
        await conn.close()


def test_mysql_prepared_statements_and_refusals(running: Running) -> None:
    import mysql.connector

    conn = mysql.connector.connect(
        host="127.0.0.1",
        port=running.my_port,
        user="dev",
        password=PASSWORDS["dev"],
        database="bank",
        ssl_disabled=True,
        use_pure=True,
    )
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, balance, status FROM accounts WHERE id = ?", (1,))
        assert cur.fetchall()
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute(f"DELETE FROM {SCRATCH} WHERE ? = ?", (1, 1))
        assert info.value.errno == 1227
        cur.close()
    finally:
        conn.close()


# -- DDL through the proxy refreshes the catalog -------------------------------------------


def _rule_of_mysql(running: Running, person: str, sql: str) -> str:
    with running.mysql(person) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql)
            cur.fetchall()
        except pymysql.err.MySQLError as exc:
            return _mysql_error(exc)[1]
    return "allowed"


def _rule_of_pg(running: Running, person: str, sql: str) -> str:
    with running.pg(person) as conn:
        try:
            cur = conn.execute(sql)
            if cur.description is not None:
                cur.fetchall()
        except psycopg.errors.InsufficientPrivilege as exc:
            return str(exc)
    return "allowed"


def test_views_created_through_the_proxy_are_resolved(running: Running) -> None:
    import time

    probe = "SELECT id FROM policy_scratch_v WHERE phone LIKE '1%'"
    create = "CREATE OR REPLACE VIEW policy_scratch_v AS SELECT id, mobile AS phone FROM customers"
    drop = "DROP VIEW IF EXISTS policy_scratch_v"
    for run_as in (_rule_of_mysql, _rule_of_pg):
        assert run_as(running, "ops", drop) == "allowed"
        assert run_as(running, "ops", create) == "allowed"
        deadline = time.monotonic() + 10
        outcome = run_as(running, "dev", probe)
        while "MASK-INFERENCE" not in outcome and time.monotonic() < deadline:
            assert outcome != "allowed"
            time.sleep(0.2)
            outcome = run_as(running, "dev", probe)
        assert "MASK-INFERENCE" in outcome
        assert run_as(running, "ops", drop) == "allowed"


def test_max_sessions_is_enforced_at_login(running: Running) -> None:
    import time

    first = running.mysql("solo")
    try:
        with pytest.raises(pymysql.err.OperationalError) as info:
            running.mysql("solo")
        assert info.value.args[0] == 1045
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            running.pg("solo")
    finally:
        first.close()
    # The proxy sees the close asynchronously.
    deadline = time.monotonic() + 10
    while running.store.sessions_of("solo") and time.monotonic() < deadline:
        time.sleep(0.05)
    with running.pg("solo") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
