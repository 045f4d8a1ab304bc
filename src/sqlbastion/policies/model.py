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
