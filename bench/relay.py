"""A bare uvloop TCP relay: it copies bytes both ways and does nothing else.

This is the reference ceiling for a proxy written in Python: the same event
loop (uvloop), the same transport/protocol style the sqlbastion listeners use,
but no parsing, no policy and no audit. The benchmark reports sqlbastion's
throughput as a ratio of this relay's.

Strategy: one ``_Half`` protocol per socket. Each half writes what it receives
into its peer's transport. Backpressure: when a peer's write buffer passes the
transport's high-water mark, asyncio calls ``pause_writing`` on the peer half,
which pauses reading on *this* socket until ``resume_writing``; so a slow
reader never makes the relay buffer without bound. Bytes the client sends
before the upstream connection is up are held (bounded) and flushed once it is.

Usage::

    python bench/relay.py --listen 127.0.0.1:4000 --upstream 127.0.0.1:3306

It prints ``listening HOST:PORT`` on standard output once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import cast

import uvloop

# The most a client may send before the upstream connection is established.
MAX_EARLY_BYTES = 1 << 20


class _Half(asyncio.Protocol):
    """One side of a relayed connection; ``peer`` is the other side."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.early: list[bytes] = []
        self.early_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # TCP connections always give a Transport

    def attach(self, peer: _Half) -> None:
        self.peer = peer
        if peer.transport is not None and self.early:
            peer.transport.writelines(self.early)
        self.early = []

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
            return
        self.early.append(data)
        self.early_bytes += len(data)
        if self.early_bytes > MAX_EARLY_BYTES and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        if self.peer is not None and self.peer.transport is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
            return True  # keep our side open for the peer's remaining bytes
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # The peer cannot take more: stop reading what we would write into it.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def _connect_upstream(client: _Half, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    try:
        _, upstream = await loop.create_connection(_Half, host, port)
    except OSError:
        if client.transport is not None:
            client.transport.close()
        return
    if client.transport is None or client.transport.is_closing():
        if upstream.transport is not None:
            upstream.transport.close()
        return
    upstream.attach(client)
    client.attach(upstream)


async def start_relay(listen: tuple[str, int], upstream: tuple[str, int]) -> asyncio.Server:
    """Accept on ``listen`` and relay every connection to ``upstream`` until the server is closed."""
    loop = asyncio.get_running_loop()
    # Keep a reference to each connect task so it is not collected while it runs.
    tasks: set[asyncio.Task[None]] = set()

    def accept() -> _Half:
        client = _Half()
        # The task is created once the protocol exists; connection_made runs first
        # because the loop calls it before giving control back to us.
        task = loop.create_task(_connect_upstream(client, *upstream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return client

    return await loop.create_server(accept, listen[0], listen[1], backlog=4096, reuse_address=True)


async def serve(listen: tuple[str, int], upstream: tuple[str, int], stop: asyncio.Event) -> None:
    server = await start_relay(listen, upstream)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"listening {listen[0]}:{port}\n")
    sys.stdout.flush()
    await stop.wait()
    server.close()
    await server.wait_closed()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A bare TCP byte relay on uvloop (benchmark reference).")
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on (port 0: any free port)")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to relay to")
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(_address(args.listen), _address(args.upstream), stop)

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
