"""StatementFacts: what one statement does, as the analyser proved it.

Facts are plain frozen values: the rule catalogue and the decision engine read
them and never look at SQL text. ``features`` is the bridge to the high-risk
catalogue (``rules.py``): each feature is a short name with the reason it was
seen, and each built-in rule fires on a set of features.

Object paths are tuples: ``(database, table)`` on MySQL and
``(database, schema, table)`` on PostgreSQL; an empty tuple is the whole
backend (server-level actions such as GRANT or SET GLOBAL).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlbastion.policies.model import ColumnRef, OutputColumn

ObjectPath = tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class PredicateUse:
    """A column used to filter, join, group, order or compare; ``lookup`` when it is
    only compared for equality with constants (``col = 'x'``, ``col IN ('x', 'y')``)."""

    column: ColumnRef
    lookup: bool
    clause: str  # where, join, having, group, order, distinct, window, set_operation


@dataclass(frozen=True, kw_only=True, slots=True)
class StatementFacts:
    kind: str  # select, insert, update, delete, drop_table, set, show, ...
    needs: frozenset[tuple[str, ObjectPath]] = frozenset()  # (grant action, object path)
    reads: frozenset[ObjectPath] = frozenset()
    writes: frozenset[ObjectPath] = frozenset()
    columns_read: frozenset[ColumnRef] = frozenset()
    predicates: tuple[PredicateUse, ...] = ()
    outputs: tuple[OutputColumn, ...] = ()
    produces_rows: bool = False
    transformed: frozenset[ColumnRef] = frozenset()  # columns reaching the output through a function
    counted: frozenset[ColumnRef] = frozenset()  # columns only counted (COUNT), which reveals no value
    copies: frozenset[ColumnRef] = frozenset()  # columns whose values are copied somewhere else
    functions: frozenset[str] = frozenset()
    unknown_functions: frozenset[str] = frozenset()
    unknown_function_columns: frozenset[ColumnRef] = frozenset()
    unknown_objects: frozenset[ObjectPath] = frozenset()  # read objects the catalog does not know
    has_where: bool = False
    where_tautology: bool = False
    limit: int | None = None
    features: tuple[tuple[str, str], ...] = ()  # (feature, why)
    effects: tuple[tuple[str, str], ...] = ()  # session-state changes (see Decision.session_effects)
    lexer_change: bool = False  # changes how later statements are lexed
    unprovable: tuple[str, str] | None = None  # (reason code, why)
    # True when a literal's value (not just its place) shaped these facts:
    # constant logic in a filter (1=1), ORDER BY 1, set_config('search_path').
    # Such statements are cached by their exact text, never by fingerprint.
    literal_sensitive: bool = False

    def has(self, feature: str) -> bool:
        return any(f == feature for f, _ in self.features)


# -- function catalogue -------------------------------------------------------

FILE_FUNCTIONS = frozenset(
    {
        "load_file",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_logdir_ls",
        "lo_import",
        "lo_export",
        "lo_get",
        "lo_put",
        "lo_open",
        "lo_create",
        "lo_creat",
        "lo_from_bytea",
        "loread",
        "lowrite",
        "lo_unlink",
        "lo_truncate",
        "lo_lseek",
        "sys_exec",
        "sys_eval",
    }
)
TIMING_FUNCTIONS = frozenset(
    {
        "sleep",
        "benchmark",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "get_lock",
        "release_lock",
        "release_all_locks",
        "is_free_lock",
        "is_used_lock",
        "master_pos_wait",
        "source_pos_wait",
        "wait_for_executed_gtid_set",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_all",
        "pg_advisory_unlock_shared",
    }
)
SESSION_FUNCTIONS = frozenset(
    {
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_signal_backend",
        "pg_stat_get_activity",
        "pg_stat_get_backend_activity",
        "pg_stat_get_backend_pid",
        "pg_stat_get_backend_userid",
        "pg_stat_get_backend_client_addr",
        "pg_blocking_pids",
        "pg_notify",
        "pg_listening_channels",
    }
)
SERVER_FUNCTIONS = frozenset(
    {"pg_reload_conf", "pg_rotate_logfile", "pg_promote", "pg_switch_wal", "pg_create_restore_point"}
)
DYNAMIC_FUNCTIONS = frozenset(
    {
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "query_to_xmlschema",
        "table_to_xml",
        "table_to_xml_and_xmlschema",
        "cursor_to_xml",
        "schema_to_xml",
        "database_to_xml",
        "dblink",
        "dblink_exec",
        "dblink_send_query",
        "dblink_open",
    }
)

# Built-ins that sqlglot does not type but that only compute on their arguments
# (no I/O, no SQL execution, no session side effects).
SAFE_BUILTINS = frozenset(
    {
        # both
        "now",
        "user",
        "crc32",
        "bin",
        "conv",
        "field",
        "quote",
        "mid",
        "oct",
        "ord",
        "locate",
        "insert",
        "format",
        "char_length",
        "character_length",
        "octet_length",
        "bit_length",
        "lcase",
        "ucase",
        "space",
        "strcmp",
        "weekday",
        "dayname",
        "monthname",
        "curdate",
        "curtime",
        "sysdate",
        "utc_timestamp",
        "unix_timestamp",
        "from_unixtime",
        "makedate",
        "last_insert_id",
        "row_count",
        "found_rows",
        "connection_id",
        "current_role",
        "system_user",
        "session_user",
        "charset",
        "collation",
        "coercibility",
        "inet_aton",
        "inet_ntoa",
        "uuid_short",
        "json_valid",
        "json_type",
        "json_length",
        "json_depth",
        "json_keys",
        "json_contains",
        "json_unquote",
        "json_quote",
        "json_set",
        "json_insert",
        "json_replace",
        "json_remove",
        "json_merge_patch",
        "json_arrayagg",
        "json_objectagg",
        "isnull",
        "interval",
        "to_days",
        "to_seconds",
        "sec_to_time",
        "time_to_sec",
        "period_add",
        "period_diff",
        "yearweek",
        "weekofyear",
        "aes_encrypt",
        "aes_decrypt",
        "md5",
        "sha",
        # PostgreSQL catalog and session helpers used by drivers
        "format_type",
        "pg_get_expr",
        "pg_get_indexdef",
        "pg_get_constraintdef",
        "pg_get_viewdef",
        "pg_get_triggerdef",
        "pg_get_functiondef",
        "pg_get_function_arguments",
        "pg_get_function_result",
        "pg_get_function_identity_arguments",
        "pg_get_userbyid",
        "pg_get_serial_sequence",
        "pg_get_keywords",
        "pg_table_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_encoding_to_char",
        "pg_char_to_encoding",
        "pg_backend_pid",
        "pg_typeof",
        "pg_postmaster_start_time",
        "pg_is_in_recovery",
        "pg_client_encoding",
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_size_pretty",
        "pg_table_size",
        "pg_indexes_size",
        "pg_database_size",
        "has_table_privilege",
        "has_schema_privilege",
        "has_column_privilege",
        "has_database_privilege",
        "obj_description",
        "col_description",
        "shobj_description",
        "current_setting",
        "txid_current",
        "pg_current_xact_id",
        "inet_client_addr",
        "inet_server_addr",
        "inet_server_port",
        "version",
        "to_json",
        "to_jsonb",
        "json_agg",
        "jsonb_agg",
        "json_build_object",
        "jsonb_build_object",
        "json_build_array",
        "jsonb_build_array",
        "json_object_agg",
        "jsonb_object_agg",
        "jsonb_pretty",
        "jsonb_typeof",
        "json_typeof",
        "row_to_json",
        "array_to_json",
        "row",
        "quote_literal",
        "quote_ident",
        "quote_nullable",
        "convert_to",
        "convert_from",
        "digest",
        "gen_random_uuid",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "timeofday",
        "age",
        "make_date",
        "make_timestamp",
        "justify_days",
        "generate_series",
        "unnest",
        "array_length",
        "array_upper",
        "array_lower",
        "cardinality",
        "array_position",
        "array_remove",
        "array_append",
        "array_cat",
        "string_to_array",
        "regexp_split_to_array",
        "regexp_matches",
        "regexp_match",
        "to_number",
        "to_date",
        "to_timestamp",
        "nextval",
        "currval",
        "lastval",
        "chr",
        "sign",
        "div",
        "mod",
        "width_bucket",
        "getdate",
        "adddate",
        "addtime",
        "export_set",
        "find_in_set",
        "from_days",
        "inet6_aton",
        "inet6_ntoa",
        "make_set",
        "microsecond",
        "subdate",
        "subtime",
        "time_format",
        "timediff",
        "json_array",
        "json_search",
        "isfinite",
        "jsonb_set",
        "jsonb_extract_path_text",
        "json_extract_path_text",
        "jsonb_array_elements",
        "json_array_elements",
        "jsonb_array_elements_text",
        "json_array_elements_text",
        "jsonb_each",
        "json_each",
        "jsonb_each_text",
        "json_each_text",
        "jsonb_object_keys",
        "json_object_keys",
        "array_fill",
        "array_ndims",
        "array_dims",
        "every",
        "num_nonnulls",
        "num_nulls",
        "jsonb_path_query",
        "jsonb_strip_nulls",
        "to_regclass",
        "to_regtype",
        "pg_column_size",
        "txid_snapshot_xmin",
        "date_part",
    }
)

# Functions that are proven not to reveal their argument's value.
COUNTING_FUNCTIONS = frozenset({"count"})
