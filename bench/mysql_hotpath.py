"""The MySQL proxy's per-statement cost without sockets: sysbench's point select, in process.

``sysbench oltp_point_select`` sends ``SELECT c FROM sbtest1 WHERE id=?`` and
reads one row of one CHAR(120) column, over and over: the proxy's work per
statement is everything but the rows. This script runs the real
``CommandLoop`` (authorise, forward, relay, audit) on an asyncio loop with
in-memory transports in place of sockets: a client transport that collects
what the proxy writes, and a backend transport that answers each command with
recorded MariaDB response bytes synchronously. What is left is the proxy's
Python work per statement plus a small driver cost (``--driver-only`` measures
that alone, so it can be subtracted).

Modes:

* ``prepared`` — COM_STMT_EXECUTE of a statement prepared once, binary rows
  (sysbench's default ``--db-ps-mode=auto``);
* ``text`` — COM_QUERY with a new literal every time (``--db-ps-mode=disable``).

Runtimes: ``pass`` (allow-all, no masking, no audit: what ``bench/serve_bare.py``
runs) or ``policy`` (the real policy engine, masking planner and a discarding
audit hook, from ``--config``).

Run: ``.venv/bin/python bench/mysql_hotpath.py [--statements 20000] [--rounds 5] [--json]``
(``--profile`` prints a cProfile of one round).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # bench/profile.py would shadow the standard library's profile module that cProfile imports.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse
import asyncio
import gc
import json
import time
from typing import Any, cast

import uvloop

from sqlbastion.config import BackendSettings
from sqlbastion.proxy.mysql.channel import BackendConnection, PacketProtocol
from sqlbastion.proxy.mysql.commands import CommandLoop
from sqlbastion.proxy.mysql.constants import Capability, ServerStatus
from sqlbastion.proxy.mysql.framing import frame_into
from sqlbastion.proxy.mysql.packets import ColumnDefinition, EofPacket, OkPacket, StmtPrepareOk
from sqlbastion.proxy.mysql.registry import SessionRegistry
from sqlbastion.proxy.mysql.rows import encode_binary_row, encode_text_row
from sqlbastion.proxy.session import ClientInfo, Runtime, Session

# What libmariadb (sysbench's client library) negotiates with MariaDB 10.11, as far as it matters here.
BASE_CAPS = int(
    Capability.LONG_PASSWORD
    | Capability.LONG_FLAG
    | Capability.PROTOCOL_41
    | Capability.TRANSACTIONS
    | Capability.SECURE_CONNECTION
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.PLUGIN_AUTH
    | Capability.CONNECT_ATTRS
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.SESSION_TRACK
)
STATEMENT = "SELECT c FROM sbtest1 WHERE id=?"
STATEMENT_ID = 7
C_VALUE = b"-".join(b"%011d" % (68487932199 + 1111 * i) for i in range(10))[:120]  # sysbench's c: digit groups
STATUS = int(ServerStatus.AUTOCOMMIT)


def _packets(payloads: list[bytes], first_seq: int = 1) -> bytes:
    out = bytearray()
    seq = first_seq
    for p in payloads:
        seq = frame_into(out, seq, p)
    return bytes(out)


def _result(*, binary: bool, deprecate_eof: bool, caps: int) -> bytes:
    """One point-select result: column count, the definition of ``c``, [EOF], one row, EOF or OK."""
    col = ColumnDefinition(
        schema=b"sbtest",
        table=b"sbtest1",
        org_table=b"sbtest1",
        name=b"c",
        org_name=b"c",
        charset=45,
        length=480,
        type=0xFE,  # MYSQL_TYPE_STRING (CHAR)
        flags=1,  # NOT NULL
    )
    payloads = [b"\x01", col.encode()]
    if not deprecate_eof:
        payloads.append(EofPacket(status=STATUS).encode())
    payloads.append(encode_binary_row([C_VALUE], [0xFE]) if binary else encode_text_row([C_VALUE]))
    payloads.append(
        OkPacket(status=STATUS, header=0xFE).encode(caps) if deprecate_eof else EofPacket(status=STATUS).encode()
    )
    return _packets(payloads)


def _prepare_ok(*, deprecate_eof: bool) -> bytes:
    col = ColumnDefinition(
        schema=b"sbtest", table=b"sbtest1", org_table=b"sbtest1", name=b"c", org_name=b"c", type=0xFE
    )
    param = ColumnDefinition(name=b"?", type=0xFD)
    payloads = [StmtPrepareOk(statement_id=STATEMENT_ID, num_columns=1, num_params=1).encode(), param.encode()]
    if not deprecate_eof:
        payloads.append(EofPacket(status=STATUS).encode())
    payloads.append(col.encode())
    if not deprecate_eof:
        payloads.append(EofPacket(status=STATUS).encode())
    return _packets(payloads)


def execute_payload(key: int) -> bytes:
    """COM_STMT_EXECUTE (page_protocol_com_stmt_execute) of the point select with id ``key``."""
    return (
        b"\x17"
        + STATEMENT_ID.to_bytes(4, "little")  # int<4> statement_id
        + b"\x00"  # int<1> flags: CURSOR_TYPE_NO_CURSOR
        + (1).to_bytes(4, "little")  # int<4> iteration_count
        + b"\x00"  # NULL bitmap, one parameter
        + b"\x01"  # new_params_bind_flag
        + b"\x03\x00"  # parameter type MYSQL_TYPE_LONG, unsigned flag 0
        + key.to_bytes(4, "little")
    )


class _ClientTransport:
    """Collects what the proxy writes to the client; wakes the driver at each write."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0
        self.waiter: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


class _BackendTransport(_ClientTransport):
    """Answers each command with recorded response bytes, chosen by the command byte.

    The answer arrives in the event loop's next iteration, as a socket's would.
    """

    def __init__(self, protocol: PacketProtocol, answers: dict[int, bytes]) -> None:
        super().__init__()
        self.protocol = protocol
        self.answers = answers

    def write(self, data: bytes) -> None:
        self.writes += 1
        answer = self.answers.get(data[4])
        if answer is not None:
            asyncio.get_running_loop().call_soon(self.protocol.data_received, answer)


class Harness:
    """One CommandLoop between an in-memory client and an in-memory backend."""

    def __init__(self, *, runtime: Runtime, deprecate_eof: bool) -> None:
        caps = BASE_CAPS | (int(Capability.DEPRECATE_EOF) if deprecate_eof else 0)
        self.client = PacketProtocol()
        self.client_transport = _ClientTransport()
        self.client.connection_made(cast(Any, self.client_transport))
        backend_proto = PacketProtocol()
        answers = {
            0x03: _result(binary=False, deprecate_eof=deprecate_eof, caps=caps),
            0x16: _prepare_ok(deprecate_eof=deprecate_eof),
            0x17: _result(binary=True, deprecate_eof=deprecate_eof, caps=caps),
        }
        self.backend_transport = _BackendTransport(backend_proto, answers)
        backend_proto.connection_made(cast(Any, self.backend_transport))
        backend = object.__new__(BackendConnection)
        backend.protocol = backend_proto
        backend.capabilities = caps
        backend.connection_id = 11
        backend.server_version = "10.11.0-MariaDB"
        backend.tls = False
        settings = BackendSettings(
            name="bench", protocol="mysql", listen="127.0.0.1:3307", host="127.0.0.1", port=3306, user="svc"
        )
        self.session = Session(
            runtime=runtime,
            backend=settings,
            person="bench",
            client=ClientInfo(address="127.0.0.1", port=40000, protocol="mysql"),
        )
        self.session.state.database = "sbtest"
        self.loop = CommandLoop(
            client=self.client,
            backend=backend,
            session=self.session,
            client_capabilities=caps,
            registry=SessionRegistry(),
            max_statement_bytes=1 << 20,
            idle_timeout_s=3600.0,
        )

    async def send(self, payload: bytes) -> None:
        """One command from the client; returns when the proxy wrote its reply."""
        t = self.client_transport
        t.waiter = asyncio.get_running_loop().create_future()
        buf = bytearray()
        frame_into(buf, 0, payload)
        self.client.data_received(bytes(buf))
        await t.waiter


def _runtime(kind: str, config: str | None) -> Runtime:
    if kind == "pass":
        return Runtime()
    from sqlbastion.app import build_runtime  # the same wiring `sqlbastion serve` uses
    from sqlbastion.config import load

    if config is None:
        raise SystemExit("--runtime policy needs --config")
    return build_runtime(load(config))


async def _round(h: Harness, mode: str, n: int, *, driver_only: bool) -> float:
    """CPU µs per statement over ``n`` statements (process time: steadier than wall time on a shared machine)."""
    payloads: list[bytes]
    if mode == "prepared":
        payloads = [execute_payload(1 + i % 100_000) for i in range(n)]
    else:
        payloads = [b"\x03" + f"SELECT c FROM sbtest1 WHERE id={1 + i % 100_000}".encode() for i in range(n)]
    if driver_only:
        # The driver's own cost: a future per statement and a packet fed to the client protocol.
        t = h.client_transport
        started = time.process_time()
        for p in payloads:
            t.waiter = asyncio.get_running_loop().create_future()
            buf = bytearray()
            frame_into(buf, 0, p)
            h.client.framer.receive_data(bytes(buf))
            h.client.framer.next_packet()
            t.waiter.set_result(None)
            await t.waiter
        return (time.process_time() - started) / n * 1e6
    started = time.process_time()
    for p in payloads:
        await h.send(p)
    return (time.process_time() - started) / n * 1e6


async def measure(
    *, mode: str, runtime: Runtime, statements: int, rounds: int, deprecate_eof: bool, profile: bool, driver_only: bool
) -> list[float]:
    h = Harness(runtime=runtime, deprecate_eof=deprecate_eof)
    task = asyncio.get_running_loop().create_task(h.loop.run())
    if mode == "prepared":
        await h.send(b"\x16" + STATEMENT.encode())
    await _round(h, mode, min(statements, 2000), driver_only=driver_only)  # warm-up: caches, shortcuts
    results = []
    for _ in range(rounds):
        gc.collect()
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            results.append(await _round(h, mode, statements, driver_only=driver_only))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            profile = False
        else:
            results.append(await _round(h, mode, statements, driver_only=driver_only))
    if not driver_only and h.client_transport.writes < statements:
        raise SystemExit("the proxy answered fewer statements than were sent")
    task.cancel()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="prepared,text")
    parser.add_argument("--runtime", choices=("pass", "policy"), default="pass")
    parser.add_argument("--config", help="sqlbastion.toml for --runtime policy")
    parser.add_argument("--deprecate-eof", action="store_true", help="negotiate CLIENT_DEPRECATE_EOF")
    parser.add_argument("--driver-only", action="store_true", help="measure the driver alone")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out: dict[str, dict[str, float]] = {}
    for mode in args.modes.split(","):
        runtime = _runtime(args.runtime, args.config)
        res = uvloop.run(
            measure(
                mode=mode,
                runtime=runtime,
                statements=args.statements,
                rounds=args.rounds,
                deprecate_eof=args.deprecate_eof,
                profile=args.profile,
                driver_only=args.driver_only,
            )
        )
        out[mode] = {"best_us": min(res), "median_us": sorted(res)[len(res) // 2]}
        if not args.json:
            print(f"{mode:9s} µs per statement: best {min(res):.2f}, median {sorted(res)[len(res) // 2]:.2f}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
