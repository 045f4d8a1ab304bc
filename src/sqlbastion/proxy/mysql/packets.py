"""Typed messages of the connection and command phases: decode from a payload, encode to one.

Each class cites its page of the MySQL protocol documentation
(https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_*.html).
Decoders take one reassembled payload (see ``framing``) and raise
``MalformedPacket`` on anything short or impossible; encoders return a payload
(the caller frames it with a sequence id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlbastion.proxy.mysql.constants import Capability, ServerStatus, SessionTrack, type_name
from sqlbastion.proxy.mysql.errors import MalformedPacket
from sqlbastion.proxy.mysql.wire import PayloadReader, lenenc_bytes, lenenc_int
from sqlbastion.proxy.session import ResultColumn

__all__ = [
    "AuthMoreData",
    "AuthSwitchRequest",
    "ColumnDefinition",
    "EofPacket",
    "ErrPacket",
    "HandshakeResponse",
    "HandshakeV10",
    "OkPacket",
    "SessionStateChange",
    "SslRequest",
    "StmtPrepareOk",
    "is_eof_packet",
    "is_err_packet",
    "is_ok_packet",
    "result_columns",
]

OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
MAX_ATTRS_BYTES = 64 << 10  # connection attributes a client may send (MySQL caps them at 64 KiB too)
MAX_NAME_BYTES = 1024  # user names, database names, plugin names


def is_err_packet(payload: bytes) -> bool:
    return len(payload) > 0 and payload[0] == ERR_HEADER


def is_eof_packet(payload: bytes) -> bool:
    """A classic EOF packet (page_protocol_basic_eof_packet): 0xFE and fewer than 9 bytes."""
    return len(payload) < 9 and len(payload) > 0 and payload[0] == EOF_HEADER


def is_ok_packet(payload: bytes, *, deprecate_eof: bool = False) -> bool:
    """An OK packet (0x00), or with CLIENT_DEPRECATE_EOF the 0xFE OK that ends a result set."""
    if not payload:
        return False
    if payload[0] == OK_HEADER:
        return len(payload) >= 7
    return deprecate_eof and payload[0] == EOF_HEADER and 7 <= len(payload) < 0xFFFFFF


# ---------------------------------------------------------------------------
# Connection phase


@dataclass(frozen=True, kw_only=True, slots=True)
class HandshakeV10:
    """page_protocol_connection_phase_packets_protocol_handshake_v10."""

    server_version: str
    connection_id: int
    auth_data: bytes  # the whole nonce (part 1 + part 2, without the trailing NUL)
    capabilities: int
    charset: int = 45  # utf8mb4_general_ci
    status: int = int(ServerStatus.AUTOCOMMIT)
    auth_plugin: str = "mysql_native_password"
    mariadb_capabilities: int = 0  # MariaDB: the 4 reserved bytes when CLIENT_MYSQL (bit 0) is clear

    def encode(self) -> bytes:
        caps = self.capabilities
        data = self.auth_data
        out = bytearray()
        out.append(10)  # int<1> protocol version
        out += self.server_version.encode("utf-8") + b"\x00"  # string<NUL> server version
        out += self.connection_id.to_bytes(4, "little")  # int<4> thread id
        out += data[:8] + b"\x00"  # string[8] auth-plugin-data-part-1, int<1> filler
        out += (caps & 0xFFFF).to_bytes(2, "little")  # int<2> capability_flags_1
        out.append(self.charset)  # int<1> character_set
        out += self.status.to_bytes(2, "little")  # int<2> status_flags
        out += ((caps >> 16) & 0xFFFF).to_bytes(2, "little")  # int<2> capability_flags_2
        out.append(len(data) + 1 if caps & Capability.PLUGIN_AUTH else 0)  # int<1> auth_plugin_data_len
        out += b"\x00" * 6  # string[6] reserved
        out += self.mariadb_capabilities.to_bytes(4, "little")  # string[4] reserved / MariaDB extended caps
        part2 = data[8:]
        out += part2 + b"\x00" * max(0, 13 - len(part2))  # auth-plugin-data-part-2, $len=MAX(13, len - 8)
        if caps & Capability.PLUGIN_AUTH:
            out += self.auth_plugin.encode("ascii") + b"\x00"  # string<NUL> auth_plugin_name
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeV10:
        r = PayloadReader(payload)
        version = r.int1("protocol version")
        if version != 10:
            raise MalformedPacket(f"unsupported handshake protocol version {version}")
        server_version = r.nul_bytes("server version").decode("utf-8", "replace")
        connection_id = r.int4("thread id")
        part1 = r.fixed(8, "auth-plugin-data-part-1")
        r.skip(1)
        caps = r.int2("capability_flags_1")
        charset = 45
        status = 0
        plugin = "mysql_native_password"
        mariadb_caps = 0
        data = part1
        if not r.at_end():
            charset = r.int1("character_set")
            status = r.int2("status_flags")
            caps |= r.int2("capability_flags_2") << 16
            data_len = r.int1("auth_plugin_data_len")
            r.skip(6, "reserved")
            mariadb_caps = r.int4("reserved / MariaDB capabilities")
            if caps & Capability.SECURE_CONNECTION:
                n = max(13, data_len - 8)
                part2 = r.fixed(n, "auth-plugin-data-part-2")
                data = part1 + part2.rstrip(b"\x00") if data_len == 0 else part1 + part2[: max(0, data_len - 9)]
            if caps & Capability.PLUGIN_AUTH:
                # Some servers omit the final NUL (MySQL bug #59453): read to the end then.
                rest = r.rest()
                plugin = rest.split(b"\x00", 1)[0].decode("ascii", "replace")
        if caps & Capability.LONG_PASSWORD:
            mariadb_caps = 0
        return cls(
            server_version=server_version,
            connection_id=connection_id,
            auth_data=data,
            capabilities=caps,
            charset=charset,
            status=status,
            auth_plugin=plugin,
            mariadb_capabilities=mariadb_caps,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class SslRequest:
    """page_protocol_connection_phase_packets_protocol_ssl_request: the first 32 bytes of a response."""

    capabilities: int
    max_packet: int = 1 << 24
    charset: int = 45

    def encode(self) -> bytes:
        return (
            self.capabilities.to_bytes(4, "little")  # int<4> client_flag
            + self.max_packet.to_bytes(4, "little")  # int<4> max_packet_size
            + bytes((self.charset,))  # int<1> character_set
            + b"\x00" * 23  # filler[23]
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class HandshakeResponse:
    """page_protocol_connection_phase_packets_protocol_handshake_response (HandshakeResponse41)."""

    capabilities: int
    max_packet: int
    charset: int
    user: bytes
    auth_response: bytes = b""
    database: bytes | None = None
    auth_plugin: str | None = None
    attrs: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def is_ssl_request(self) -> bool:
        return False

    def encode(self) -> bytes:
        caps = self.capabilities
        out = bytearray()
        out += caps.to_bytes(4, "little")  # int<4> client_flag
        out += self.max_packet.to_bytes(4, "little")  # int<4> max_packet_size
        out.append(self.charset)  # int<1> character_set
        out += b"\x00" * 23  # filler
        out += self.user + b"\x00"  # string<NUL> username
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            out += lenenc_bytes(self.auth_response)  # string<lenenc> auth_response
        else:
            out.append(len(self.auth_response))  # int<1> auth_response_length
            out += self.auth_response
        if caps & Capability.CONNECT_WITH_DB:
            out += (self.database or b"") + b"\x00"  # string<NUL> database
        if caps & Capability.PLUGIN_AUTH:
            out += (self.auth_plugin or "").encode("ascii") + b"\x00"  # string<NUL> client_plugin_name
        if caps & Capability.CONNECT_ATTRS:
            body = b"".join(lenenc_bytes(k) + lenenc_bytes(v) for k, v in self.attrs)
            out += lenenc_bytes(body)  # int<lenenc> length of all key-values, then key/value pairs
        return bytes(out)

    @staticmethod
    def decode_ssl_request(payload: bytes) -> SslRequest | None:
        """The 32-byte SSL request, or None when ``payload`` is a full response."""
        if len(payload) != 32:
            return None
        r = PayloadReader(payload)
        caps = r.int4()
        if not caps & Capability.SSL:
            return None
        return SslRequest(capabilities=caps, max_packet=r.int4(), charset=r.int1())

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeResponse:
        r = PayloadReader(payload)
        caps = r.int4("client_flag")
        if not caps & Capability.PROTOCOL_41:
            raise MalformedPacket("HandshakeResponse320 (pre-4.1 clients) is not supported")
        max_packet = r.int4("max_packet_size")
        charset = r.int1("character_set")
        r.skip(23, "filler")
        user = r.nul_bytes("username")
        if len(user) > MAX_NAME_BYTES:
            raise MalformedPacket("user name too long")
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = r.lenenc_bytes("auth_response")
        elif caps & Capability.SECURE_CONNECTION:
            auth = r.fixed(r.int1("auth_response_length"), "auth_response")
        else:
            auth = r.nul_bytes("auth_response")
        database = None
        if caps & Capability.CONNECT_WITH_DB and not r.at_end():
            database = r.nul_bytes("database")
            if len(database) > MAX_NAME_BYTES:
                raise MalformedPacket("database name too long")
        plugin = None
        if caps & Capability.PLUGIN_AUTH and not r.at_end():
            plugin = r.nul_bytes("client_plugin_name").decode("ascii", "replace")[:64]
        attrs: list[tuple[bytes, bytes]] = []
        if caps & Capability.CONNECT_ATTRS and not r.at_end():
            total = r.lenenc_int("length of all key-values")
            if total > MAX_ATTRS_BYTES:
                raise MalformedPacket("connection attributes too large")
            ar = PayloadReader(r.fixed(total, "connection attributes"))
            while not ar.at_end():
                attrs.append((ar.lenenc_bytes("attribute key"), ar.lenenc_bytes("attribute value")))
        return cls(
            capabilities=caps,
            max_packet=max_packet,
            charset=charset,
            user=user,
            auth_response=auth,
            database=database,
            auth_plugin=plugin,
            attrs=tuple(attrs),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthSwitchRequest:
    """page_protocol_connection_phase_packets_protocol_auth_switch_request: 0xFE, plugin, data."""

    plugin: str
    data: bytes

    def encode(self) -> bytes:
        # int<1> 0xFE, string<NUL> plugin name, string<EOF> plugin provided data (the nonce + NUL)
        return b"\xfe" + self.plugin.encode("ascii") + b"\x00" + self.data

    @classmethod
    def decode(cls, payload: bytes) -> AuthSwitchRequest:
        r = PayloadReader(payload)
        if r.int1("status") != 0xFE:
            raise MalformedPacket("not an AuthSwitchRequest")
        if r.at_end():
            # Old servers: AuthSwitchRequest without data means "use mysql_old_password".
            raise MalformedPacket("old-password authentication switch is not supported")
        plugin = r.nul_bytes("plugin name").decode("ascii", "replace")
        return cls(plugin=plugin, data=r.rest())


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthMoreData:
    """page_protocol_connection_phase_packets_protocol_auth_more_data: 0x01, then plugin data."""

    data: bytes

    def encode(self) -> bytes:
        return b"\x01" + self.data

    @classmethod
    def decode(cls, payload: bytes) -> AuthMoreData:
        if not payload or payload[0] != 0x01:
            raise MalformedPacket("not an AuthMoreData packet")
        return cls(data=payload[1:])


# ---------------------------------------------------------------------------
# Generic responses


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionStateChange:
    """One entry of the OK packet's session state information."""

    kind: int
    data: bytes

    def system_variable(self) -> tuple[bytes, bytes] | None:
        """(name, value) for SESSION_TRACK_SYSTEM_VARIABLES entries."""
        if self.kind != SessionTrack.SYSTEM_VARIABLES:
            return None
        r = PayloadReader(self.data)
        return r.lenenc_bytes("variable name"), r.lenenc_bytes("variable value")

    def schema(self) -> bytes | None:
        if self.kind != SessionTrack.SCHEMA:
            return None
        return PayloadReader(self.data).lenenc_bytes("schema name")


@dataclass(frozen=True, kw_only=True, slots=True)
class OkPacket:
    """page_protocol_basic_ok_packet."""

    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = int(ServerStatus.AUTOCOMMIT)
    warnings: int = 0
    info: bytes = b""
    session_state: bytes | None = None  # raw session state info when SERVER_SESSION_STATE_CHANGED
    header: int = OK_HEADER

    def encode(self, capabilities: int) -> bytes:
        out = bytearray((self.header,))
        out += lenenc_int(self.affected_rows)  # int<lenenc> affected_rows
        out += lenenc_int(self.last_insert_id)  # int<lenenc> last_insert_id
        status = self.status
        send_state = capabilities & Capability.SESSION_TRACK and self.session_state is not None
        if not send_state:
            status &= ~ServerStatus.SESSION_STATE_CHANGED
        out += status.to_bytes(2, "little")  # int<2> status_flags
        out += self.warnings.to_bytes(2, "little")  # int<2> warnings
        if capabilities & Capability.SESSION_TRACK:
            if self.info or send_state:
                out += lenenc_bytes(self.info)  # string<lenenc> info
            if send_state:
                out += lenenc_bytes(self.session_state or b"")  # string<lenenc> session state info
        else:
            out += self.info  # string<EOF> info
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes, capabilities: int) -> OkPacket:
        r = PayloadReader(payload)
        header = r.int1("header")
        if header not in (OK_HEADER, EOF_HEADER):
            raise MalformedPacket("not an OK packet")
        affected = r.lenenc_int("affected_rows")
        last_id = r.lenenc_int("last_insert_id")
        status = r.int2("status_flags")
        warnings = r.int2("warnings")
        info = b""
        state = None
        if capabilities & Capability.SESSION_TRACK:
            if not r.at_end():
                info = r.lenenc_bytes("info")
            if status & ServerStatus.SESSION_STATE_CHANGED and not r.at_end():
                state = r.lenenc_bytes("session state info")
        else:
            info = r.rest()
        return cls(
            affected_rows=affected,
            last_insert_id=last_id,
            status=status,
            warnings=warnings,
            info=info,
            session_state=state,
            header=header,
        )

    def state_changes(self) -> list[SessionStateChange]:
        """The session state entries (type + data), in order."""
        if not self.session_state:
            return []
        r = PayloadReader(self.session_state)
        out: list[SessionStateChange] = []
        while not r.at_end():
            kind = r.int1("session state type")
            out.append(SessionStateChange(kind=kind, data=r.lenenc_bytes("session state data")))
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrPacket:
    """page_protocol_basic_err_packet."""

    errno: int
    message: str
    sqlstate: str = "HY000"

    def encode(self, capabilities: int = int(Capability.PROTOCOL_41)) -> bytes:
        out = bytearray(b"\xff")  # int<1> header
        out += self.errno.to_bytes(2, "little")  # int<2> error_code
        if capabilities & Capability.PROTOCOL_41:
            out += b"#" + self.sqlstate.encode("ascii")[:5].ljust(5, b"0")  # sql_state_marker, sql_state
        # string<EOF> error_message; bounded so a long backend message cannot grow without limit.
        out += self.message.encode("utf-8", "replace")[:8192]
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> ErrPacket:
        r = PayloadReader(payload)
        if r.int1("header") != ERR_HEADER:
            raise MalformedPacket("not an ERR packet")
        errno = r.int2("error_code")
        state = "HY000"
        if r.remaining >= 6 and payload[r.pos] == ord("#"):
            r.skip(1)
            state = r.fixed(5, "sql_state").decode("ascii", "replace")
        return cls(errno=errno, message=r.rest().decode("utf-8", "replace"), sqlstate=state)


@dataclass(frozen=True, kw_only=True, slots=True)
class EofPacket:
    """page_protocol_basic_eof_packet (without CLIENT_DEPRECATE_EOF)."""

    warnings: int = 0
    status: int = int(ServerStatus.AUTOCOMMIT)

    def encode(self) -> bytes:
        # int<1> 0xFE, int<2> warnings, int<2> status_flags
        return b"\xfe" + self.warnings.to_bytes(2, "little") + self.status.to_bytes(2, "little")

    @classmethod
    def decode(cls, payload: bytes) -> EofPacket:
        if not is_eof_packet(payload):
            raise MalformedPacket("not an EOF packet")
        if len(payload) >= 5:
            return cls(warnings=int.from_bytes(payload[1:3], "little"), status=int.from_bytes(payload[3:5], "little"))
        return cls(warnings=0, status=0)


# ---------------------------------------------------------------------------
# Result sets


@dataclass(frozen=True, kw_only=True, slots=True)
class ColumnDefinition:
    """page_protocol_com_query_response_text_resultset_column_definition (ColumnDefinition41)."""

    catalog: bytes = b"def"
    schema: bytes = b""
    table: bytes = b""
    org_table: bytes = b""
    name: bytes = b""
    org_name: bytes = b""
    charset: int = 45
    length: int = 0
    type: int = 0xFD
    flags: int = 0
    decimals: int = 0
    default: bytes | None = field(default=None)  # only in COM_FIELD_LIST responses

    def encode(self) -> bytes:
        out = bytearray()
        for v in (self.catalog, self.schema, self.table, self.org_table, self.name, self.org_name):
            out += lenenc_bytes(v)  # string<lenenc> catalog, schema, table, org_table, name, org_name
        out += b"\x0c"  # int<lenenc> length of fixed-length fields (always 0x0c)
        out += self.charset.to_bytes(2, "little")  # int<2> character_set
        out += self.length.to_bytes(4, "little")  # int<4> column_length
        out.append(self.type)  # int<1> type
        out += self.flags.to_bytes(2, "little")  # int<2> flags
        out.append(self.decimals)  # int<1> decimals
        out += b"\x00\x00"  # filler
        if self.default is not None:
            out += lenenc_bytes(self.default)
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> ColumnDefinition:
        r = PayloadReader(payload)
        catalog = r.lenenc_bytes("catalog")
        schema = r.lenenc_bytes("schema")
        table = r.lenenc_bytes("table")
        org_table = r.lenenc_bytes("org_table")
        name = r.lenenc_bytes("name")
        org_name = r.lenenc_bytes("org_name")
        fixed = r.lenenc_int("length of fixed-length fields")
        if fixed < 0x0A:
            raise MalformedPacket(f"column definition fixed part is {fixed} bytes, expected 12")
        start = r.pos
        charset = r.int2("character_set")
        length = r.int4("column_length")
        type_ = r.int1("type")
        flags = r.int2("flags")
        decimals = r.int1("decimals")
        r.pos = start
        r.skip(fixed, "fixed-length fields")
        default = r.lenenc_value_or_null("default values") if not r.at_end() else None
        return cls(
            catalog=catalog,
            schema=schema,
            table=table,
            org_table=org_table,
            name=name,
            org_name=org_name,
            charset=charset,
            length=length,
            type=type_,
            flags=flags,
            decimals=decimals,
            default=default,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class StmtPrepareOk:
    """page_protocol_com_stmt_prepare_response: COM_STMT_PREPARE_OK."""

    statement_id: int
    num_columns: int
    num_params: int
    warnings: int = 0

    def encode(self) -> bytes:
        return (
            b"\x00"  # int<1> status
            + self.statement_id.to_bytes(4, "little")  # int<4> statement_id
            + self.num_columns.to_bytes(2, "little")  # int<2> num_columns
            + self.num_params.to_bytes(2, "little")  # int<2> num_params
            + b"\x00"  # int<1> reserved_1
            + self.warnings.to_bytes(2, "little")  # int<2> warning_count
        )

    @classmethod
    def decode(cls, payload: bytes) -> StmtPrepareOk:
        r = PayloadReader(payload)
        if r.int1("status") != 0:
            raise MalformedPacket("not a COM_STMT_PREPARE_OK")
        sid = r.int4("statement_id")
        cols = r.int2("num_columns")
        params = r.int2("num_params")
        warnings = 0
        if r.remaining >= 3:
            r.skip(1)
            warnings = r.int2("warning_count")
        return cls(statement_id=sid, num_columns=cols, num_params=params, warnings=warnings)


def result_columns(cols: list[ColumnDefinition], binary: bool) -> list[ResultColumn]:
    """Column definitions as the protocol-neutral ``ResultColumn`` a mask planner takes.

    ``schema``/``table``/``column`` come from ColumnDefinition41 ``schema``/``org_table``/``org_name``:
    the base table and column a value comes from, whatever the statement renamed them to.
    """
    return [
        ResultColumn(
            name=c.name.decode("utf-8", "replace"),
            schema=c.schema.decode("utf-8", "replace") or None,
            table=c.org_table.decode("utf-8", "replace") or None,
            column=c.org_name.decode("utf-8", "replace") or None,
            type_name=type_name(c.type),
            binary=binary,
        )
        for c in cols
    ]
