"""Names for RowDescription's table OIDs, attribute numbers and type OIDs, cached per database.

RowDescription (PostgreSQL 15 documentation §55.7) identifies a result column
by the OID of its table and its attribute number, and its type by OID. Masking
needs names (``schema.table.column``, ``typname``). Built-in type OIDs are
fixed (src/include/catalog/pg_type.dat) and come from a static table; the rest
is read from pg_class / pg_attribute / pg_namespace / pg_type through the
backend service account on one separate connection per database, and cached.

Bounds: at most ``MAX_ENTRIES`` columns and types per database cache, and at
most ``MAX_DATABASES`` caches per backend; entries expire after the backend's
``catalog_refresh_s`` so a renamed column is seen again. A failed lookup
caches placeholders (no names) for a short time, so masking falls back to the
statement's lineage rather than the proxy stalling.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from sqlbastion.config import BackendSettings
from sqlbastion.logs import get_logger
from sqlbastion.observability.metrics import METRICS
from sqlbastion.proxy.postgres.protocol import RowColumn
from sqlbastion.proxy.postgres.tracking import ColumnMeta

__all__ = ["BUILTIN_TYPES", "Catalog", "catalog_for"]

log = get_logger("proxy.postgres.catalog")

MAX_ENTRIES = 100_000
MAX_DATABASES = 64
FAILURE_TTL_S = 5.0

# OID → typname for the built-in types (pg_type.dat, PostgreSQL 15).
BUILTIN_TYPES: dict[int, str] = {
    16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2", 22: "int2vector", 23: "int4",
    24: "regproc", 25: "text", 26: "oid", 27: "tid", 28: "xid", 29: "cid", 30: "oidvector", 114: "json",
    142: "xml", 194: "pg_node_tree", 600: "point", 601: "lseg", 602: "path", 603: "box", 604: "polygon",
    628: "line", 650: "cidr", 700: "float4", 701: "float8", 705: "unknown", 718: "circle", 774: "macaddr8",
    790: "money", 829: "macaddr", 869: "inet", 1033: "aclitem", 1042: "bpchar", 1043: "varchar", 1082: "date",
    1083: "time", 1114: "timestamp", 1184: "timestamptz", 1186: "interval", 1266: "timetz", 1560: "bit",
    1562: "varbit", 1700: "numeric", 1790: "refcursor", 2202: "regprocedure", 2203: "regoper",
    2204: "regoperator", 2205: "regclass", 2206: "regtype", 2249: "record", 2275: "cstring", 2276: "any",
    2277: "anyarray", 2278: "void", 2950: "uuid", 3220: "pg_lsn", 3614: "tsvector", 3615: "tsquery",
    3734: "regconfig", 3769: "regdictionary", 3802: "jsonb", 3904: "int4range", 3906: "numrange",
    3908: "tsrange", 3910: "tstzrange", 3912: "daterange", 3926: "int8range", 4072: "jsonpath",
    4089: "regnamespace", 4096: "regrole", 5038: "pg_snapshot", 5069: "xid8",
    1000: "_bool", 1001: "_bytea", 1002: "_char", 1003: "_name", 1005: "_int2", 1007: "_int4", 1009: "_text",
    1014: "_bpchar", 1015: "_varchar", 1016: "_int8", 1021: "_float4", 1022: "_float8", 1028: "_oid",
    1115: "_timestamp", 1182: "_date", 1183: "_time", 1185: "_timestamptz", 1187: "_interval",
    1231: "_numeric", 199: "_json", 3807: "_jsonb", 2951: "_uuid", 143: "_xml", 1041: "_inet",
}  # fmt: skip


def backend_ssl_context(backend: BackendSettings) -> ssl.SSLContext | bool:
    mode = backend.tls.mode
    if mode == "disable":
        return False
    if mode in ("prefer", "require"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=backend.tls.ca_file)
    ctx.check_hostname = mode == "verify-full"
    return ctx


class Catalog:
    """The column and type name cache for one database of one backend."""

    def __init__(self, backend: BackendSettings, database: str) -> None:
        self.backend = backend
        self.database = database
        self._columns: dict[tuple[int, int], tuple[tuple[str, str, str] | None, float]] = {}
        self._types: dict[int, tuple[str, float]] = {}
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()  # asyncpg connections belong to one event loop

    def _fresh(self, stamp: float) -> bool:
        return stamp > time.monotonic()

    def resolve(self, columns: Sequence[RowColumn]) -> list[ColumnMeta] | None:
        """Names for each field from the cache; None when something must be loaded first."""
        out: list[ColumnMeta] = []
        for c in columns:
            type_name = BUILTIN_TYPES.get(c.type_oid)
            if type_name is None:
                cached_type = self._types.get(c.type_oid)
                if cached_type is None or not self._fresh(cached_type[1]):
                    return None
                type_name = cached_type[0]
            if c.table_oid == 0 or c.attnum <= 0:
                out.append(ColumnMeta(schema=None, table=None, column=None, type_name=type_name))
                continue
            cached = self._columns.get((c.table_oid, c.attnum))
            if cached is None or not self._fresh(cached[1]):
                return None
            names = cached[0]
            if names is None:
                out.append(ColumnMeta(schema=None, table=None, column=None, type_name=type_name))
            else:
                out.append(ColumnMeta(schema=names[0], table=names[1], column=names[2], type_name=type_name))
        return out

    async def load(self, columns: Sequence[RowColumn]) -> None:
        """Fetch what ``resolve`` lacks. Never raises: a failure caches placeholders briefly."""
        wanted_cols = sorted({(c.table_oid, c.attnum) for c in columns if c.table_oid and c.attnum > 0})
        wanted_types = sorted({c.type_oid for c in columns if c.type_oid not in BUILTIN_TYPES})
        async with self._lock:
            if len(self._columns) > MAX_ENTRIES:
                self._columns.clear()
            if len(self._types) > MAX_ENTRIES:
                self._types.clear()
            expires = time.monotonic() + self.backend.catalog_refresh_s
            try:
                conn = await self._connection()
                if wanted_cols:
                    rows = await conn.fetch(
                        "SELECT a.attrelid, a.attnum, n.nspname, c.relname, a.attname"
                        " FROM unnest($1::oid[], $2::int2[]) AS w(relid, num)"
                        " JOIN pg_catalog.pg_attribute a ON a.attrelid = w.relid AND a.attnum = w.num"
                        " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
                        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
                        [t for t, _ in wanted_cols],
                        [a for _, a in wanted_cols],
                    )
                    found = {(int(r[0]), int(r[1])): (str(r[2]), str(r[3]), str(r[4])) for r in rows}
                    for key in wanted_cols:
                        self._columns[key] = (found.get(key), expires)
                if wanted_types:
                    rows = await conn.fetch(
                        "SELECT oid, typname FROM pg_catalog.pg_type WHERE oid = ANY($1::oid[])", wanted_types
                    )
                    tfound = {int(r[0]): str(r[1]) for r in rows}
                    for oid in wanted_types:
                        self._types[oid] = (tfound.get(oid, "unknown"), expires)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                METRICS.backend_errors.labels("postgres", self.backend.name, "catalog").inc()
                log.warning("catalog lookup failed", backend=self.backend.name, error=type(exc).__name__)
                await self._drop_connection()
                short = time.monotonic() + FAILURE_TTL_S
                for key in wanted_cols:
                    self._columns[key] = (None, short)
                for oid in wanted_types:
                    self._types[oid] = ("unknown", short)

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        password = self.backend.password.reveal() if self.backend.password is not None else None
        self._conn = await asyncpg.connect(
            host=self.backend.host,
            port=self.backend.port,
            user=self.backend.user,
            password=password,
            database=self.database,
            ssl=backend_ssl_context(self.backend),
            timeout=self.backend.connect_timeout_s,
            statement_cache_size=0,
            server_settings={"application_name": "sqlbastion-catalog"},
        )
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()

    async def close(self) -> None:
        await self._drop_connection()

    def terminate(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self.loop is asyncio.get_running_loop():
            conn.terminate()


# Per event loop, because an asyncpg connection (and the uvloop handles under it) must only ever be
# used and released on its own loop's thread; replacing one loop's catalog from another thread would
# free its handles there. A process normally runs one loop; tests run several.
_CATALOGS: dict[asyncio.AbstractEventLoop, dict[tuple[str, str], Catalog]] = {}


def catalog_for(backend: BackendSettings, database: str) -> Catalog:
    """The shared cache for one backend's database on this event loop (bounded in number)."""
    catalogs = _CATALOGS.setdefault(asyncio.get_running_loop(), {})
    key = (backend.name, database)
    catalog = catalogs.get(key)
    if catalog is None or catalog.backend is not backend:
        if catalog is None and sum(1 for b, _ in catalogs if b == backend.name) >= MAX_DATABASES:
            oldest = next(k for k in catalogs if k[0] == backend.name)
            catalogs.pop(oldest).terminate()
        elif catalog is not None:
            catalog.terminate()  # the settings were replaced (reload): start afresh
        catalog = Catalog(backend, database)
        catalogs[key] = catalog
    return catalog
