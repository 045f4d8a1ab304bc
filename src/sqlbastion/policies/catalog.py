"""Schema metadata of each backend: tables, columns and view definitions.

The analyser expands ``SELECT *`` / ``t.*`` and resolves views with a
``Catalog`` snapshot: frozen data, swapped whole when a refresh finishes, so a
decision always sees one consistent version (its ``version`` goes into the
decision-cache key). Loading is separate and asynchronous (``load_mysql`` /
``load_postgres``, through the backend's service account); ``CatalogStore``
keeps the current snapshot per backend and refreshes it on a timer and soon
after DDL passes through the proxy.

Names: MySQL table and column names are kept lower case (lookups fold case, so
a differently-cased name is matched to the stricter, known object);
PostgreSQL names are kept as the server stores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlbastion import logs
from sqlbastion.policies.model import Dialect

if TYPE_CHECKING:
    from sqlbastion.config import BackendSettings

log = logs.get_logger("policies.catalog")

MYSQL_SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")


@dataclass(frozen=True, kw_only=True, slots=True)
class TableInfo:
    schema: str  # MySQL database / PostgreSQL schema
    name: str
    columns: tuple[str, ...]
    view_sql: str | None = None  # the view's defining query, when a view
    oid: int | None = None  # PostgreSQL pg_class OID (RowDescription table OID)
    attnums: tuple[int, ...] = ()  # PostgreSQL attribute numbers, parallel to columns

    @property
    def is_view(self) -> bool:
        return self.view_sql is not None


def _empty_tables() -> Mapping[tuple[str, str], TableInfo]:
    return MappingProxyType({})


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Catalog:
    """One backend's metadata at one moment. ``database`` is the PostgreSQL database connected to."""

    backend: str
    dialect: Dialect
    database: str | None = None
    tables: Mapping[tuple[str, str], TableInfo] = field(default_factory=_empty_tables)
    version: str = "empty"
    loaded_at: float = 0.0
    _by_oid: Mapping[int, TableInfo] = field(default_factory=lambda: MappingProxyType({}))
    # Per-snapshot memo for derived values (a table's column lineage); the
    # snapshot never changes, so neither do they. Bounded by the catalog's size.
    memo: dict[object, object] = field(default_factory=dict, repr=False)

    @staticmethod
    def build(
        *, backend: str, dialect: Dialect, database: str | None, tables: Iterable[TableInfo], loaded_at: float = 0.0
    ) -> Catalog:
        by_key: dict[tuple[str, str], TableInfo] = {}
        h = hashlib.sha256(f"{backend}|{dialect}|{database}".encode())
        for t in sorted(tables, key=lambda t: (t.schema, t.name)):
            key = (t.schema.lower(), t.name.lower()) if dialect == "mysql" else (t.schema, t.name)
            by_key[key] = t
            h.update(f"\n{t.schema}.{t.name}:{','.join(t.columns)}:{t.view_sql or ''}".encode())
        return Catalog(
            backend=backend,
            dialect=dialect,
            database=database,
            tables=MappingProxyType(by_key),
            version=h.hexdigest()[:16],
            loaded_at=loaded_at,
            _by_oid=MappingProxyType({t.oid: t for t in by_key.values() if t.oid is not None}),
        )

    def table(self, schema: str, name: str) -> TableInfo | None:
        if self.dialect == "mysql":
            return self.tables.get((schema.lower(), name.lower()))
        return self.tables.get((schema, name))

    def by_oid(self, oid: int) -> TableInfo | None:
        """The PostgreSQL relation with this pg_class OID (for RowDescription cross-checks)."""
        return self._by_oid.get(oid)

    def column_by_attnum(self, oid: int, attnum: int) -> tuple[TableInfo, str] | None:
        t = self._by_oid.get(oid)
        if t is None:
            return None
        for name, num in zip(t.columns, t.attnums, strict=False):
            if num == attnum:
                return t, name
        return None

    @property
    def loaded(self) -> bool:
        return self.version != "empty"


def empty_catalog(backend: str, dialect: Dialect, database: str | None = None) -> Catalog:
    return Catalog(backend=backend, dialect=dialect, database=database)


# -- loading ------------------------------------------------------------------

_MYSQL_COLUMNS = (
    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA NOT IN ('mysql', 'performance_schema', 'sys') "
    "ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
)
_MYSQL_VIEWS = "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS"

_PG_COLUMNS = """
SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text, a.attname, a.attnum,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND n.nspname NOT LIKE 'pg\\_toast%'
ORDER BY n.nspname, c.relname, a.attnum
"""


def _tls_context(backend: BackendSettings) -> ssl.SSLContext | None:
    """The catalog connection's TLS, as strict as the backend's ``tls`` settings ask."""
    mode = backend.tls.mode
    if mode in ("disable", "prefer"):
        return None
    if mode == "require":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=backend.tls.ca_file)
    ctx.check_hostname = mode == "verify-full"
    return ctx


def _load_mysql_sync(backend: BackendSettings, password: str | None) -> list[TableInfo]:
    import pymysql

    conn = pymysql.connect(
        host=backend.host,
        port=backend.port,
        user=backend.user,
        password=password or "",
        connect_timeout=max(1, int(backend.connect_timeout_s)),
        charset="utf8mb4",
        ssl=_tls_context(backend),
    )
    try:
        with conn.cursor() as cur:
            cur.execute(_MYSQL_COLUMNS)
            cols: dict[tuple[str, str], list[str]] = {}
            for schema, table, column in cur.fetchall():
                cols.setdefault((str(schema), str(table)), []).append(str(column))
            cur.execute(_MYSQL_VIEWS)
            views = {(str(s), str(t)): (str(d) if d is not None else "") for s, t, d in cur.fetchall()}
    finally:
        conn.close()
    return [
        TableInfo(schema=s, name=t, columns=tuple(c.lower() for c in cs), view_sql=views.get((s, t)))
        for (s, t), cs in cols.items()
    ]


async def load_mysql(backend: BackendSettings) -> Catalog:
    """Read a MySQL/MariaDB backend's tables, columns and views (through a worker thread)."""
    password = backend.password.reveal() if backend.password else None
    tables = await asyncio.to_thread(_load_mysql_sync, backend, password)
    return Catalog.build(backend=backend.name, dialect="mysql", database=None, tables=tables, loaded_at=time.time())


async def load_postgres(backend: BackendSettings) -> Catalog:
    """Read a PostgreSQL backend's relations (with pg_catalog's, for search_path resolution)."""
    import asyncpg

    password = backend.password.reveal() if backend.password else None
    conn = await asyncpg.connect(
        host=backend.host,
        port=backend.port,
        user=backend.user,
        password=password,
        database=backend.database or backend.user,
        timeout=backend.connect_timeout_s,
        ssl=_tls_context(backend) or (False if backend.tls.mode == "disable" else backend.tls.mode),
    )
    try:
        database = await conn.fetchval("SELECT current_database()")
        rows = await conn.fetch(_PG_COLUMNS)
    finally:
        await conn.close()
    acc: dict[int, dict[str, Any]] = {}
    for oid, schema, name, _kind, attname, attnum, viewdef in rows:
        entry = acc.setdefault(
            int(oid), {"schema": schema, "name": name, "columns": [], "attnums": [], "view_sql": viewdef}
        )
        entry["columns"].append(attname)
        entry["attnums"].append(int(attnum))
    tables = [
        TableInfo(
            schema=e["schema"],
            name=e["name"],
            columns=tuple(e["columns"]),
            attnums=tuple(e["attnums"]),
            view_sql=e["view_sql"],
            oid=oid,
        )
        for oid, e in acc.items()
    ]
    return Catalog.build(
        backend=backend.name, dialect="postgres", database=str(database), tables=tables, loaded_at=time.time()
    )


async def load_catalog(backend: BackendSettings) -> Catalog:
    if backend.protocol == "mysql":
        return await load_mysql(backend)
    return await load_postgres(backend)


class CatalogStore:
    """The current catalog of every backend; each refresh swaps a whole snapshot in."""

    # After DDL the decision comes before the backend runs it: refresh soon, and
    # once more a little later for statements that take a while.
    DDL_REFRESH_DELAYS_S = (0.2, 2.0)

    def __init__(self, backends: Iterable[BackendSettings] = ()) -> None:
        self._backends = {b.name: b for b in backends}
        self._catalogs: dict[str, Catalog] = {
            b.name: empty_catalog(b.name, b.protocol, b.database) for b in self._backends.values()
        }
        self._dirty: dict[str, asyncio.Event] = {}

    def get(self, backend: str) -> Catalog | None:
        return self._catalogs.get(backend)

    def put(self, catalog: Catalog) -> None:
        self._catalogs[catalog.backend] = catalog

    def note_ddl(self, backend: str) -> None:
        """DDL was allowed through the proxy: refresh that backend's catalog soon."""
        event = self._dirty.get(backend)
        if event is not None:
            event.set()

    async def refresh(self, backend: str) -> bool:
        settings = self._backends[backend]
        try:
            catalog = await load_catalog(settings)
        except Exception as exc:  # the catalog is best effort; the old snapshot stays
            log.warning("catalog refresh failed", backend=backend, error=type(exc).__name__, detail=str(exc)[:200])
            return False
        self.put(catalog)
        log.info("catalog loaded", backend=backend, tables=len(catalog.tables), version=catalog.version)
        return True

    async def run(self, backend: str) -> None:
        """Keep one backend's catalog fresh until cancelled (the first load is ``load_all``'s)."""
        settings = self._backends[backend]
        event = self._dirty.setdefault(backend, asyncio.Event())
        while True:
            ddl = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), settings.catalog_refresh_s)
                ddl = True
            event.clear()
            if not ddl:
                await self.refresh(backend)
                continue
            for delay in self.DDL_REFRESH_DELAYS_S:
                await asyncio.sleep(delay)
                event.clear()
                await self.refresh(backend)

    async def load_all(self) -> None:
        """Load every backend's catalog once (failures are logged; the empty snapshot stays)."""
        await asyncio.gather(*(self.refresh(name) for name in self._backends))

    def start(self) -> list[asyncio.Task[None]]:
        for name in self._backends:
            self._dirty.setdefault(name, asyncio.Event())
        return [asyncio.create_task(self.run(name), name=f"sqlbastion-catalog-{name}") for name in self._backends]
