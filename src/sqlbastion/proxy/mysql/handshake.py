"""The connection phase, both roles, as sans-IO state machines.

``PersonHandshake`` is sqlbastion acting as the server for a person's client
(page_protocol_connection_phase): Initial Handshake v10 → optional SSLRequest
and TLS → HandshakeResponse41 → an optional AuthSwitchRequest → the plugin's
exchange → OK or ERR. ``BackendHandshake`` is sqlbastion acting as the client
of the real server with the vaulted credentials.

Strategy: each machine is fed whole packets (``framing.Packet``) and answers
with one ``Step`` telling the glue what to do: send bytes and wait, upgrade to
TLS, or stop. Sequence ids are kept inside the machines. Every unexpected
packet or state is a typed error; a person's failure always produces the same
1045 text, whether the person or the password was wrong (no user enumeration).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

from sqlbastion import users as users_mod
from sqlbastion.proxy.mysql import auth
from sqlbastion.proxy.mysql.constants import (
    FORBIDDEN_CAPABILITIES,
    REQUIRED_BACKEND_CAPABILITIES,
    SERVER_CAPABILITIES,
    Capability,
    ErrorCode,
    ServerStatus,
)
from sqlbastion.proxy.mysql.errors import BackendAuthError, MalformedPacket, PacketsOutOfOrder, RemoteProtocolError
from sqlbastion.proxy.mysql.framing import Packet, frame
from sqlbastion.proxy.mysql.packets import (
    AuthMoreData,
    AuthSwitchRequest,
    ErrPacket,
    HandshakeResponse,
    HandshakeV10,
    OkPacket,
    SslRequest,
    is_err_packet,
)

__all__ = [
    "BackendHandshake",
    "PersonHandshake",
    "Step",
    "access_denied_text",
]

Action = Literal["send", "start_tls", "authenticated", "refused", "done", "failed"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """What the glue must do next.

    ``send``: write ``data`` and wait for the next packet. ``start_tls``: write
    ``data`` (may be empty), upgrade the transport, then call ``after_tls()``.
    ``authenticated`` (person side): the person is known; log in to the backend,
    then send ``PersonHandshake.ok()``. ``refused``: write ``data`` (an ERR) and
    close; ``reason`` is the auth-failure label. ``done`` / ``failed``: the
    backend login ended.
    """

    action: Action
    data: bytes = b""
    reason: str = ""


def access_denied_text(user: str, address: str) -> str:
    """The one 1045 text for every authentication failure (DESIGN.md, "Error messages")."""
    return f"Access denied for user '{user}'@'{address}' (using password: YES)"


def _check_seq(packet: Packet, expected: int) -> None:
    if packet.seq != expected:
        raise PacketsOutOfOrder(packet.seq, expected)


# ---------------------------------------------------------------------------
# sqlbastion as the server


class PersonHandshake:
    """Authenticates one person's client against the users file (sans-IO)."""

    def __init__(
        self,
        *,
        users: users_mod.UsersFile,
        connection_id: int,
        server_version: str,
        client_address: str,
        tls_available: bool,
        require_tls: bool,
        keys: auth.ServerKeyPair | None = None,
        charset: int = 45,
    ) -> None:
        self.users = users
        self.client_address = client_address
        self.tls_available = tls_available
        self.require_tls = require_tls
        self.keys = keys
        self.nonce = auth.new_nonce()
        caps = int(SERVER_CAPABILITIES)
        if tls_available:
            caps |= Capability.SSL
        self.server_capabilities = caps
        self.greeting_packet = HandshakeV10(
            server_version=server_version,
            connection_id=connection_id,
            auth_data=self.nonce,
            capabilities=caps,
            charset=charset,
            status=int(ServerStatus.AUTOCOMMIT),
            auth_plugin=auth.NATIVE,
        )
        self.tls = False
        self.response: HandshakeResponse | None = None
        self.capabilities = 0  # negotiated with the client
        self.person = ""
        self._creds: users_mod.PersonCredentials | None = None
        self._state = "greeted"
        self._seq = 1
        self._plugin = ""
        self._switched = False

    # -- output ------------------------------------------------------------

    def greeting(self) -> bytes:
        data, self._seq = frame(0, self.greeting_packet.encode())
        return data

    def _send(self, payload: bytes) -> bytes:
        data, self._seq = frame(self._seq, payload)
        return data

    def ok(self, *, status: int = int(ServerStatus.AUTOCOMMIT)) -> bytes:
        """The final OK of the connection phase (sent after the backend login worked)."""
        self._state = "done"
        return self._send(OkPacket(status=status).encode(self.capabilities))

    def error(self, errno: int, message: str, sqlstate: str | None = None) -> bytes:
        """An ERR in the connection phase (for example: the backend is unreachable)."""
        self._state = "done"
        from sqlbastion.proxy.mysql.constants import SQLSTATE

        err = ErrPacket(errno=errno, message=message, sqlstate=sqlstate or SQLSTATE.get(errno, "HY000"))
        return self._send(err.encode(self.capabilities or int(Capability.PROTOCOL_41)))

    def access_denied(self) -> bytes:
        return self.error(ErrorCode.ER_ACCESS_DENIED_ERROR, access_denied_text(self.person, self.client_address))

    def _refuse(self, reason: str) -> Step:
        return Step(action="refused", data=self.access_denied(), reason=reason)

    # -- input -------------------------------------------------------------

    def after_tls(self) -> None:
        self.tls = True
        self._state = "greeted"

    def receive_packet(self, packet: Packet) -> Step:
        """Advance the exchange with one packet from the client."""
        _check_seq(packet, self._seq)
        self._seq = packet.next_seq
        if self._state == "greeted":
            return self._on_response(packet.payload)
        if self._state == "switched":
            return self._on_auth_data(packet.payload)
        if self._state == "sha2_full":
            return self._on_sha2_full(packet.payload)
        raise RemoteProtocolError("unexpected packet in the connection phase", errno=ErrorCode.ER_HANDSHAKE_ERROR)

    def _on_response(self, payload: bytes) -> Step:
        ssl_req = HandshakeResponse.decode_ssl_request(payload)
        if ssl_req is not None:
            if not self.tls_available or self.tls:
                raise RemoteProtocolError("SSL was not offered", errno=ErrorCode.ER_HANDSHAKE_ERROR)
            self._state = "tls"
            return Step(action="start_tls")
        resp = HandshakeResponse.decode(payload)
        self.response = resp
        self.capabilities = int(resp.capabilities & self.server_capabilities & ~FORBIDDEN_CAPABILITIES)
        self.person = resp.user.decode("utf-8", "replace")
        if self.require_tls and not self.tls:
            return self._refuse("tls_required")
        self._creds = self.users.get(self.person)
        self._plugin = resp.auth_plugin or auth.NATIVE
        return self._authenticate(self._plugin, resp.auth_response)

    def _authenticate(self, plugin: str, data: bytes) -> Step:
        creds = self._creds
        if not data and not self._switched:
            # libmysqlclient (mysql-connector's C extension, the mysql CLI) sends no auth data
            # when the plugin it wants differs from the greeting's: "data was prepared for a
            # different plugin", and it waits for an AuthSwitchRequest with fresh data
            # (page_protocol_connection_phase_packets_protocol_auth_switch_request), as a MySQL
            # or MariaDB server sends. Unknown persons get the same switch, then the refusal.
            return self._switch(self._switch_target(plugin))
        if creds is None:
            # Unknown or disabled person: let the client finish a plausible exchange, then refuse.
            if plugin in (auth.NATIVE, auth.CACHING_SHA2) or self._switched:
                return self._refuse("bad_credentials")
            return self._switch(auth.NATIVE)
        if plugin == auth.NATIVE:
            if creds.mysql_native:
                ok = users_mod.check_mysql_native(creds.mysql_native, self.nonce, data)
                return self._accept() if ok else self._refuse("bad_credentials")
            if not self._switched and (creds.caching_sha2 or creds.pbkdf2):
                return self._switch(auth.CACHING_SHA2)
            return self._refuse("bad_credentials")
        if plugin == auth.CACHING_SHA2:
            if creds.caching_sha2 and len(data) == 32:
                ok = users_mod.check_caching_sha2_fast(creds.caching_sha2, self.nonce, data)
                if not ok:
                    return self._refuse("bad_credentials")
                fast_ok = self._send(AuthMoreData(data=bytes((auth.CACHING_SHA2_FAST_AUTH_SUCCESS,))).encode())
                return Step(action="authenticated", data=fast_ok)
            if not data:
                return self._refuse("bad_credentials")
            if not self._switched and creds.mysql_native:
                return self._switch(auth.NATIVE)  # a challenge-response is cheaper than full authentication
            if creds.pbkdf2:
                # No fast-path verifier: ask for the password (TLS) or the RSA exchange.
                self._state = "sha2_full"
                more = AuthMoreData(data=bytes((auth.CACHING_SHA2_PERFORM_FULL_AUTH,))).encode()
                return Step(action="send", data=self._send(more))
            return self._refuse("bad_credentials")
        if self._switched:
            return self._refuse("bad_credentials")
        return self._switch(auth.NATIVE if creds.mysql_native else auth.CACHING_SHA2)

    def _switch_target(self, plugin: str) -> str:
        """The plugin to switch an empty first response to: the client's, if the person has a verifier for it."""
        creds = self._creds
        if creds is None:
            return plugin if plugin in (auth.NATIVE, auth.CACHING_SHA2) else auth.NATIVE
        if plugin == auth.CACHING_SHA2 and creds.caching_sha2:
            return auth.CACHING_SHA2
        # A challenge-response is cheaper than caching_sha2's full authentication.
        return auth.NATIVE if creds.mysql_native else auth.CACHING_SHA2

    def change_user(self, user: bytes) -> Step:
        """Start re-authentication for COM_CHANGE_USER (page_protocol_com_change_user).

        The client's scramble in COM_CHANGE_USER was computed over the old nonce;
        sqlbastion always answers with an AuthSwitchRequest and a fresh nonce, for
        a plugin the named person has a verifier for, then continues as at login.
        """
        self.person = user.decode("utf-8", "replace")
        self._creds = self.users.get(self.person)
        self._switched = False
        self._seq = 1
        creds = self._creds
        plugin = auth.CACHING_SHA2 if creds is not None and not creds.mysql_native else auth.NATIVE
        return self._switch(plugin)

    def _switch(self, plugin: str) -> Step:
        self._switched = True
        self._plugin = plugin
        self.nonce = auth.new_nonce()
        self._state = "switched"
        req = AuthSwitchRequest(plugin=plugin, data=self.nonce + b"\x00").encode()
        return Step(action="send", data=self._send(req))

    def _on_auth_data(self, payload: bytes) -> Step:
        return self._authenticate(self._plugin, payload)

    def _on_sha2_full(self, payload: bytes) -> Step:
        creds = self._creds
        if payload == bytes((auth.CACHING_SHA2_REQUEST_PUBLIC_KEY,)) and not self.tls:
            if self.keys is None:
                return self._refuse("bad_credentials")
            return Step(action="send", data=self._send(AuthMoreData(data=self.keys.public_pem).encode()))
        if self.tls:
            password = payload.split(b"\x00", 1)[0]
        else:
            if self.keys is None:
                return self._refuse("bad_credentials")
            decrypted = self.keys.decrypt_password(payload, self.nonce)
            if decrypted is None:
                return self._refuse("bad_credentials")
            password = decrypted
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse("bad_credentials")
        if creds is None or not users_mod.check_cleartext(creds, text):
            return self._refuse("bad_credentials")
        return self._accept()

    def _accept(self) -> Step:
        self._state = "authenticated"
        return Step(action="authenticated")


# ---------------------------------------------------------------------------
# sqlbastion as a client of the backend


class BackendHandshake:
    """Logs in to the backend with the vaulted credentials (sans-IO).

    ``wanted_capabilities`` are what the person's client negotiated (so result
    formats stay identical on both sides); sqlbastion adds what it needs and
    removes what it forbids.
    """

    def __init__(
        self,
        *,
        user: str,
        password: str,
        database: str | None,
        wanted_capabilities: int,
        charset: int,
        attrs: tuple[tuple[bytes, bytes], ...] = (),
        tls_mode: str = "disable",
        max_packet: int = 1 << 24,
    ) -> None:
        self.user = user.encode("utf-8")
        self._password = password.encode("utf-8")
        self.database = database.encode("utf-8") if database else None
        self.wanted = wanted_capabilities
        self.charset = charset
        self.attrs = attrs
        self.tls_mode = tls_mode
        self.max_packet = max_packet
        self.greeting: HandshakeV10 | None = None
        self.capabilities = 0
        self.tls = False
        self.ok: OkPacket | None = None
        self._seq = 0
        self._state = "start"
        self._plugin = ""
        self._nonce = b""

    def _send(self, payload: bytes) -> bytes:
        data, self._seq = frame(self._seq, payload)
        return data

    def receive_packet(self, packet: Packet) -> Step:
        _check_seq(packet, self._seq)
        self._seq = packet.next_seq
        payload = packet.payload
        if is_err_packet(payload):
            err = ErrPacket.decode(payload)
            self._state = "failed"
            raise BackendAuthError(f"backend refused the login: {err.errno} {err.message}", errno=err.errno)
        if self._state == "start":
            return self._on_greeting(payload)
        if self._state == "auth":
            return self._on_auth_reply(payload)
        raise MalformedPacket("backend sent a packet after the login ended")

    def _on_greeting(self, payload: bytes) -> Step:
        g = HandshakeV10.decode(payload)
        self.greeting = g
        missing = REQUIRED_BACKEND_CAPABILITIES & ~g.capabilities
        if missing:
            raise BackendAuthError(f"backend lacks required capabilities {Capability(missing)!r}", kind="protocol")
        caps = (self.wanted | REQUIRED_BACKEND_CAPABILITIES) & ~FORBIDDEN_CAPABILITIES
        caps &= ~(Capability.SSL | Capability.CONNECT_WITH_DB)
        caps |= Capability.LONG_PASSWORD | Capability.TRANSACTIONS
        if self.database:
            caps |= Capability.CONNECT_WITH_DB
        if self.attrs:
            caps |= Capability.CONNECT_ATTRS
        caps &= g.capabilities | Capability.LONG_PASSWORD
        self._nonce = g.auth_data
        self._plugin = g.auth_plugin
        want_tls = self.tls_mode != "disable"
        if want_tls and g.capabilities & Capability.SSL:
            self.capabilities = int(caps | Capability.SSL)
            self._state = "tls"
            req = SslRequest(capabilities=self.capabilities, max_packet=self.max_packet, charset=self.charset)
            return Step(action="start_tls", data=self._send(req.encode()))
        if want_tls and self.tls_mode != "prefer":
            raise BackendAuthError(f"backend does not offer TLS (tls mode {self.tls_mode})", kind="tls")
        self.capabilities = int(caps)
        return self._response()

    def after_tls(self) -> Step:
        self.tls = True
        return self._response()

    def _response(self) -> Step:
        self._state = "auth"
        resp = HandshakeResponse(
            capabilities=self.capabilities,
            max_packet=self.max_packet,
            charset=self.charset,
            user=self.user,
            auth_response=self._scramble(self._plugin, self._nonce),
            database=self.database,
            auth_plugin=self._plugin,
            attrs=self.attrs,
        )
        return Step(action="send", data=self._send(resp.encode()))

    def _scramble(self, plugin: str, nonce: bytes) -> bytes:
        if plugin == auth.NATIVE:
            return auth.native_scramble(self._password, nonce)
        if plugin == auth.CACHING_SHA2:
            return auth.caching_sha2_scramble(self._password, nonce)
        if plugin in (auth.CLEAR_TEXT_PLUGIN, auth.SHA256_PLUGIN) and self.tls:
            return self._password + b"\x00"
        raise BackendAuthError(f"backend asked for unsupported authentication plugin {plugin!r}", kind="login")

    def _on_auth_reply(self, payload: bytes) -> Step:
        first = payload[0] if payload else -1
        if first == 0x00:
            self.ok = OkPacket.decode(payload, self.capabilities)
            self._state = "done"
            return Step(action="done")
        if first == 0xFE:
            switch = AuthSwitchRequest.decode(payload)
            self._plugin = switch.plugin
            self._nonce = switch.data.rstrip(b"\x00") if switch.data.endswith(b"\x00") else switch.data
            return Step(action="send", data=self._send(self._scramble(switch.plugin, self._nonce)))
        if first == 0x01:
            more = AuthMoreData.decode(payload).data
            if self._plugin not in (auth.CACHING_SHA2, auth.SHA256_PLUGIN):
                raise MalformedPacket(f"unexpected AuthMoreData for plugin {self._plugin}")
            if more == bytes((auth.CACHING_SHA2_FAST_AUTH_SUCCESS,)):
                return Step(action="send")  # the OK follows
            if more == bytes((auth.CACHING_SHA2_PERFORM_FULL_AUTH,)):
                if self.tls:
                    return Step(action="send", data=self._send(self._password + b"\x00"))
                return Step(action="send", data=self._send(bytes((auth.CACHING_SHA2_REQUEST_PUBLIC_KEY,))))
            if more.startswith(b"-----BEGIN"):
                try:
                    encrypted = auth.rsa_encrypt_password(self._password, self._nonce, more)
                except ValueError as exc:
                    raise BackendAuthError(f"backend sent an unusable public key: {exc}", kind="login") from None
                return Step(action="send", data=self._send(encrypted))
            raise MalformedPacket("unexpected caching_sha2_password AuthMoreData")
        raise MalformedPacket(f"unexpected packet 0x{first & 0xFF:02X} during backend login")


def client_tls_context(mode: str, ca_file: str | None) -> ssl.SSLContext:
    """The TLS context sqlbastion uses towards a backend for ``backend.tls.mode``."""
    if mode in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.check_hostname = mode == "verify-full"
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # "prefer" / "require": encryption without verification, as libpq and libmysqlclient do.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
