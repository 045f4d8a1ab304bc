"""Numbers of the MySQL client/server protocol that sqlbastion reads or writes.

Sources (MySQL Source Code Documentation, "Client/Server Protocol"):
capability flags — page_protocol_basic_capabilities / group__group__cs__capabilities__flags;
server status — mysql_com.h ``SERVER_STATUS_flags_enum``;
commands — page_protocol_command_phase; column types — ``enum_field_types``;
session tracking — page_protocol_basic_ok_packet ("Session State Information").
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# Largest payload of one physical packet: a payload of exactly this length is
# continued by the next packet (page_protocol_basic_packets, "Sending More Than 16Mb").
MAX_PACKET_PAYLOAD = 0xFFFFFF


class Capability(IntFlag):
    """Capability flags (page_protocol_basic_capabilities)."""

    LONG_PASSWORD = 1  # MariaDB: CLIENT_MYSQL, cleared by MariaDB servers that send extended caps
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24
    OPTIONAL_RESULTSET_METADATA = 1 << 25
    ZSTD_COMPRESSION_ALGORITHM = 1 << 26
    QUERY_ATTRIBUTES = 1 << 27
    MULTI_FACTOR_AUTHENTICATION = 1 << 28
    CAPABILITY_EXTENSION = 1 << 29
    SSL_VERIFY_SERVER_CERT = 1 << 30
    REMEMBER_OPTIONS = 1 << 31


# What sqlbastion offers clients. Deliberately absent: COMPRESS and ZSTD (the
# proxy would relay compressed frames it cannot inspect), LOCAL_FILES (LOAD DATA
# LOCAL makes the proxy a file channel), QUERY_ATTRIBUTES (attributes travel
# beside the statement text, unparsed), OPTIONAL_RESULTSET_METADATA (column
# definitions are what masking needs), MULTI_FACTOR_AUTHENTICATION.
SERVER_CAPABILITIES = (
    Capability.LONG_PASSWORD
    | Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.CONNECT_WITH_DB
    | Capability.NO_SCHEMA
    | Capability.ODBC
    | Capability.IGNORE_SPACE
    | Capability.PROTOCOL_41
    | Capability.INTERACTIVE
    | Capability.IGNORE_SIGPIPE
    | Capability.TRANSACTIONS
    | Capability.RESERVED
    | Capability.SECURE_CONNECTION
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.PLUGIN_AUTH
    | Capability.CONNECT_ATTRS
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.SESSION_TRACK
    | Capability.DEPRECATE_EOF
)

# Never negotiated on either side, whatever a peer asks for.
FORBIDDEN_CAPABILITIES = (
    Capability.COMPRESS
    | Capability.ZSTD_COMPRESSION_ALGORITHM
    | Capability.LOCAL_FILES
    | Capability.QUERY_ATTRIBUTES
    | Capability.OPTIONAL_RESULTSET_METADATA
    | Capability.MULTI_FACTOR_AUTHENTICATION
    | Capability.CAPABILITY_EXTENSION
    | Capability.SSL_VERIFY_SERVER_CERT
    | Capability.REMEMBER_OPTIONS
)

# sqlbastion always needs these from a backend: 4.1 packets, plugin auth, and
# session tracking (to keep the database, sql_mode and character set in step).
REQUIRED_BACKEND_CAPABILITIES = (
    Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH | Capability.SESSION_TRACK
)


class ServerStatus(IntFlag):
    """Server status flags carried in OK and EOF packets (mysql_com.h)."""

    IN_TRANS = 1
    AUTOCOMMIT = 1 << 1
    MORE_RESULTS_EXISTS = 1 << 3
    NO_GOOD_INDEX_USED = 1 << 4
    NO_INDEX_USED = 1 << 5
    CURSOR_EXISTS = 1 << 6
    LAST_ROW_SENT = 1 << 7
    DB_DROPPED = 1 << 8
    NO_BACKSLASH_ESCAPES = 1 << 9
    METADATA_CHANGED = 1 << 10
    QUERY_WAS_SLOW = 1 << 11
    PS_OUT_PARAMS = 1 << 12
    IN_TRANS_READONLY = 1 << 13
    SESSION_STATE_CHANGED = 1 << 14


class Command(IntEnum):
    """Command bytes (page_protocol_command_phase)."""

    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F
    CLONE = 0x20
    # MariaDB: COM_STMT_BULK_EXECUTE (0xFA) is not offered: MARIADB_CLIENT_STMT_BULK_OPERATIONS is never negotiated.


class FieldType(IntEnum):
    """Column types (``enum_field_types``, page_protocol_com_query_response_text_resultset_column_definition)."""

    DECIMAL = 0x00
    TINY = 0x01
    SHORT = 0x02
    LONG = 0x03
    FLOAT = 0x04
    DOUBLE = 0x05
    NULL = 0x06
    TIMESTAMP = 0x07
    LONGLONG = 0x08
    INT24 = 0x09
    DATE = 0x0A
    TIME = 0x0B
    DATETIME = 0x0C
    YEAR = 0x0D
    NEWDATE = 0x0E
    VARCHAR = 0x0F
    BIT = 0x10
    TIMESTAMP2 = 0x11
    DATETIME2 = 0x12
    TIME2 = 0x13
    TYPED_ARRAY = 0x14
    VECTOR = 0xF2
    INVALID = 0xF3
    BOOL = 0xF4
    JSON = 0xF5
    NEWDECIMAL = 0xF6
    ENUM = 0xF7
    SET = 0xF8
    TINY_BLOB = 0xF9
    MEDIUM_BLOB = 0xFA
    LONG_BLOB = 0xFB
    BLOB = 0xFC
    VAR_STRING = 0xFD
    STRING = 0xFE
    GEOMETRY = 0xFF


def type_name(type_code: int) -> str:
    """The lowercase protocol type name without MYSQL_TYPE_ (``var_string``), as mask plans expect."""
    try:
        return FieldType(type_code).name.lower()
    except ValueError:
        return f"unknown_{type_code}"


# Binary protocol value widths (page_protocol_binary_resultset, "Binary Protocol Value").
# Types not listed here are length-encoded strings, except the temporal types below.
FIXED_WIDTH: dict[int, int] = {
    FieldType.LONGLONG: 8,
    FieldType.DOUBLE: 8,
    FieldType.LONG: 4,
    FieldType.INT24: 4,
    FieldType.FLOAT: 4,
    FieldType.SHORT: 2,
    FieldType.YEAR: 2,
    FieldType.TINY: 1,
    FieldType.NULL: 0,
}
# Temporal binary values: one length byte, then that many bytes (0, 4, 7 or 11; TIME: 0, 8 or 12).
TEMPORAL_TYPES = frozenset({FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP, FieldType.TIME, FieldType.NEWDATE})


class SessionTrack(IntEnum):
    """Session state change types in OK packets (``enum_session_state_type``)."""

    SYSTEM_VARIABLES = 0
    SCHEMA = 1
    STATE_CHANGE = 2
    GTIDS = 3
    TRANSACTION_CHARACTERISTICS = 4
    TRANSACTION_STATE = 5


class ErrorCode(IntEnum):
    """Server error numbers sqlbastion sends itself (MySQL Server Error Message Reference)."""

    ER_CON_COUNT_ERROR = 1040
    ER_HANDSHAKE_ERROR = 1043
    ER_ACCESS_DENIED_ERROR = 1045
    ER_UNKNOWN_COM_ERROR = 1047
    ER_SERVER_SHUTDOWN = 1053
    ER_KILL_DENIED_ERROR = 1095
    ER_NET_PACKET_TOO_LARGE = 1153
    ER_NET_READ_ERROR = 1158
    ER_NET_PACKETS_OUT_OF_ORDER = 1156
    ER_SPECIFIC_ACCESS_DENIED_ERROR = 1227
    ER_NOT_SUPPORTED_YET = 1235
    ER_UNKNOWN_STMT_HANDLER = 1243
    ER_MAX_PREPARED_STMT_COUNT_REACHED = 1461
    ER_MALFORMED_PACKET = 1835
    # Client-library numbers, sent by sqlbastion when the backend is the one that failed:
    # clients already treat them as "the server is gone", which is what happened.
    CR_CONN_HOST_ERROR = 2003
    CR_SERVER_LOST = 2013


SQLSTATE: dict[int, str] = {
    ErrorCode.ER_CON_COUNT_ERROR: "08004",
    ErrorCode.ER_HANDSHAKE_ERROR: "08S01",
    ErrorCode.ER_ACCESS_DENIED_ERROR: "28000",
    ErrorCode.ER_UNKNOWN_COM_ERROR: "08S01",
    ErrorCode.ER_SERVER_SHUTDOWN: "08S01",
    ErrorCode.ER_KILL_DENIED_ERROR: "HY000",
    ErrorCode.ER_NET_PACKET_TOO_LARGE: "08S01",
    ErrorCode.ER_NET_READ_ERROR: "08S01",
    ErrorCode.ER_NET_PACKETS_OUT_OF_ORDER: "08S01",
    ErrorCode.ER_SPECIFIC_ACCESS_DENIED_ERROR: "42000",
    ErrorCode.ER_NOT_SUPPORTED_YET: "42000",
    ErrorCode.ER_UNKNOWN_STMT_HANDLER: "HY000",
    ErrorCode.ER_MAX_PREPARED_STMT_COUNT_REACHED: "42000",
    ErrorCode.ER_MALFORMED_PACKET: "HY000",
    ErrorCode.CR_CONN_HOST_ERROR: "HY000",
    ErrorCode.CR_SERVER_LOST: "HY000",
}

# Character set / collation ids → Python codecs, for decoding statement text
# (information_schema.COLLATIONS). Unknown ids are refused: text the proxy
# cannot decode is text it cannot analyse.
CHARSET_NAMES: dict[str, str] = {
    "utf8mb4": "utf-8",
    "utf8mb3": "utf-8",
    "utf8": "utf-8",
    "latin1": "cp1252",
    "ascii": "ascii",
    "binary": "utf-8",
    "gbk": "gbk",
    "gb2312": "gb2312",
    "gb18030": "gb18030",
    "big5": "big5",
    "sjis": "shift_jis",
    "cp932": "cp932",
    "euckr": "euc_kr",
    "ujis": "euc_jp",
    "utf16": "utf-16-be",
    "utf32": "utf-32-be",
    "ucs2": "utf-16-be",
    "latin2": "iso8859_2",
    "cp1250": "cp1250",
    "cp1251": "cp1251",
    "cp1256": "cp1256",
    "cp1257": "cp1257",
    "greek": "iso8859_7",
    "hebrew": "iso8859_8",
    "koi8r": "koi8_r",
}

# Collation id → character set name, for the ids clients put in the handshake.
COLLATION_CHARSET: dict[int, str] = {
    8: "latin1",
    47: "latin1",
    48: "latin1",
    5: "latin1",
    11: "ascii",
    65: "ascii",
    28: "gbk",
    87: "gbk",
    24: "gb2312",
    86: "gb2312",
    1: "big5",
    84: "big5",
    63: "binary",
    33: "utf8mb3",
    83: "utf8mb3",
    192: "utf8mb3",
    45: "utf8mb4",
    46: "utf8mb4",
    224: "utf8mb4",
    255: "utf8mb4",
    248: "gb18030",
}


def python_codec(charset: str) -> str | None:
    """The Python codec for a MySQL character set name, or None when sqlbastion cannot decode it."""
    return CHARSET_NAMES.get(charset.lower())
