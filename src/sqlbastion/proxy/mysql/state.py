"""Keeping ``session.state`` true to the backend (DESIGN.md decision 4).

sqlbastion turns on session tracking when it logs in (``SETUP_SQL``); every OK
packet then reports what changed — the current schema, and the system
variables that change how statements are lexed (``sql_mode``: ANSI_QUOTES,
NO_BACKSLASH_ESCAPES) or decoded (``character_set_client``) — whatever changed
them: ``USE``, COM_INIT_DB, ``SET``, a stored procedure
(page_protocol_basic_ok_packet, "Session State Information").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlbastion.proxy.mysql.constants import ServerStatus, SessionTrack
from sqlbastion.proxy.mysql.results import MetadataShortcut, ResultSummary
from sqlbastion.proxy.session import MaskPlan, Session, Verdict

__all__ = ["SETUP_SQL", "STATE_SQL", "PreparedStatement", "apply_state_changes", "quote_ident", "set_sql_mode"]

SETUP_SQL = (
    "SET SESSION session_track_schema = ON, session_track_state_change = ON, "
    "session_track_system_variables = 'autocommit,character_set_client,character_set_connection,"
    "character_set_results,time_zone,sql_mode'"
)
STATE_SQL = "SELECT DATABASE(), @@SESSION.sql_mode, @@SESSION.character_set_client"

_IN_TRANS = int(ServerStatus.IN_TRANS)
_NO_BACKSLASH_ESCAPES = int(ServerStatus.NO_BACKSLASH_ESCAPES)


def apply_state_changes(session: Session, summary: ResultSummary) -> None:
    """Keep ``session.state`` true to the backend from OK session-tracking data and status flags."""
    state = session.state
    for ok in summary.oks:
        for change in ok.state_changes():
            if change.kind == SessionTrack.SCHEMA:
                schema = change.schema()
                state.database = schema.decode("utf-8", "replace") if schema else None
            elif change.kind == SessionTrack.SYSTEM_VARIABLES:
                pair = change.system_variable()
                if pair is None:
                    continue
                name, value = pair[0].decode("ascii", "replace").lower(), pair[1].decode("utf-8", "replace")
                if name == "sql_mode":
                    set_sql_mode(session, value)
                elif name == "character_set_client":
                    state.client_encoding = value.lower()
    status = summary.status
    if status is not None:
        # The server reports these two in every OK/EOF status (mysql_com.h), whatever changed them.
        state.in_transaction = bool(status & _IN_TRANS)
        state.no_backslash_escapes = bool(status & _NO_BACKSLASH_ESCAPES)


def set_sql_mode(session: Session, value: str) -> None:
    modes = {m.strip().upper() for m in value.split(",")}
    session.state.ansi_quotes = bool(modes & {"ANSI_QUOTES", "ANSI"})
    session.state.no_backslash_escapes = "NO_BACKSLASH_ESCAPES" in modes


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass(kw_only=True, slots=True)
class PreparedStatement:
    """A statement prepared on this connection: its decision and what was learnt from its results."""

    statement_id: int
    sql: str
    verdict: Verdict
    state_key: tuple[object, ...]
    num_params: int
    plan: MaskPlan | None = None  # of the open cursor, for COM_STMT_FETCH
    types: list[int] = dataclasses.field(default_factory=list)
    # Plans by the exact bytes of the result's column definitions: valid while the verdict is.
    plan_cache: dict[bytes, tuple[MaskPlan, list[int]]] = dataclasses.field(default_factory=dict)
    shortcut: MetadataShortcut | None = None
    cursor_rows: int = 0  # rows of the open cursor sent so far (the row cap counts the whole cursor)
