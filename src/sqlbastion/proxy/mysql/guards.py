"""Protocol-level guards that the shared backend account makes necessary.

Every person's connection logs in to the backend as the same service account,
so the server itself cannot keep persons apart. These checks run before the
policy engine sees a statement, and each refuses (fail closed) rather than
guess:

* ``KILL`` reaches only the person's own sessions (``registry``). Only one
  plain ``KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`` per message is accepted,
  and it is rewritten to the backend's connection id. Any other text that
  mentions KILL where the lexer cannot be sure what the server will see
  (comments, backslashes, several statements) is refused.
* Process and session lists (``SHOW PROCESSLIST``, information_schema and
  performance_schema views, ``SHOW ENGINE … STATUS``) show every person's
  statements; they are refused.
* ``session_track_*`` variables are how sqlbastion keeps the database,
  sql_mode and character set in step with the backend; persons may not change them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

from sqlbastion.policies.model import Action, Decision, RuleHit
from sqlbastion.proxy.mysql.constants import python_codec
from sqlbastion.proxy.mysql.packets import ColumnDefinition
from sqlbastion.proxy.session import Verdict, blocked_message, new_event_id

__all__ = [
    "DIAGNOSTICS",
    "GuardRefusal",
    "KillRequest",
    "OwnProcessList",
    "check_statement",
    "decode_statement",
    "reads_diagnostics",
    "refusal_verdict",
    "rows_of_sessions",
]

_MYSQL = MySQL()

# Substrings that name views of other sessions' activity. Matched on the
# lowercased text, so quoting or comments cannot hide them.
_PROCESS_VIEWS = ("processlist", "performance_schema", "innodb_trx", "innodb_lock", "metadata_lock_info")


@dataclass(frozen=True, kw_only=True, slots=True)
class GuardRefusal:
    rule_id: str
    title: str
    why: str


@dataclass(frozen=True, kw_only=True, slots=True)
class KillRequest:
    """A plain KILL of one connection id: ``modifier`` is e.g. ``"QUERY "`` or ``"HARD CONNECTION "``."""

    modifier: str
    target: int

    def statement(self, backend_id: int) -> str:
        return f"KILL {self.modifier}{backend_id}"


@dataclass(frozen=True, kw_only=True, slots=True)
class OwnProcessList:
    """A plain ``SHOW [FULL] PROCESSLIST``: allowed, with the rows cut to the person's own sessions."""

    full: bool


KILL_OTHERS = GuardRefusal(
    rule_id="MYSQL-KILL",
    title="KILL outside the person's own sessions",
    why="KILL may name only one connection id of your own sessions, as a plain KILL [QUERY|CONNECTION] <id>",
)
PROCESS_LIST = GuardRefusal(
    rule_id="MYSQL-PROCESS-LIST",
    title="Process list of the shared backend account",
    why="process and session lists would show other persons' statements",
)
DIAGNOSTICS = GuardRefusal(
    rule_id="MYSQL-DIAGNOSTICS",
    title="Diagnostics beside a statement on sensitive columns",
    why="SHOW WARNINGS / SHOW ERRORS / GET DIAGNOSTICS in the same message would echo sensitive values",
)


def reads_diagnostics(text: str) -> bool:
    """Whether a message may read the diagnostics area (matched loosely: a false alarm only refuses)."""
    lower = text.lower()
    return "warnings" in lower or "errors" in lower or "diagnostics" in lower


SESSION_TRACK = GuardRefusal(
    rule_id="MYSQL-SESSION-TRACK",
    title="Changing sqlbastion's session tracking",
    why="session_track_* variables are managed by sqlbastion",
)


def _tokens(text: str) -> list[Token] | None:
    try:
        return list(_MYSQL.tokenize(text))
    except (SqlglotError, ValueError, RecursionError):
        return None


def _plain_kill(text: str, tokens: list[Token]) -> KillRequest | None:
    if any(marker in text for marker in ("/*", "--", "#", "\\")):
        return None
    toks = [t for t in tokens if t.token_type != TokenType.SEMICOLON or t is not tokens[-1]]
    if not toks or toks[0].token_type != TokenType.KILL:
        return None
    i = 1
    modifier = ""
    if i < len(toks) and toks[i].text.upper() in ("HARD", "SOFT"):
        modifier += toks[i].text.upper() + " "
        i += 1
    if i < len(toks) and toks[i].text.upper() in ("CONNECTION", "QUERY"):
        modifier += toks[i].text.upper() + " "
        i += 1
    if i != len(toks) - 1 or toks[i].token_type != TokenType.NUMBER or not toks[i].text.isdigit():
        return None
    target = int(toks[i].text)
    if target >= 1 << 64:
        return None
    return KillRequest(modifier=modifier, target=target)


def _plain_show_processlist(text: str) -> OwnProcessList | None:
    if any(marker in text for marker in ("/*", "--", "#", "\\")):
        return None
    tokens = _tokens(text)
    if tokens is None:
        return None
    words = [t.text.upper() for t in tokens if t.token_type != TokenType.SEMICOLON]
    if len(words) != len(tokens) - (1 if tokens and tokens[-1].token_type == TokenType.SEMICOLON else 0):
        return None  # a semicolon anywhere but at the end: several statements
    if words == ["SHOW", "PROCESSLIST"]:
        return OwnProcessList(full=False)
    if words == ["SHOW", "FULL", "PROCESSLIST"]:
        return OwnProcessList(full=True)
    return None


def _names_process_view(lower: str) -> bool:
    """Whether the text names one of _PROCESS_VIEWS: five substring tests without a generator
    (a third of the cost, on every text statement)."""
    return (
        "processlist" in lower
        or "performance_schema" in lower
        or "innodb_trx" in lower
        or "innodb_lock" in lower
        or "metadata_lock_info" in lower
    )


def check_statement(text: str) -> GuardRefusal | KillRequest | OwnProcessList | None:
    """None when the guards have nothing to say; a KillRequest to resolve; a process list to
    filter; or a refusal."""
    lower = text.lower()
    if "session_track" in lower:
        return SESSION_TRACK
    if _names_process_view(lower):
        return _plain_show_processlist(text) or PROCESS_LIST
    needs_tokens = "kill" in lower or "engine" in lower
    if not needs_tokens:
        return None
    tokens = _tokens(text)
    if tokens is None:
        return KILL_OTHERS if "kill" in lower else PROCESS_LIST
    for prev, tok in zip([None, *tokens], tokens, strict=False):
        if tok.text.upper() == "ENGINE" and prev is not None and prev.token_type == TokenType.SHOW:
            return PROCESS_LIST
    if "kill" not in lower:
        return None
    kill = _plain_kill(text, tokens)
    if kill is not None:
        return kill
    if any(t.token_type == TokenType.KILL for t in tokens) or any(m in lower for m in ("/*!", "/*m!", "\\")):
        return KILL_OTHERS
    return None


def decode_statement(raw: bytes, encoding: str) -> str | GuardRefusal:
    """Statement bytes as text in the session's character set, or a refusal: text sqlbastion
    cannot decode is text it cannot analyse (DESIGN.md decision 4)."""
    codec = python_codec(encoding)
    if codec is None:
        return GuardRefusal(
            rule_id="MYSQL-ENCODING",
            title="Statement text in an unsupported character set",
            why=f"sqlbastion cannot read statements in character set {encoding[:32]!r}",
        )
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return GuardRefusal(
            rule_id="MYSQL-ENCODING",
            title="Statement text that does not decode",
            why=f"the statement is not valid {encoding[:32]}",
        )


def refusal_verdict(sql: str, refusal: GuardRefusal, *, policy_version: str) -> Verdict:
    """A block verdict for one of these guards, with the client-facing text of DESIGN.md."""
    hit = RuleHit(rule_id=refusal.rule_id, title=refusal.title, severity="high", action=Action.BLOCK, why=refusal.why)
    decision = Decision(action=Action.BLOCK, rule_hits=(hit,), reason=refusal.why, policy_version=policy_version)
    event_id = new_event_id()
    return Verdict(
        decision=decision,
        event_id=event_id,
        started_ns=time.perf_counter_ns(),
        sql_text=sql,
        message=blocked_message(decision, event_id),
    )


def rows_of_sessions(own: frozenset[int]) -> Callable[[list[ColumnDefinition], list[bytes | None]], bool]:
    """A row filter for process lists: keep the rows whose ``Id`` is one of ``own``."""

    def keep(cols: list[ColumnDefinition], values: list[bytes | None]) -> bool:
        for i, c in enumerate(cols):
            if c.name.lower() == b"id":
                v = values[i]
                return v is not None and v.isdigit() and int(v) in own
        return False  # no Id column: nothing can be attributed to the person

    return keep
