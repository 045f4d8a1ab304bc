"""Refusals through the PostgreSQL proxy keep protocol semantics; sensitive results are masked.

Against the real server: blocked statements in simple and extended query,
inside transactions and pipelines; the FunctionCall message; masking in text
and binary formats; the session state the decisions depend on.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from tests.integration.postgres_support import PASSWORD, PERSON, Proxy, RawClient, kinds, run_proxy, sqlstates

from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.proxy.postgres import protocol as p

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(postgres_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from run_proxy(postgres_server, tmp_path_factory.mktemp("pg-policy"), with_tls=False)


@pytest.fixture(scope="module")
def secret_table(proxy: Proxy) -> str:
    with proxy.admin() as admin:
        admin.execute("DROP TABLE IF EXISTS t")
        admin.execute("CREATE TABLE t (id int PRIMARY KEY, name text, secret text, code int)")
        admin.execute("INSERT INTO t VALUES (1, 'ann', 'pin-1234', 77), (2, 'bob', NULL, 88)")
        admin.execute("GRANT ALL ON t TO PUBLIC")
    return "t"


def _statement_events(proxy: Proxy) -> list[dict[str, object]]:
    events: list[dict[str, object]] = proxy.audit.of_kind("statement")
    return events


def test_multi_statement_message_with_one_blocked_statement(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        conn.execute("CREATE TEMP TABLE m (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="TEST-DROP"):
            conn.execute("INSERT INTO m VALUES (1); DROP TABLE m; INSERT INTO m VALUES (2)", prepare=False)
        # Nothing of the message ran: the first INSERT did not reach the server either.
        assert conn.execute("SELECT count(*) FROM m").fetchone() == (0,)
    events = _statement_events(proxy)
    assert any(e["decision"] == "block" and "DROP TABLE m" in str(e["sql_text"]) for e in events)


def test_blocked_statement_inside_transaction_makes_commit_roll_back(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        assert kinds(raw.query("CREATE TEMP TABLE tx1 (id int)"))[-1] == "Z"
        out = raw.query("BEGIN")
        assert out[-1] == ("Z", b"T")
        raw.query("INSERT INTO tx1 VALUES (1)")
        out = raw.query("DROP TABLE tx1")
        assert sqlstates(out) == ["42501"]
        assert out[-1] == ("Z", b"E")  # the transaction failed, as if the server refused it
        out = raw.query("SELECT 1")
        assert sqlstates(out) == ["25P02"]  # the server agrees: commands are ignored
        out = raw.query("COMMIT")
        tags = [body for k, body in out if k == "C"]
        assert tags == [b"ROLLBACK\x00"]
        assert out[-1] == ("Z", b"I")
        out = raw.query("SELECT count(*) FROM tx1")
        assert out[1] == ("D", b"\x00\x01\x00\x00\x00\x010")
    finally:
        raw.close()


def test_blocked_statement_outside_transaction_is_answered_without_the_backend(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        out = raw.query("DROP TABLE whatever")
        assert kinds(out) == "EZ"
        assert sqlstates(out) == ["42501"]
        fields = dict(p.decode_error_fields(out[0][1]))
        assert fields[b"S"] == "ERROR"
        assert fields[b"M"].startswith("sqlbastion: statement blocked by rule TEST-DROP")
        assert out[-1] == ("Z", b"I")
        assert raw.query("SELECT 1")[-1] == ("Z", b"I")
    finally:
        raw.close()


def _parse(name: bytes, sql: bytes) -> bytes:
    return p.encode_parse(name, sql)


def _bind(portal: bytes, stmt: bytes, formats: tuple[int, ...] = ()) -> bytes:
    body = portal + b"\x00" + stmt + b"\x00" + b"\x00\x00" + b"\x00\x00"
    body += struct.pack("!h", len(formats)) + b"".join(struct.pack("!h", f) for f in formats)
    return p.encode_message(p.BIND, body)


def _execute(portal: bytes, limit: int = 0) -> bytes:
    return p.encode_message(p.EXECUTE, portal + b"\x00" + struct.pack("!i", limit))


def _describe(target: bytes, name: bytes) -> bytes:
    return p.encode_message(p.DESCRIBE, target + name + b"\x00")


SYNC = p.encode_message(p.SYNC)


def test_pipelined_batch_with_one_blocked_parse(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        batch = (
            _parse(b"", b"SELECT 1")
            + _bind(b"", b"")
            + _execute(b"")
            + _parse(b"s2", b"DROP TABLE nothing")
            + _bind(b"", b"s2")
            + _execute(b"")
            + _parse(b"", b"SELECT 3")
            + SYNC
            + _parse(b"", b"SELECT 4")
            + _bind(b"", b"")
            + _describe(b"P", b"")
            + _execute(b"")
            + SYNC
        )
        raw.send_raw(batch)
        first = raw.until_ready()
        # ParseComplete, BindComplete, DataRow, CommandComplete, then the refusal; the rest skipped to Sync.
        assert kinds(first) == "12DCEZ"
        assert sqlstates(first) == ["42501"]
        second = raw.until_ready()
        assert kinds(second) == "12TDCZ"
        assert second[3][1] == b"\x00\x01\x00\x00\x00\x014"
        # The blocked statement was never created: binding it fails on the server.
        raw.send_raw(_bind(b"", b"s2") + SYNC)
        third = raw.until_ready()
        assert sqlstates(third) == ["42501"]  # unknown to the proxy: refused, never relayed
    finally:
        raw.close()


def test_blocked_parse_in_explicit_transaction_fails_it(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        raw.query("BEGIN")
        raw.send_raw(_parse(b"", b"SELECT 1; forbidden") + _bind(b"", b"") + _execute(b"") + SYNC)
        out = raw.until_ready()
        assert kinds(out) == "EZ"
        assert out[-1] == ("Z", b"E")
        out = raw.query("COMMIT")
        assert [b for k, b in out if k == "C"] == [b"ROLLBACK\x00"]
    finally:
        raw.close()


def test_reparse_of_unnamed_statement_is_checked_each_time(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        raw.send_raw(_parse(b"", b"SELECT 'fine'") + SYNC)
        assert kinds(raw.until_ready()) == "1Z"
        raw.send_raw(_parse(b"", b"SELECT 'forbidden'") + SYNC)
        assert sqlstates(raw.until_ready()) == ["42501"]
        # The refused re-Parse dropped the unnamed statement, as the server's own failure would.
        raw.send_raw(_bind(b"", b"") + _execute(b"") + SYNC)
        out = raw.until_ready()
        assert "D" not in kinds(out)
        assert sqlstates(out) == ["42501"]
    finally:
        raw.close()


def test_describe_close_flush_and_portal_suspension(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        raw.query("BEGIN")
        raw.send_raw(
            _parse(b"gs", b"SELECT generate_series(1, 5) AS n")
            + _describe(b"S", b"gs")
            + _bind(b"cur", b"gs")
            + _execute(b"cur", 2)
            + p.encode_message(p.FLUSH)
        )
        got = [raw.recv() for _ in range(7)]
        assert "".join(chr(k) for k, _ in got) == "1tT2DDs"
        raw.send_raw(_execute(b"cur", 2) + _execute(b"cur", 0) + p.encode_message(p.CLOSE, b"Pcur\x00"))
        raw.send_raw(p.encode_message(p.CLOSE, b"Sgs\x00") + SYNC)
        out = raw.until_ready()
        assert kinds(out) == "DDsDC33Z"
        raw.query("COMMIT")
        executes = [e for e in _statement_events(proxy) if "generate_series(1, 5)" in str(e["sql_text"])]
        assert len(executes) == 3  # one audit event per Execute
        assert len({e["event_id"] for e in executes}) == 3
        assert sum(int(str(e["rows"])) for e in executes) == 5
    finally:
        raw.close()


def test_function_call_message_is_refused(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        # FunctionCall: Int32 function OID (1317 = length(text)), Int16 0 formats, Int16 1 argument …
        body = struct.pack("!ihhi", 1317, 0, 1, 3) + b"abc" + struct.pack("!h", 0)
        raw.send(p.FUNCTION_CALL, body)
        out = raw.until_ready()
        assert kinds(out) == "EZ"
        assert sqlstates(out) == ["42501"]
        assert raw.query("SELECT 1")[-1] == ("Z", b"I")
    finally:
        raw.close()


def test_malformed_message_closes_only_that_session(proxy: Proxy) -> None:
    other = RawClient(proxy.port)
    raw = RawClient(proxy.port)
    try:
        raw.send_raw(b"P\x00\x00\x00\x08ab")  # a Parse whose strings are not terminated
        raw.send_raw(b"\x00\x00")
        kind, body = raw.recv()
        assert kind == p.ERROR_RESPONSE
        assert dict(p.decode_error_fields(body))[b"C"] == "08P01"
        with pytest.raises(ConnectionError):
            raw.recv()
        assert kinds(other.query("SELECT 1")) == "TDCZ"
    finally:
        raw.close()
        other.close()


def test_masking_text_and_binary(proxy: Proxy, secret_table: str) -> None:
    with proxy.connect() as conn:
        rows = conn.execute("SELECT id, name, secret, code FROM t ORDER BY id").fetchall()
        assert rows == [(1, "ann", "***", 77), (2, "bob", None, 88)]
        rows = conn.execute("SELECT id, secret FROM t WHERE id = %s", (1,), binary=True).fetchall()
        assert rows == [(1, "***")]
        rows = conn.execute("SELECT id, name FROM t ORDER BY id").fetchall()
        assert rows == [(1, "ann"), (2, "bob")]
    planned = proxy.masker.planned[-1]
    assert [(c.schema, c.table, c.column, c.type_name) for c in planned] == [
        ("public", "t", "id", "int4"),
        ("public", "t", "name", "text"),
    ]
    events = [e for e in _statement_events(proxy) if "FROM t" in str(e["sql_text"]) and "secret" in str(e["sql_text"])]
    assert events
    assert all(int(str(e["masked_values"])) >= 1 for e in events)


async def test_masking_through_asyncpg_binary(proxy: Proxy, secret_table: str) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=proxy.port, user=PERSON, password=PASSWORD, database="postgres")
    try:
        rows = await conn.fetch("SELECT id, secret FROM t ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "***"), (2, None)]
        # Binary int4 masked in place keeps the wire format valid.
        assert await conn.fetchval("SELECT code AS secret FROM t WHERE id = 1") == 77  # renamed: not the column
    finally:
        await conn.close()


def test_sensitive_statement_errors_are_withheld(proxy: Proxy, secret_table: str) -> None:
    with proxy.connect() as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as info:
            conn.execute("SELECT secret::int FROM t WHERE id = 1")
        assert "pin-1234" not in str(info.value)
        assert "backend message withheld" in str(info.value)


def test_copy_to_stdout_of_sensitive_columns_is_refused(proxy: Proxy, secret_table: str) -> None:
    with proxy.connect() as conn:

        def read_all() -> None:
            with conn.cursor().copy("COPY (SELECT secret FROM t) TO STDOUT") as copy:
                for _ in copy:
                    pass

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="COPY TO STDOUT"):
            read_all()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_search_path_is_tracked(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS s1")
        conn.execute("SET search_path TO s1, public")
        conn.execute("SELECT 1")
        ctx = proxy.engine.seen[-1][1]
        assert ctx.search_path == ("s1", "public")
        conn.execute("RESET search_path")
        conn.execute("SELECT 2")
        assert proxy.engine.seen[-1][1].search_path[-1] == "public"
        assert "s1" not in proxy.engine.seen[-1][1].search_path
        conn.execute("SELECT set_config('search_path', 's1', false)")
        conn.execute("SELECT 3")
        assert proxy.engine.seen[-1][1].search_path == ("s1",)
        assert proxy.engine.seen[-1][1].database == "postgres"


def test_search_path_changed_by_a_cursor_fetch_is_tracked(proxy: Proxy) -> None:
    """The cursor's query runs at FETCH time: the FETCH, not the DECLARE, changes search_path."""
    with proxy.connect() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS s2")
        conn.execute("BEGIN")
        conn.execute("DECLARE c CURSOR FOR SELECT set_config('search_path', 's2', false)")
        conn.execute("SELECT 1")
        assert proxy.engine.seen[-1][1].search_path != ("s2",)
        conn.execute("FETCH 1 FROM c")
        conn.execute("SELECT 2")
        assert proxy.engine.seen[-1][1].search_path == ("s2",)
        conn.execute("COMMIT")


def test_transaction_state_and_encoding_tracked(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT 'in'")
        assert proxy.engine.seen[-1][1].in_transaction
        conn.execute("COMMIT")
        conn.execute("SET client_encoding TO 'LATIN1'")
        conn.execute("SELECT 'x'")
        assert proxy.engine.seen[-1][1].client_encoding == "LATIN1"
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="client_encoding"):
            conn.execute("SET client_encoding TO 'SJIS'")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 'after'")  # the session was closed: its text could not be read safely


def test_refused_result_keeps_client_and_server_in_agreement(proxy: Proxy, secret_table: str) -> None:
    raw = RawClient(proxy.port)
    try:
        out = raw.query("SELECT code AS refuse_me FROM t")
        assert kinds(out) == "EZ"
        assert sqlstates(out) == ["42501"]
        assert out[-1] == ("Z", b"I")
        raw.query("BEGIN")
        out = raw.query("SELECT code AS refuse_me FROM t; SELECT 1")
        assert kinds(out) == "EZ"
        assert out[-1] == ("Z", b"E")  # the server's transaction failed too
        out = raw.query("COMMIT")
        assert [b for k, b in out if k == "C"] == [b"ROLLBACK\x00"]
    finally:
        raw.close()
    with proxy.connect() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="test refusal"):
            conn.execute("SELECT code AS refuse_me FROM t WHERE id = %s", (1,))
        assert conn.execute("SELECT 5").fetchone() == (5,)


def test_psycopg_pipeline_with_a_blocked_statement(proxy: Proxy) -> None:
    with proxy.connect() as conn:

        def batch() -> None:
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("DROP TABLE nothing_here")
                conn.execute("SELECT 3")

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="TEST-DROP"):
            batch()
        with conn.pipeline():
            cur = conn.execute("SELECT %s::int", (4,))
        assert cur.fetchone() == (4,)


async def test_asyncpg_prepared_statement_blocked_at_prepare(proxy: Proxy) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=proxy.port, user=PERSON, password=PASSWORD, database="postgres")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.prepare("SELECT 'forbidden'")
        async with conn.transaction():
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT 'forbidden' || $1::text", "x")
        assert await conn.fetchval("SELECT 6") == 6
    finally:
        await conn.close()
