"""Syslog: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), optionally TLS (RFC 5425).

Each event is one message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [sqlbastion@32473 event_id="…" seq="…"] JSON

* PRI (RFC 5424 §6.2.1) = facility 13 ("log audit") × 8 + severity: 1 (alert)
  for alert events, 4 (warning) for refused statements and failed logins,
  6 (informational) otherwise.
* TIMESTAMP is the event's ``ts`` (§6.2.3 allows six fractional digits).
* MSGID (§6.2.7, at most 32 characters) is the event kind.
* The structured data element uses enterprise number 32473, the one RFC 5612
  reserves for documentation; PARAM-VALUEs escape ``"``, ``\\`` and ``]``
  (§6.3.3). ``event_id`` lets a SIEM drop duplicates.
* Framing (RFC 6587 §3.4.1): ``MSG-LEN SP SYSLOG-MSG``, MSG-LEN in octets.

Plain TCP syslog has no acknowledgement: bytes the kernel accepted can still
be lost if the receiver stops before reading them. So the cursor only moves
over events sent at least ``confirm_after_s`` earlier on a connection that is
still open; when the connection drops, everything not yet confirmed is sent
again (at least once; duplicates carry the same ``event_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from sqlbastion.audit.sinks.base import Sink, SinkError, event_json
from sqlbastion.audit.spool import SpooledRecord
from sqlbastion.config import parse_listen

__all__ = ["SyslogSink", "format_message", "frame"]

FACILITY_LOG_AUDIT = 13
SD_ID = "sqlbastion@32473"
_NILVALUE = "-"


def _printusascii(value: str, limit: int) -> str:
    """RFC 5424 header fields are PRINTUSASCII (33..126) with a length limit."""
    cleaned = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)[:limit]
    return cleaned or _NILVALUE


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _severity(event: dict[str, Any]) -> int:
    kind = event.get("kind")
    if kind == "alert":
        return 1
    if kind == "auth_failed" or event.get("decision") in ("block", "review"):
        return 4
    return 6


def format_message(
    event: dict[str, Any], *, hostname: str, app_name: str, procid: str, body: str | None = None
) -> bytes:
    """One RFC 5424 SYSLOG-MSG (without framing). ``body``: the event's JSON when already at hand."""
    pri = FACILITY_LOG_AUDIT * 8 + _severity(event)
    seq = (event.get("chain") or {}).get("seq")
    sd = f'[{SD_ID} event_id="{_sd_escape(str(event.get("event_id", "")))}"'
    if seq is not None:
        sd += f' seq="{int(seq)}"'
    sd += "]"
    header = (
        f"<{pri}>1 {event.get('ts') or _NILVALUE} {_printusascii(hostname, 255)} {_printusascii(app_name, 48)} "
        f"{_printusascii(procid, 128)} {_printusascii(str(event.get('kind', '')), 32)} {sd} "
    )
    return header.encode("ascii") + (body if body is not None else event_json(event)).encode("utf-8")


def frame(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogSink(Sink):
    def __init__(
        self,
        *,
        address: str,
        tls: bool = False,
        ca_file: str | None = None,
        app_name: str = "sqlbastion",
        name: str = "syslog",
        required: bool = True,
        batch_size: int = 500,
        confirm_after_s: float = 2.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(name=name, required=required, batch_size=batch_size)
        self.host, self.port = parse_listen(address)
        self.tls = tls
        self.ca_file = ca_file
        self.app_name = app_name
        self.confirm_after_s = confirm_after_s
        self.connect_timeout_s = connect_timeout_s
        self.hostname = socket.gethostname()
        self.procid = str(os.getpid())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sent: deque[tuple[float, int]] = deque()  # (monotonic send time, last seq of the batch)
        self._confirmed = -1

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    async def open(self) -> None:
        ctx = self._ssl_context()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=ctx, server_hostname=self.host if ctx else None),
                self.connect_timeout_s,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise SinkError(f"cannot connect to syslog at {self.host}:{self.port}: {exc}") from exc
        self._sent.clear()

    def _alive(self) -> bool:
        w, r = self._writer, self._reader
        return w is not None and r is not None and not w.is_closing() and not r.at_eof()

    async def deliver(self, records: Sequence[SpooledRecord]) -> None:
        if self._writer is None:
            await self.open()
        if not self._alive():
            raise SinkError("the syslog receiver closed the connection")
        writer = self._writer
        if writer is None:
            raise SinkError("not connected")
        data = b"".join(
            frame(
                format_message(r.event, hostname=self.hostname, app_name=self.app_name, procid=self.procid, body=r.json)
            )
            for r in records
        )
        try:
            writer.write(data)
            await writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"syslog send failed: {exc}") from exc
        self._sent.append((time.monotonic(), records[-1].seq))

    def confirmed(self, delivered_seq: int) -> int:
        if self._sent and not self._alive():
            raise SinkError("the syslog connection dropped before the receiver confirmed the last messages")
        horizon = time.monotonic() - self.confirm_after_s
        while self._sent and self._sent[0][0] <= horizon:
            self._confirmed = max(self._confirmed, self._sent.popleft()[1])
        if not self._sent:
            # Nothing in flight on this connection: everything delivered is as safe as it gets.
            return max(self._confirmed, delivered_seq) if self._alive() else self._confirmed
        return self._confirmed

    async def reset(self) -> None:
        await self.close()

    async def close(self) -> None:
        w = self._writer
        self._writer = self._reader = None
        self._sent.clear()
        if w is not None:
            w.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(w.wait_closed(), 2)
