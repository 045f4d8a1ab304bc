"""The policy vocabulary shared by analysis, the decision engine, masking and the proxies.

Everything here is a frozen, keyword-only dataclass: values that can be cached,
hashed and compared, and that no later stage can change by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

Dialect = Literal["mysql", "postgres"]


class Action(StrEnum):
    """What happens to a statement. Ordered from most to least permissive in ``STRICTNESS``."""

    ALLOW = "allow"
    ALERT = "alert"  # allowed, and an alert event is raised
    REVIEW = "review"  # held for review: refused now with a ticket reference
    BLOCK = "block"


STRICTNESS: dict[Action, int] = {Action.ALLOW: 0, Action.ALERT: 1, Action.REVIEW: 2, Action.BLOCK: 3}


@dataclass(frozen=True, kw_only=True, slots=True)
class ColumnRef:
    """A fully qualified source column. ``schema`` is the MySQL database or the PostgreSQL schema."""

    database: str | None
    schema: str | None
    table: str
    column: str

    def __str__(self) -> str:
        parts = [p for p in (self.database, self.schema, self.table, self.column) if p]
        return ".".join(parts)


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputColumn:
    """One column of a statement's result and where its values come from.

    ``sources`` are the base-table columns the value is computed from; ``direct``
    is True when the value is one of them unchanged (only renamed, or passed
    through a function proven to keep a mask meaningful). ``opaque`` means the
    lineage could not be proven: masking must treat it as sensitive.
    """

    name: str
    sources: frozenset[ColumnRef] = frozenset()
    direct: bool = False
    opaque: bool = False
    whole_row_of: tuple[ColumnRef, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class StatementContext:
    """Everything about the session and the moment that a decision may depend on."""

    person: str
    roles: tuple[str, ...]
    backend: str
    dialect: Dialect
    database: str | None  # MySQL current database / PostgreSQL current database
    search_path: tuple[str, ...] = ()
    ansi_quotes: bool = False  # MySQL sql_mode ANSI_QUOTES
    no_backslash_escapes: bool = False  # MySQL sql_mode NO_BACKSLASH_ESCAPES
    standard_conforming_strings: bool = True  # PostgreSQL
    client_encoding: str = "utf8"
    client_address: str = ""
    now: datetime | None = None
    in_transaction: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleHit:
    rule_id: str
    title: str
    severity: Literal["low", "medium", "high", "critical"]
    action: Action
    why: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """The outcome for one client message (which may hold several statements).

    ``statement_types`` and ``objects`` feed the audit event; ``output_columns``
    is the lineage masking uses, one tuple per result-producing statement.
    """

    action: Action
    rule_hits: tuple[RuleHit, ...] = ()
    reason: str = ""
    statement_types: tuple[str, ...] = ()
    objects_read: tuple[str, ...] = ()
    objects_written: tuple[str, ...] = ()
    columns_read: tuple[ColumnRef, ...] = ()
    output_columns: tuple[tuple[OutputColumn, ...], ...] = ()
    sensitive_columns: tuple[ColumnRef, ...] = ()
    fingerprint: str = ""
    policy_version: str = ""
    cached: bool = False
    notes: tuple[str, ...] = field(default=())
    # Rows a result may carry before the proxy must refuse it (None: no cap,
    # or the person holds ``export``).
    max_rows: int | None = None
    # Session-state changes the statement makes once the backend accepts it, as
    # (key, value): ``database``, ``search_path`` (comma separated),
    # ``ansi_quotes`` / ``no_backslash_escapes`` / ``standard_conforming_strings``
    # ("on"/"off"), ``client_encoding``, ``reset`` ("all"). The proxies apply
    # them to ``SessionState`` after the backend's OK.
    session_effects: tuple[tuple[str, str], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action in (Action.ALLOW, Action.ALERT)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(h.rule_id for h in self.rule_hits)

    @property
    def primary_hit(self) -> RuleHit | None:
        """The strictest rule hit, which the client-facing message names."""
        if not self.rule_hits:
            return None
        return max(self.rule_hits, key=lambda h: STRICTNESS[h.action])


# -- the policy itself (loaded from TOML by policies.loader) -----------------

Duty = Literal["admin", "use", "audit"]
GrantAction = Literal["select", "insert", "update", "delete", "ddl", "admin", "export"]
UnprovableMode = Literal["block", "review", "audit_only"]
Severity = Literal["low", "medium", "high", "critical"]

GRANT_ACTIONS: tuple[str, ...] = ("select", "insert", "update", "delete", "ddl", "admin", "export")
# A role's ``unprovable`` mode as the action taken on unprovable statements.
UNPROVABLE_MODE_ACTIONS: dict[str, Action] = {
    "block": Action.BLOCK,
    "review": Action.REVIEW,
    "audit_only": Action.ALERT,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class ObjectPattern:
    """``backend:part.part…`` with ``*``/``?`` wildcards per part and ``{a,b}`` alternatives.

    A pattern covers every object whose path starts with parts it matches, so
    ``core:bank.*`` covers all tables and columns of database ``bank``, and
    trailing ``*`` parts also cover the shorter path (``core:bank.*`` covers the
    database itself). Paths are ``(database, table, column)`` on MySQL and
    ``(database, schema, table, column)`` on PostgreSQL.
    """

    text: str
    backend: str
    parts: tuple[tuple[str, ...], ...]  # per part, its alternatives (each may hold wildcards)


@dataclass(frozen=True, kw_only=True, slots=True)
class Grant:
    actions: frozenset[str]
    objects: tuple[ObjectPattern, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeWindow:
    """Days of the week (0 = Monday) and minutes since midnight in ``tz``; ``end`` may be 1440."""

    days: frozenset[int]
    start_minute: int
    end_minute: int
    tz: str
    text: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PersonPolicy:
    name: str
    roles: tuple[str, ...]
    networks: tuple[str, ...] = ()  # CIDR texts; empty = anywhere
    time_windows: tuple[TimeWindow, ...] = ()  # empty = any time
    expires: datetime | None = None
    max_sessions: int | None = None
    max_rows: int | None = None
    disabled: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class RolePolicy:
    name: str
    duties: frozenset[str]
    grants: tuple[Grant, ...] = ()
    unprovable: UnprovableMode = "block"
    rule_overrides: tuple[tuple[str, Action], ...] = ()

    def override(self, rule_id: str) -> Action | None:
        for rid, action in self.rule_overrides:
            if rid == rule_id:
                return action
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleMatch:
    """Facts a custom rule matches; every given key must match (AND), each list is an OR."""

    statement_types: frozenset[str] = frozenset()
    tables: tuple[ObjectPattern, ...] = ()  # any object read or written
    writes: tuple[ObjectPattern, ...] = ()  # objects written
    columns: tuple[ObjectPattern, ...] = ()
    functions: frozenset[str] = frozenset()
    has_where: bool | None = None
    where_tautology: bool | None = None
    has_limit: bool | None = None
    roles: frozenset[str] = frozenset()
    persons: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True, slots=True)
class CustomRule:
    id: str
    title: str
    severity: Severity
    action: Action
    match: RuleMatch
    file: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicySet:
    """Every person, role and custom rule of the loaded policy files."""

    persons: tuple[PersonPolicy, ...] = ()
    roles: tuple[RolePolicy, ...] = ()
    rules: tuple[CustomRule, ...] = ()
    version: str = "empty"
    files: tuple[str, ...] = ()
    all_duty_roles: frozenset[str] = frozenset()  # roles explicitly allowed admin + use + audit

    def person(self, name: str) -> PersonPolicy | None:
        for p in self.persons:
            if p.name == name:
                return p
        return None

    def role(self, name: str) -> RolePolicy | None:
        for r in self.roles:
            if r.name == name:
                return r
        return None
