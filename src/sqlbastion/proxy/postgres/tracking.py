"""What the PostgreSQL relay keeps about one connection, and the limits on it.

Prepared statements and portals as the client created them through the
protocol (with the decision each statement got), and one ``Pending`` entry per
forwarded message the backend will answer, in the order it will answer
(PostgreSQL 15 documentation §55.2.3). Plain data: the logic is in ``relay``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import RowColumn
from sqlbastion.proxy.session import MaskPlan, StatementOutcome, Verdict

__all__ = [
    "ColumnMeta",
    "ColumnResolver",
    "Kind",
    "Pending",
    "Portal",
    "Prepared",
    "may_change_state",
    "python_codec",
]

# Stand-ins for refused messages: text the server rejects at parse time without touching the
# catalog or any data, and a statement/portal name no client can have created.
REFUSED_SQL = b"sqlbastion_refused_statement"
REFUSED_NAME = b"sqlbastion \x01 refused"
WITHHELD = "sqlbastion: backend message withheld (the statement touched sensitive columns). Audit ref {}."
MAX_PENDING_ITEMS = 4096
MAX_PREPARED = 10000
MAX_PORTALS = 10000
COLUMN_CACHE_ENTRIES = 256
# The per-person row cap (docs/policy.md, ``max_rows``): the ErrorResponse text sent in place of the
# first row past the cap, and the short note the statement's audit event keeps in ``backend_error``.
ROW_CAP_MESSAGE = (
    "sqlbastion: result exceeds the row cap of {cap} rows for this person; "
    "exporting larger results needs the export action. Audit ref {ref}."
)
ROW_CAP_EXCEEDED = "row cap exceeded"
NO_CAP = 1 << 62  # "no row cap" as an integer: the fast path compares without a None test

# Words after which the session's search_path may have changed (SET, RESET,
# set_config, DISCARD, a rolled-back SET, DO/CALL running SET; EXECUTE of an SQL
# prepared statement and FETCH/MOVE of a cursor run a query written earlier, which
# may call set_config with none of these words in the statement itself).
# Over-matching costs one SHOW round trip; it never weakens a decision.
# Unicode-escaped identifiers (U&"...") could spell any of these words, so they count too.
# Matched against the lower-cased text: bytes.lower() and re.IGNORECASE on a bytes pattern both fold
# ASCII letters only, so the result is the same, and a case-sensitive search is about 25 % faster.
_STATE_WORDS = re.compile(
    rb"\b(set|reset|set_config|search_path|discard|rollback|abort|do|call|commit|end|execute|fetch|move)\b|u&"
)

_CODECS = {
    "UTF8": "utf-8",
    "SQL_ASCII": "latin-1",
    "LATIN1": "latin-1",
    "LATIN2": "iso8859_2",
    "LATIN3": "iso8859_3",
    "LATIN4": "iso8859_4",
    "LATIN5": "iso8859_9",
    "LATIN6": "iso8859_10",
    "LATIN7": "iso8859_13",
    "LATIN8": "iso8859_14",
    "LATIN9": "iso8859_15",
    "LATIN10": "iso8859_16",
    "ISO_8859_5": "iso8859_5",
    "ISO_8859_6": "iso8859_6",
    "ISO_8859_7": "iso8859_7",
    "ISO_8859_8": "iso8859_8",
    "KOI8R": "koi8_r",
    "KOI8U": "koi8_u",
    "EUC_JP": "euc_jp",
    "EUC_CN": "gb2312",
    "EUC_KR": "euc_kr",
    **{f"WIN{n}": f"cp{n}" for n in (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)},
}


def python_codec(pg_encoding: str) -> str:
    """The Python codec for a (safe) PostgreSQL client encoding. Unknown ones read as latin-1,
    which keeps every ASCII byte — all the analyser's lexing depends on — exactly in place."""
    return _CODECS.get(pg_encoding.upper(), "latin-1")


@dataclass(frozen=True, kw_only=True, slots=True)
class ColumnMeta:
    """What the catalog knows about one RowDescription field."""

    schema: str | None
    table: str | None
    column: str | None
    type_name: str


class ColumnResolver(Protocol):
    """Resolves RowDescription fields from the cache only (no I/O)."""

    def resolve(self, columns: Sequence[RowColumn]) -> list[ColumnMeta] | None:
        """None when some table or type OID is not cached yet."""
        ...


class Kind:
    """What a pending message is: its frontend message type letter (plain strings: they hash fast)."""

    QUERY: Final = "Q"
    PARSE: Final = "P"
    BIND: Final = "B"
    DESCRIBE: Final = "D"
    EXECUTE: Final = "E"
    CLOSE: Final = "C"
    SYNC: Final = "S"
    INTERNAL: Final = "internal"  # sqlbastion's own SHOW search_path; everything it returns is swallowed


@dataclass(slots=True)
class Prepared:
    sql: str
    verdict: Verdict
    state_key: tuple[object, ...]
    changes_state: bool
    row: tuple[RowColumn, ...] | None = None
    described: bool = False
    # Mask plans by (columns, result formats): the decision is reused per Execute, so is its plan.
    plans: dict[tuple[tuple[RowColumn, ...], tuple[int, ...]], MaskPlan] = field(default_factory=dict)


@dataclass(slots=True)
class Portal:
    statement: Prepared
    formats: tuple[int, ...]
    row: tuple[RowColumn, ...] | None = None
    described: bool = False
    # Rows sent to the client so far by this portal's Executes (the row cap counts across
    # portal suspension: Execute with a row limit, then Execute again).
    rows_sent: int = 0


@dataclass(slots=True)
class Pending:
    """One forwarded message awaiting its answer. QueryRelay._forward builds it positionally:
    keep the field order."""

    kind: str
    verdict: Verdict | None = None
    refused: bool = False  # the backend was sent a stand-in that fails; rewrite its error
    swallow: bool = False  # injected by sqlbastion: the client never sees the answer
    statement: Prepared | None = None
    portal: Portal | None = None
    refresh_state: bool = False
    sent_ns: int = 0
    outcome: StatementOutcome = field(default_factory=StatementOutcome)
    forward_ready: bool = False  # a swallowed stand-in whose ReadyForQuery the client must see
    rows_sent: int = 0  # a Query's rows sent in its earlier results (the row cap counts the whole message)


# The outcome of forwarded messages that are not statements (Bind, Describe, Close, Sync):
# written to, never read, never audited.
SCRATCH_OUTCOME = StatementOutcome()

# CopyData, CopyDone, CopyFail: they flow even while the relay holds other client messages.
COPY_MESSAGES = (p.COPY_DATA, p.COPY_DONE, p.COPY_FAIL)
# Backend answers that complete one pending message and need no other work (the hot path).
SIMPLE_COMPLETIONS = {
    p.PARSE_COMPLETE: Kind.PARSE,
    p.BIND_COMPLETE: Kind.BIND,
    p.CLOSE_COMPLETE: Kind.CLOSE,
}


def may_change_state(sql: bytes) -> bool:
    return _STATE_WORDS.search(sql.lower()) is not None


# Pending kinds that produce results, and the backend answers that end one.
RESULT_KINDS = frozenset({Kind.QUERY, Kind.EXECUTE, Kind.INTERNAL})
COMPLETIONS = frozenset({p.COMMAND_COMPLETE, p.EMPTY_QUERY, p.PORTAL_SUSPENDED})
DONE_MESSAGES = frozenset({p.PARSE_COMPLETE, p.BIND_COMPLETE, p.CLOSE_COMPLETE, p.NO_DATA})
# Which pending message each backend answer may belong to (§55.2.2, §55.2.3). Errors,
# notices, notifications and ParameterStatus may come at any time and are not listed.
ANSWERS: dict[int, frozenset[str]] = {
    p.PARSE_COMPLETE: frozenset({Kind.PARSE}),
    p.BIND_COMPLETE: frozenset({Kind.BIND}),
    p.CLOSE_COMPLETE: frozenset({Kind.CLOSE}),
    p.NO_DATA: frozenset({Kind.DESCRIBE}),
    p.PARAMETER_DESCRIPTION: frozenset({Kind.DESCRIBE}),
    p.ROW_DESCRIPTION: frozenset({Kind.DESCRIBE, Kind.QUERY, Kind.INTERNAL}),
    p.DATA_ROW: RESULT_KINDS,
    p.COMMAND_COMPLETE: RESULT_KINDS,
    p.EMPTY_QUERY: RESULT_KINDS,
    p.PORTAL_SUSPENDED: frozenset({Kind.EXECUTE}),
    p.COPY_IN_RESPONSE: RESULT_KINDS,
    p.COPY_OUT_RESPONSE: RESULT_KINDS,
    p.COPY_BOTH_RESPONSE: RESULT_KINDS,
    p.COPY_DATA: RESULT_KINDS,
    p.COPY_DONE: RESULT_KINDS,
    p.READY_FOR_QUERY: frozenset({Kind.QUERY, Kind.SYNC, Kind.INTERNAL}),
}
