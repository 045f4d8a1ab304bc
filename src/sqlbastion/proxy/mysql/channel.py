"""asyncio glue for one MySQL peer: a Protocol that frames packets, and the backend login.

Strategy: ``PacketProtocol`` is an ``asyncio.Protocol`` (not streams: one
callback per read, no per-packet awaits on the hot path). In *packet mode* it
feeds a ``PacketFramer`` and wakes ``read_packet()``; in *relay mode*
(``relay_to``) every byte received goes straight to a callback, which is how a
result streams from the backend to the client without a coroutine switch per
packet. Reading pauses when the framer holds too many unread bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import cast

from sqlbastion.config import BackendSettings
from sqlbastion.proxy.mysql.constants import Capability
from sqlbastion.proxy.mysql.errors import BackendAuthError, MalformedPacket
from sqlbastion.proxy.mysql.framing import DEFAULT_MAX_PAYLOAD, Packet, PacketFramer, frame
from sqlbastion.proxy.mysql.handshake import BackendHandshake, client_tls_context
from sqlbastion.proxy.mysql.packets import ColumnDefinition, ErrPacket, HandshakeV10, OkPacket
from sqlbastion.proxy.mysql.wire import PayloadReader

__all__ = ["BackendConnection", "ConnectionClosed", "PacketProtocol", "connect_backend", "probe_backend_version"]

READ_PAUSE_BYTES = 1 << 20  # unread bytes held before the peer's reading is paused


class ConnectionClosed(Exception):
    """The peer closed the connection (or it was lost)."""


class PacketProtocol(asyncio.Protocol):
    """Packet framing on top of an asyncio transport."""

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.framer = PacketFramer(max_payload=max_payload)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.close_exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        # The loop, looked up once: asyncio.get_running_loop() compares the process id on every
        # call, and getpid() is a system call (glibc no longer caches it) once per command.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused_reading = False
        self.relay_to: Callable[[bytes], None] | None = None
        self.on_lost: Callable[[BaseException | None], None] | None = None
        self.on_pause_writing: Callable[[], None] | None = None
        self.on_resume_writing: Callable[[], None] | None = None
        # TLS is done here over memory BIOs rather than with loop.start_tls: a MySQL
        # client sends its TLS ClientHello right behind the SSLRequest, without waiting
        # for an answer, so those bytes may already be in our buffer when we see it.
        self._tls: ssl.SSLObject | None = None
        self._tls_in: ssl.MemoryBIO | None = None
        self._tls_out: ssl.MemoryBIO | None = None
        self._handshaking = False

    @property
    def tls(self) -> bool:
        return self._tls is not None

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._tls is not None:
            self._tls_received(data)
            return
        self._plain_received(data)

    def _plain_received(self, data: bytes) -> None:
        relay = self.relay_to
        if relay is not None:
            relay(data)
            return
        self.framer.receive_data(data)
        if self.framer.buffered > READ_PAUSE_BYTES and self.transport is not None and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_exc = exc
        self._wake()
        if self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        if self.on_pause_writing is not None:
            self.on_pause_writing()

    def resume_writing(self) -> None:
        if self.on_resume_writing is not None:
            self.on_resume_writing()

    # -- API -----------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read_packet(self) -> Packet:
        """The next logical packet. Raises ConnectionClosed, RemoteProtocolError."""
        seq, payload, next_seq = await self.read_frame()
        return Packet(seq=seq, payload=payload, next_seq=next_seq)

    async def read_frame(self) -> tuple[int, bytes, int]:
        """The next logical packet as (seq, payload, next_seq) (no object: once per command)."""
        while True:
            packet = self.framer.next_frame()
            if packet is not None:
                if self._paused_reading and self.framer.buffered < READ_PAUSE_BYTES // 2 and self.transport:
                    self._paused_reading = False
                    self.transport.resume_reading()
                return packet
            if self.closed:
                raise ConnectionClosed("connection closed")
            if self._paused_reading and self.transport is not None:
                self._paused_reading = False
                self.transport.resume_reading()
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            return
        if self._tls is not None:
            try:
                self._tls.write(data)
            except ssl.SSLError:
                self.transport.abort()
                return
            self._flush_tls()
            return
        self.transport.write(data)

    def _flush_tls(self) -> None:
        out = self._tls_out
        if out is not None and out.pending and self.transport is not None and not self.closed:
            self.transport.write(out.read())

    def _tls_received(self, data: bytes) -> None:
        assert self._tls_in is not None  # only called with TLS set up
        self._tls_in.write(data)
        if self._handshaking:
            self._wake()
            return
        self._drain_tls()

    def _drain_tls(self) -> None:
        """Decrypt whatever the BIO holds and hand the plain bytes on."""
        tls = self._tls
        assert tls is not None  # only called with TLS set up
        chunks: list[bytes] = []
        try:
            while True:
                chunk = tls.read(1 << 17)
                if not chunk:
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLError):
            if chunks:
                self._plain_received(b"".join(chunks))
            if self.transport is not None:
                self.transport.close()
            return
        self._flush_tls()  # renegotiation or key updates may need to answer
        if chunks:
            self._plain_received(b"".join(chunks) if len(chunks) > 1 else chunks[0])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        """Switch to TLS. Bytes already received (the peer's ClientHello) go into the handshake.

        Raises ConnectionClosed when the peer goes away, ssl.SSLError when the handshake fails.
        """
        early = self.framer.take_buffered()
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._tls_in, self._tls_out, server_side=server_side, server_hostname=server_hostname
        )
        self._handshaking = True
        if early:
            self._tls_in.write(early)
        try:
            while True:
                try:
                    self._tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush_tls()
                    if self.closed:
                        raise ConnectionClosed("connection closed during the TLS handshake") from None
                    self._waiter = asyncio.get_running_loop().create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
        finally:
            self._handshaking = False
        self._flush_tls()
        self._drain_tls()


class BackendConnection:
    """A logged-in connection to the backend."""

    def __init__(self, protocol: PacketProtocol, handshake: BackendHandshake) -> None:
        self.protocol = protocol
        self.capabilities = handshake.capabilities
        greeting = handshake.greeting
        assert greeting is not None  # a finished login always has the greeting
        self.greeting: HandshakeV10 = greeting
        self.connection_id = greeting.connection_id
        self.server_version = greeting.server_version
        self.tls = handshake.tls
        self.login_ok = handshake.ok

    async def simple_query(self, sql: str) -> tuple[OkPacket | None, list[list[bytes | None]]]:
        """Run an internal statement; returns its OK (if no result set) and text rows.

        Raises BackendAuthError(kind="setup") if the backend answers with ERR.
        """
        self.protocol.write(frame(0, b"\x03" + sql.encode("utf-8"))[0])
        p = await self.protocol.read_packet()
        if p.payload[:1] == b"\xff":
            err = ErrPacket.decode(p.payload)
            raise BackendAuthError(f"backend setup statement failed: {err.errno} {err.message}", kind="setup")
        if p.payload[:1] == b"\x00":
            ok = OkPacket.decode(p.payload, self.capabilities)
            return ok, []
        ncols = PayloadReader(p.payload).lenenc_int("column count")
        for _ in range(ncols):
            ColumnDefinition.decode((await self.protocol.read_packet()).payload)
        deprecate = bool(self.capabilities & Capability.DEPRECATE_EOF)
        if not deprecate:
            await self.protocol.read_packet()  # EOF
        rows: list[list[bytes | None]] = []
        while True:
            payload = (await self.protocol.read_packet()).payload
            if payload[:1] == b"\xff":
                err = ErrPacket.decode(payload)
                raise BackendAuthError(f"backend setup statement failed: {err.errno} {err.message}", kind="setup")
            if payload[:1] == b"\xfe" and len(payload) < (0xFFFFFF if deprecate else 9):
                return None, rows
            r = PayloadReader(payload)
            rows.append([r.lenenc_value_or_null() for _ in range(ncols)])

    async def command_ok(self, payload: bytes) -> OkPacket:
        """Run an internal command that answers OK (COM_RESET_CONNECTION, COM_INIT_DB).

        Raises BackendAuthError(kind="setup") if the backend answers with anything else.
        """
        self.protocol.write(frame(0, payload)[0])
        p = await self.protocol.read_packet()
        if p.payload[:1] != b"\x00":
            detail = ErrPacket.decode(p.payload).message if p.payload[:1] == b"\xff" else "unexpected reply"
            raise BackendAuthError(f"backend refused an internal command: {detail}", kind="setup")
        return OkPacket.decode(p.payload, self.capabilities)

    def close(self) -> None:
        """Send COM_QUIT and close."""
        with contextlib.suppress(Exception):
            self.protocol.write(frame(0, b"\x01")[0])
        self.protocol.close()


async def connect_backend(
    backend: BackendSettings,
    *,
    wanted_capabilities: int,
    charset: int,
    database: str | None,
    attrs: tuple[tuple[bytes, bytes], ...] = (),
) -> BackendConnection:
    """Open a TCP connection to the backend and log in with the vaulted credentials.

    Raises OSError / TimeoutError (unreachable), BackendAuthError (refused), RemoteProtocolError.
    """
    loop = asyncio.get_running_loop()
    password = backend.password.reveal() if backend.password is not None else ""
    hs = BackendHandshake(
        user=backend.user,
        password=password,
        database=database,
        wanted_capabilities=wanted_capabilities,
        charset=charset,
        attrs=attrs,
        tls_mode=backend.tls.mode,
    )
    del password

    async def login() -> BackendConnection:
        _, proto = await loop.create_connection(PacketProtocol, backend.host, backend.port)
        try:
            while True:
                packet = await proto.read_packet()
                step = hs.receive_packet(packet)
                if step.data:
                    proto.write(step.data)
                if step.action == "start_tls":
                    ctx = client_tls_context(backend.tls.mode, backend.tls.ca_file)
                    await proto.start_tls(ctx, server_side=False, server_hostname=backend.host)
                    step = hs.after_tls()
                    proto.write(step.data)
                elif step.action == "done":
                    return BackendConnection(proto, hs)
        except BaseException:
            proto.abort()
            raise

    return await asyncio.wait_for(login(), backend.connect_timeout_s)


async def probe_backend_version(backend: BackendSettings, wait_s: float = 3.0) -> str | None:
    """Read the backend's greeting (no login) to learn its version string; None if unreachable."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(wait_s):
            _, proto = await loop.create_connection(PacketProtocol, backend.host, backend.port)
            try:
                packet = await proto.read_packet()
                if packet.payload[:1] == b"\xff":
                    return None
                return HandshakeV10.decode(packet.payload).server_version
            finally:
                proto.abort()
    except (OSError, TimeoutError, ConnectionClosed, MalformedPacket):
        return None
