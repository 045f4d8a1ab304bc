"""The built-in high-risk rule catalogue.

Each rule has a stable id (it appears in client messages, audit events and
metrics), a title, a severity and a default action; roles may override the
action per rule (``rule_overrides`` in the policy). Built-in rules fire on
``StatementFacts.features`` (set by the analyser) or on other facts (WHERE
presence and tautologies); custom rules from the policy match facts too,
never SQL text.

Unprovable statements (``SB-UNPROVABLE-*``) and limits (``SB-LIMIT-*``) are
rules as well, so the message names why a statement was refused; their action
comes from the role's ``unprovable`` mode rather than from overrides.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlbastion.policies.model import Action, Severity


@dataclass(frozen=True, kw_only=True, slots=True)
class BuiltinRule:
    id: str
    title: str
    severity: Severity
    action: Action
    features: frozenset[str] = frozenset()
    description: str = ""


def _r(rule_id: str, title: str, severity: Severity, action: Action, *features: str, doc: str = "") -> BuiltinRule:
    return BuiltinRule(
        id=rule_id, title=title, severity=severity, action=action, features=frozenset(features), description=doc
    )


B, R, A = Action.BLOCK, Action.REVIEW, Action.ALERT

BUILTIN_RULES: tuple[BuiltinRule, ...] = (
    _r("HR-DDL-DROP", "Dropping a database, schema, table or view", "critical", B, "drop_object"),
    _r("HR-DDL-TRUNCATE", "Truncating a table", "critical", B, "truncate"),
    _r(
        "HR-DML-NO-WHERE",
        "UPDATE or DELETE without WHERE",
        "high",
        B,
        doc="An UPDATE or DELETE with no WHERE clause changes every row.",
    ),
    _r(
        "HR-DML-TAUTOLOGY",
        "UPDATE or DELETE with an always-true WHERE",
        "high",
        B,
        doc="WHERE 1=1, WHERE TRUE, WHERE id>0 OR 1 and the like change every row.",
    ),
    _r(
        "HR-DDL-ALTER-DESTRUCTIVE",
        "Destructive ALTER (drop column, drop key, type change)",
        "high",
        B,
        "alter_destructive",
    ),
    _r("HR-PRIV-GRANT", "GRANT / REVOKE", "critical", B, "grant"),
    _r("HR-PRIV-USER", "Creating or changing database accounts and roles", "critical", B, "user_admin"),
    _r("HR-PRIV-SET-ROLE", "Changing the acting role (SET ROLE / SESSION AUTHORIZATION)", "critical", B, "set_role"),
    _r("HR-SERVER-SETTINGS", "Changing server settings", "critical", B, "server_settings"),
    _r("HR-FILE-ACCESS", "Server file or program access", "critical", B, "file_access", "file_function"),
    _r("HR-DYNAMIC-SQL", "Dynamic SQL (PREPARE, EXECUTE, DO, CALL, query_to_xml …)", "high", B, "dynamic_sql"),
    _r("HR-CODE-CREATE", "Creating functions, procedures, triggers, events or rules", "high", B, "code_create"),
    _r(
        "HR-TIMING-LOCK",
        "Timing and lock functions (SLEEP, BENCHMARK, pg_sleep, GET_LOCK, LOCK)",
        "medium",
        B,
        "timing_function",
        "lock_statement",
    ),
    _r("HR-OTHER-SESSIONS", "Seeing or affecting other sessions", "high", B, "other_sessions"),
    _r("HR-PLANNER-STATS", "Reading planner statistics (pg_stats, histograms)", "high", B, "planner_stats"),
    _r("HR-HANDLER", "HANDLER statements", "high", B, "handler"),
    _r(
        "HR-EXPLAIN-ANALYZE-WRITE", "EXPLAIN ANALYZE of a write (it runs the write)", "high", B, "explain_analyze_write"
    ),
    _r("HR-SYSTEM-TABLES", "Reading or writing privileged system tables", "high", B, "system_table"),
    # Masking guards: only fire for columns the person sees masked or denied.
    _r("MASK-DENY", "Reading a column this role may not see", "high", B),
    _r("MASK-INFERENCE", "Filtering, ordering or comparing on a masked column", "high", B),
    _r("MASK-TRANSFORM", "Computing on a masked column in the result", "high", B),
    _r("MASK-COPY", "Copying masked data elsewhere", "high", B),
    _r("MASK-UNPROVABLE", "Result lineage cannot be proven for a role with masks", "high", B),
    _r("MASK-SIDE-CHANNEL", "Diagnostics that can echo masked values", "medium", B, "diagnostics"),
    # Access.
    _r("SB-GRANT-DENIED", "Not granted", "high", B),
    _r("SB-DUTY", "Duty separation: this role does not use data", "high", B),
    _r("SB-ADMISSION", "Person not allowed now or from here", "high", B),
    _r("SB-UNKNOWN-FUNCTION", "Call of a function the analyser does not know", "medium", B),
    # Fail-closed analysis.
    _r("SB-UNPROVABLE-PARSE", "Statement cannot be parsed", "high", B),
    _r("SB-UNPROVABLE-COMMAND", "Statement is not understood by the analyser", "high", B),
    _r("SB-UNPROVABLE-TYPE", "Statement type is not analysed", "high", B),
    _r("SB-UNPROVABLE-LEXER", "Statement cannot be read with certainty", "high", B),
    _r("SB-UNPROVABLE-CHARSET", "Unsupported character set", "high", B),
    _r("SB-UNPROVABLE-FUNCTION", "Unknown function over a sensitive column", "high", B),
    _r("SB-UNPROVABLE-ANALYSIS", "The analyser failed on this statement", "high", B),
    _r("SB-LIMIT-SIZE", "Statement too large", "high", B),
    _r("SB-LIMIT-STATEMENTS", "Too many statements in one message", "high", B),
    _r("SB-LIMIT-DEPTH", "Statement nested too deeply", "high", B),
)

RULES: dict[str, BuiltinRule] = {r.id: r for r in BUILTIN_RULES}

FEATURE_RULES: dict[str, BuiltinRule] = {f: r for r in BUILTIN_RULES for f in r.features}

# Analyser reason codes → rule ids.
UNPROVABLE_RULES: dict[str, str] = {
    "parse": "SB-UNPROVABLE-PARSE",
    "command": "SB-UNPROVABLE-COMMAND",
    "type": "SB-UNPROVABLE-TYPE",
    "unsupported": "SB-UNPROVABLE-TYPE",
    "view": "SB-UNPROVABLE-TYPE",
    "lexer": "SB-UNPROVABLE-LEXER",
    "charset": "SB-UNPROVABLE-CHARSET",
    "size": "SB-LIMIT-SIZE",
    "count": "SB-LIMIT-STATEMENTS",
    "depth": "SB-LIMIT-DEPTH",
    "internal": "SB-UNPROVABLE-ANALYSIS",
}

UNPROVABLE_IDS = frozenset({*UNPROVABLE_RULES.values(), "SB-UNPROVABLE-FUNCTION", "MASK-UNPROVABLE"})

# Rules no role can relax: letting the session's lexer state drift from what the
# analyser follows would make every later statement of the session unprovable
# (a hidden DROP would pass the rules), so break-glass modes do not apply.
NON_RELAXABLE = frozenset({"SB-UNPROVABLE-LEXER", "SB-UNPROVABLE-CHARSET"})

# Relations whose reading is itself high risk, by (schema, relation) lower case.
PLANNER_STATS_RELATIONS = frozenset(
    {
        ("pg_catalog", "pg_stats"),
        ("pg_catalog", "pg_statistic"),
        ("pg_catalog", "pg_stats_ext"),
        ("pg_catalog", "pg_stats_ext_exprs"),
        ("pg_catalog", "pg_statistic_ext_data"),
        ("information_schema", "column_statistics"),
        ("mysql", "column_stats"),
        ("mysql", "column_statistics"),
    }
)
OTHER_SESSION_RELATIONS = frozenset(
    {
        ("pg_catalog", "pg_stat_activity"),
        ("pg_catalog", "pg_locks"),
        ("pg_catalog", "pg_prepared_xacts"),
        ("pg_catalog", "pg_stat_statements"),
        ("public", "pg_stat_statements"),
        ("pg_catalog", "pg_stat_ssl"),
        ("pg_catalog", "pg_stat_gssapi"),
        ("pg_catalog", "pg_cursors"),
        ("pg_catalog", "pg_prepared_statements"),
        ("information_schema", "processlist"),
        ("performance_schema", "threads"),
        ("performance_schema", "processlist"),
        ("performance_schema", "events_statements_current"),
        ("performance_schema", "events_statements_history"),
        ("performance_schema", "events_statements_history_long"),
        ("performance_schema", "events_statements_summary_by_digest"),
        ("performance_schema", "prepared_statements_instances"),
        ("sys", "processlist"),
        ("sys", "session"),
        ("sys", "x$processlist"),
        ("sys", "x$session"),
        ("mysql", "general_log"),
        ("mysql", "slow_log"),
        ("information_schema", "innodb_trx"),
    }
)
FILE_RELATIONS = frozenset({("pg_catalog", "pg_largeobject"), ("pg_catalog", "pg_largeobject_metadata")})
# System schemas: reading is metadata (allowed unless listed above or privileged);
# writing needs ``admin``.
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "mysql", "performance_schema", "sys"})
PRIVILEGED_RELATIONS = frozenset(
    {
        ("pg_catalog", "pg_authid"),
        ("pg_catalog", "pg_shadow"),
        ("pg_catalog", "pg_user_mapping"),
        ("pg_catalog", "pg_user_mappings"),
        ("pg_catalog", "pg_hba_file_rules"),
        ("pg_catalog", "pg_file_settings"),
        ("pg_catalog", "pg_ident_file_mappings"),
        ("mysql", "user"),
        ("mysql", "global_priv"),
        ("mysql", "db"),
        ("mysql", "tables_priv"),
        ("mysql", "columns_priv"),
        ("mysql", "proc"),
        ("mysql", "password_history"),
    }
)
