"""PostgreSQL sink: one row per event in a time-indexed table Grafana can query.

Table (docs/audit.md, "PostgreSQL sink"; created if missing)::

    event_id text PRIMARY KEY, ts timestamptz, kind, session_id, person, backend,
    protocol, client_address, statement_type, decision, rule_ids text[],
    objects text[], rows bigint, proxy_us bigint, backend_us bigint,
    chain_seq bigint, event jsonb

with a BRIN index on ``ts`` (cheap for append-only time series, what Grafana's
``$__timeFilter(ts)`` needs), B-tree indexes on person and decision, and GIN
indexes on ``rule_ids`` and ``objects``. A batch is one statement over
``unnest($1::jsonb[])`` with ``ON CONFLICT (event_id) DO NOTHING``, so a
redelivered event is a no-op.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any

from sqlbastion.audit.sinks.base import Sink, SinkError
from sqlbastion.audit.spool import SpooledRecord
from sqlbastion.config import SecretRef
from sqlbastion.settings_schema import SecretUnavailable

__all__ = ["PostgresSink", "ddl"]

_TABLE_NAME = re.compile(r"^(?:[a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$")


def _quote(table: str) -> tuple[str, str]:
    """(quoted qualified name, bare name for index names). Raises SinkError for odd names."""
    if not _TABLE_NAME.match(table):
        raise SinkError(f"audit table name {table!r} must be lowercase letters, digits and '_' (optionally schema.)")
    parts = table.split(".")
    return ".".join(f'"{p}"' for p in parts), parts[-1]


def ddl(table: str) -> list[str]:
    q, bare = _quote(table)
    return [
        f"""CREATE TABLE IF NOT EXISTS {q} (
            event_id       text PRIMARY KEY,
            ts             timestamptz NOT NULL,
            kind           text NOT NULL,
            session_id     text,
            person         text,
            backend        text,
            protocol       text,
            client_address text,
            statement_type text,
            decision       text,
            rule_ids       text[] NOT NULL DEFAULT '{{}}',
            objects        text[] NOT NULL DEFAULT '{{}}',
            rows           bigint,
            proxy_us       bigint,
            backend_us     bigint,
            chain_seq      bigint,
            event          jsonb NOT NULL
        )""",
        f'CREATE INDEX IF NOT EXISTS "{bare}_ts" ON {q} USING brin (ts)',
        f'CREATE INDEX IF NOT EXISTS "{bare}_person_ts" ON {q} (person, ts)',
        f'CREATE INDEX IF NOT EXISTS "{bare}_decision_ts" ON {q} (decision, ts)',
        f'CREATE INDEX IF NOT EXISTS "{bare}_rule_ids" ON {q} USING gin (rule_ids)',
        f'CREATE INDEX IF NOT EXISTS "{bare}_objects" ON {q} USING gin (objects)',
    ]


def insert_sql(table: str) -> str:
    q, _ = _quote(table)  # validated and quoted: the only interpolated part
    return f"""
        INSERT INTO {q} (event_id, ts, kind, session_id, person, backend, protocol, client_address,
                         statement_type, decision, rule_ids, objects, rows, proxy_us, backend_us, chain_seq, event)
        SELECT e->>'event_id', (e->>'ts')::timestamptz, e->>'kind', e->>'session_id', e->>'person',
               e->>'backend', e->>'protocol', e->>'client_address',
               CASE jsonb_array_length(coalesce(e->'statement_types', '[]'))
                    WHEN 0 THEN NULL WHEN 1 THEN e->'statement_types'->>0 ELSE 'multi' END,
               e->>'decision',
               ARRAY(SELECT jsonb_array_elements_text(coalesce(e->'rule_ids', '[]'))),
               ARRAY(SELECT DISTINCT x FROM jsonb_array_elements_text(
                   coalesce(e->'objects_read', '[]') || coalesce(e->'objects_written', '[]')
                   || coalesce(e->'columns_read', '[]')) AS x),
               (e->>'rows')::bigint, (e->>'proxy_us')::bigint, (e->>'backend_us')::bigint,
               (e->'chain'->>'seq')::bigint, e
        FROM unnest($1::jsonb[]) AS e
        ON CONFLICT (event_id) DO NOTHING
    """  # noqa: S608


class PostgresSink(Sink):
    def __init__(
        self,
        *,
        dsn: SecretRef | str,
        table: str = "sqlbastion_audit",
        name: str = "postgres",
        required: bool = True,
        batch_size: int = 1000,
    ) -> None:
        super().__init__(name=name, required=required, batch_size=batch_size)
        self._dsn = dsn
        self.table = table
        _quote(table)
        self._conn: Any = None
        self._insert = insert_sql(table)

    async def open(self) -> None:
        if self._conn is not None:
            return
        import asyncpg

        try:
            dsn = self._dsn.reveal() if isinstance(self._dsn, SecretRef) else self._dsn
        except SecretUnavailable as exc:
            raise SinkError(str(exc)) from None
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            # Never the DSN in the message: it holds the password.
            raise SinkError(f"cannot connect to the PostgreSQL audit database: {type(exc).__name__}") from None
        try:
            for statement in ddl(self.table):
                await conn.execute(statement)
        except asyncpg.PostgresError as exc:
            await conn.close()
            raise SinkError(f"cannot create the audit table: {exc.sqlstate}") from None
        self._conn = conn

    async def deliver(self, records: Sequence[SpooledRecord]) -> None:
        await self.open()
        import asyncpg

        try:
            await self._conn.execute(self._insert, [r.json for r in records])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise SinkError(f"PostgreSQL audit insert failed: {type(exc).__name__}") from None

    async def reset(self) -> None:
        await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # it is being discarded either way
                await conn.close(timeout=5)
