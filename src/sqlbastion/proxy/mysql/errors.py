"""Typed protocol errors. Each carries the ERR packet to send back (errno, SQLSTATE, text).

Two axes, as in h11: ``RemoteProtocolError`` — the peer sent something the
protocol does not allow (the connection to that peer is closed after the ERR
reply); ``LocalProtocolError`` — sqlbastion itself asked the codec for something
impossible (a bug, but still typed, never an ``AssertionError``).
"""

from __future__ import annotations

from sqlbastion.proxy.mysql.constants import SQLSTATE, ErrorCode


class MySQLProtocolError(Exception):
    """A protocol error with the reply to send: ``errno``, ``sqlstate`` and ``message``."""

    def __init__(self, message: str, *, errno: int = ErrorCode.ER_MALFORMED_PACKET, sqlstate: str | None = None):
        super().__init__(message)
        self.message = message
        self.errno = int(errno)
        self.sqlstate = sqlstate or SQLSTATE.get(self.errno, "HY000")


class RemoteProtocolError(MySQLProtocolError):
    """The peer sent bytes the protocol does not allow."""


class MalformedPacket(RemoteProtocolError):
    """A packet too short, too long or with an impossible field."""

    def __init__(self, message: str) -> None:
        super().__init__(f"malformed packet: {message}", errno=ErrorCode.ER_MALFORMED_PACKET)


class PacketTooLarge(RemoteProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"packet of {size} bytes is larger than the limit of {limit} bytes",
            errno=ErrorCode.ER_NET_PACKET_TOO_LARGE,
        )


class PacketsOutOfOrder(RemoteProtocolError):
    def __init__(self, got: int, expected: int) -> None:
        super().__init__(f"packet sequence id {got}, expected {expected}", errno=ErrorCode.ER_NET_PACKETS_OUT_OF_ORDER)


class LocalProtocolError(MySQLProtocolError):
    """sqlbastion tried to encode something the protocol cannot carry."""


class BackendAuthError(Exception):
    """sqlbastion could not log in to the backend. ``kind`` is a metric label (closed set)."""

    def __init__(self, message: str, *, kind: str = "login", errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.errno = errno
