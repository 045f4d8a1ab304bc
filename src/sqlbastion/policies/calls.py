"""Function calls: their names, and which of them are high-risk features.

Every function a statement calls is recorded by name; file and program access,
timing and locks, other sessions, server settings and SQL-running functions
become features the rule catalogue fires on. ``set_config`` is judged by the
setting it names: a computed name, ``role`` / ``session_authorization`` /
``search_path`` are server settings, and lexer settings change how later
statements are read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp

from sqlbastion.policies.facts import (
    DYNAMIC_FUNCTIONS,
    FILE_FUNCTIONS,
    SERVER_FUNCTIONS,
    SESSION_FUNCTIONS,
    TIMING_FUNCTIONS,
)

if TYPE_CHECKING:
    from sqlbastion.policies.lineage import Acc

# Functions the analyser knows as features (never "unknown" even when sqlglot does not type them).
FLAGGED = FILE_FUNCTIONS | TIMING_FUNCTIONS | SESSION_FUNCTIONS | SERVER_FUNCTIONS | DYNAMIC_FUNCTIONS | {"set_config"}


def record_call(node: exp.Func, acc: Acc) -> str:
    """Record one function call in ``acc``; returns its lower-case name."""
    name = node.name.lower() if isinstance(node, exp.Anonymous) else node.sql_name().lower()
    acc.functions.add(name)
    if name in FILE_FUNCTIONS:
        acc.feature("file_function", f"calls {name}()")
    elif name in TIMING_FUNCTIONS:
        acc.feature("timing_function", f"calls {name}()")
    elif name in SESSION_FUNCTIONS:
        acc.feature("other_sessions", f"calls {name}()")
    elif name in SERVER_FUNCTIONS:
        acc.feature("server_settings", f"calls {name}()")
    elif name in DYNAMIC_FUNCTIONS:
        acc.feature("dynamic_sql", f"calls {name}(), which runs SQL text")
    elif name == "set_config":
        _set_config(node, acc)
    return name


def _set_config(node: exp.Func, acc: Acc) -> None:
    acc.literal_sensitive = True
    args: list[exp.Expr] = list(node.iter_expressions())
    first = args[0] if args else None
    if not isinstance(first, exp.Literal) or not first.is_string:
        acc.feature("server_settings", "calls set_config() with a computed setting name")
        return
    setting = str(first.this).lower()
    if setting in ("role", "session_authorization", "search_path"):
        acc.feature("server_settings", f"calls set_config('{setting}', ...)")
    elif setting in ("standard_conforming_strings", "client_encoding", "backslash_quote"):
        acc.feature("lexer_change", f"set_config('{setting}') changes how statements are read")
