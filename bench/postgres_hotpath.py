"""The PostgreSQL relay's cost per ``pgbench -S`` transaction, without sockets.

Feeds the conversation libpq has with the server during ``pgbench -S`` through
``QueryRelay`` (client bytes in, backend bytes in, both outputs taken, exactly
as the listener does) with an allow-all runtime: no policy, no masking, audit
discarded. What is left is the protocol handling, ``Session.authorize`` /
``mask_plan`` / ``finish`` with trivial hooks, and the per-statement objects.

* ``simple``   — ``-M simple``: one Query; the answer is RowDescription,
  DataRow, CommandComplete, ReadyForQuery (PostgreSQL 15 documentation §55.2.2).
* ``prepared`` — ``-M prepared``: Parse of the named statement ``P_0`` once,
  then per transaction what ``PQsendQueryPrepared`` sends: Bind (one text
  parameter, one result format code), Describe portal, Execute, Sync; the
  answer is BindComplete, RowDescription, DataRow, CommandComplete,
  ReadyForQuery (§55.2.3).

Each transaction uses a new ``aid`` literal, as pgbench does. The figure is
the median over rounds of thread CPU time per transaction.

Two figures per mode. ``hot``: transactions back to back on one connection,
everything in the CPU caches — what the code costs at best. ``cold``: eight
connections in turn, and 8 MiB of memory touched before each half of a
transaction (outside the timed part), so the interpreter's code and the
relay's objects are no longer cached — what happens in the proxy process when
pgbench, the server's backends and the proxy share two cores. The cold figure
is the one that predicts ``bench/run.py``'s CPU per transaction of the
allow-all listener (the same code measured minutes apart: 93 / 85 µs cold
against 87 / 83 µs in the harness, simple / prepared), so judge changes by it.

``--same-decision`` replaces the allow-all engine (a new ``Decision`` per
statement) with one that returns the same ``Decision`` object every time, as
the policy engine does on a cache hit (``pgbench`` sends one statement shape
with new literals: a fingerprint hit). The relay's caches keyed by decision
identity (the empty mask plan of a Query's result) only show there.

Run: ``.venv/bin/python bench/postgres_hotpath.py [--transactions 20000] [--rounds 5] [--json] [--same-decision]``
(``--profile`` prints a cProfile of one round of each mode).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # bench/profile.py would shadow the standard library's profile module that cProfile imports.
    sys.path[0] = str(Path(__file__).resolve().parent.parent / "src")

import argparse
import json
import statistics
import struct
import time
from collections.abc import Sequence

from sqlbastion.config import loads
from sqlbastion.policies.model import Action, Decision, StatementContext
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import RowColumn
from sqlbastion.proxy.postgres.relay import QueryRelay
from sqlbastion.proxy.postgres.tracking import ColumnMeta
from sqlbastion.proxy.session import ClientInfo, PassThroughEngine, Runtime, Session

_SETTINGS = loads(
    """
[[backends]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
host = "127.0.0.1"
port = 5432
user = "svc"
"""
)
_ACCOUNTS_OID = 16397  # any non-zero table OID: the column comes from a table
_SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"


class _Resolver:
    """The catalog cache after its first lookup: every column is known."""

    def resolve(self, columns: Sequence[RowColumn]) -> list[ColumnMeta]:
        return [
            ColumnMeta(schema="public", table="pgbench_accounts", column=c.name.decode(), type_name="int4")
            for c in columns
        ]


def _row_description() -> bytes:
    # One field: name, table OID, attribute number, type OID (int4), size, modifier, format (§55.7).
    body = struct.pack("!h", 1) + b"abalance\x00" + struct.pack("!ihihih", _ACCOUNTS_OID, 3, 23, 4, -1, 0)
    return p.encode_message(p.ROW_DESCRIPTION, body)


_T = _row_description()
_D = p.encode_message(p.DATA_ROW, struct.pack("!hi", 1, 1) + b"0")
_C = p.encode_message(p.COMMAND_COMPLETE, b"SELECT 1\x00")
_Z = p.encode_ready_for_query(b"I")
_SIMPLE_ANSWER = _T + _D + _C + _Z
_PREPARED_ANSWER = p.encode_message(p.BIND_COMPLETE) + _T + _D + _C + _Z


def _bind(aid: int) -> bytes:
    value = str(aid).encode()
    # portal "", statement P_0, 0 parameter format codes, 1 parameter, 1 result format code (text).
    body = b"\x00P_0\x00" + struct.pack("!hh", 0, 1) + struct.pack("!i", len(value)) + value + struct.pack("!hh", 1, 0)
    return p.encode_message(p.BIND, body)


_DESCRIBE = p.encode_message(p.DESCRIBE, b"P\x00")
_EXECUTE = p.encode_message(p.EXECUTE, b"\x00" + struct.pack("!i", 0))
_SYNC = p.encode_message(p.SYNC)


class _SameDecisionEngine(PassThroughEngine):
    """Allows everything with one Decision object, as the policy engine's cache hits return."""

    def __init__(self) -> None:
        self._decision = Decision(action=Action.ALLOW, reason="cached", policy_version=self.version)

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        return self._decision


_ENGINE: list[PassThroughEngine] = []  # set by --same-decision


def make_relay() -> QueryRelay:
    session = Session(
        runtime=Runtime(engine=_ENGINE[0]) if _ENGINE else Runtime(),
        backend=_SETTINGS.backends[0],
        person="bench",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="postgres"),
    )
    return QueryRelay(session, _Resolver())


def _exchange(relay: QueryRelay, client: bytes, backend: bytes) -> bytes:
    relay.client_data(client)
    to_backend = relay.take_to_backend()
    relay.take_to_client()
    relay.backend_data(backend)
    relay.take_to_backend()
    return relay.take_to_client() + to_backend


def simple_inputs(n: int) -> list[bytes]:
    return [p.encode_message(p.QUERY, _SQL.format(1 + i * 7919 % 100000).encode() + b"\x00") for i in range(n)]


def prepared_inputs(n: int) -> list[bytes]:
    return [_bind(1 + i * 7919 % 100000) + _DESCRIBE + _EXECUTE + _SYNC for i in range(n)]


def prepared_relay() -> QueryRelay:
    relay = make_relay()
    parse = p.encode_parse(b"P_0", _SQL.format("$1").encode())
    out = _exchange(relay, parse + _SYNC, p.encode_message(p.PARSE_COMPLETE) + _Z)
    if not out.startswith(p.encode_message(p.PARSE_COMPLETE)):
        raise SystemExit("the prepared conversation did not start as expected")
    return relay


def run_simple(relay: QueryRelay, inputs: list[bytes]) -> int:
    """Thread CPU ns for the whole list; checks the client got the server's answer unchanged."""
    client_data, backend_data = relay.client_data, relay.backend_data
    take_b, take_c = relay.take_to_backend, relay.take_to_client
    answer = _SIMPLE_ANSWER
    start = time.thread_time_ns()
    for msg in inputs:
        client_data(msg)
        take_b()
        take_c()
        backend_data(answer)
        take_b()
        if take_c() != answer:
            raise SystemExit("simple: the client did not receive the answer unchanged")
    return time.thread_time_ns() - start


def run_prepared(relay: QueryRelay, inputs: list[bytes]) -> int:
    client_data, backend_data = relay.client_data, relay.backend_data
    take_b, take_c = relay.take_to_backend, relay.take_to_client
    answer = _PREPARED_ANSWER
    start = time.thread_time_ns()
    for msg in inputs:
        client_data(msg)
        take_b()
        take_c()
        backend_data(answer)
        take_b()
        if take_c() != answer:
            raise SystemExit("prepared: the client did not receive the answer unchanged")
    return time.thread_time_ns() - start


_JUNK = bytearray(8 << 20)


def _evict() -> None:
    """Touch one byte per 64-byte cache line of 8 MiB: beyond L2 and most of a shared L3."""
    _JUNK[::64] = b"\x01" * (len(_JUNK) // 64)


def run_cold(relays: list[QueryRelay], inputs: list[bytes], answer: bytes) -> int:
    """Thread CPU ns for the list over ``relays`` in turn, caches evicted before each half."""
    clock = time.thread_time_ns
    total = 0
    for i, msg in enumerate(inputs):
        relay = relays[i % len(relays)]
        _evict()
        start = clock()
        relay.client_data(msg)
        relay.take_to_backend()
        relay.take_to_client()
        total += clock() - start
        _evict()
        start = clock()
        relay.backend_data(answer)
        relay.take_to_backend()
        if relay.take_to_client() != answer:
            raise SystemExit("cold: the client did not receive the answer unchanged")
        total += clock() - start
    return total


def measure_cold(transactions: int, rounds: int) -> dict[str, float]:
    result: dict[str, float] = {}
    for mode, inputs_of, relay_of, answer in (
        ("simple", simple_inputs, make_relay, _SIMPLE_ANSWER),
        ("prepared", prepared_inputs, prepared_relay, _PREPARED_ANSWER),
    ):
        inputs = inputs_of(transactions)
        samples = []
        for _ in range(rounds):
            relays = [relay_of() for _ in range(8)]
            run_cold(relays, inputs[:80], answer)  # warm-up: every connection has its statement
            samples.append(run_cold(relays, inputs, answer) / transactions / 1000)
        result[f"{mode}_cold"] = round(statistics.median(samples), 1)
    return result


def measure(transactions: int, rounds: int) -> dict[str, float]:
    result: dict[str, float] = {}
    for mode, inputs_of, relay_of, run in (
        ("simple", simple_inputs, make_relay, run_simple),
        ("prepared", prepared_inputs, prepared_relay, run_prepared),
    ):
        inputs = inputs_of(transactions)
        samples = []
        for _ in range(rounds):
            relay = relay_of()
            run(relay, inputs[: max(1, transactions // 10)])  # warm-up
            samples.append(run(relay, inputs) / transactions / 1000)
        result[mode] = round(statistics.median(samples), 2)
        result[f"{mode}_best"] = round(min(samples), 2)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--transactions", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--cold-transactions", type=int, default=3000)
    parser.add_argument("--same-decision", action="store_true", help="one Decision object, as on cache hits")
    args = parser.parse_args(argv)
    if args.same_decision:
        _ENGINE.append(_SameDecisionEngine())
    if args.profile:
        import cProfile  # only here: bench/profile.py shadows its profile module when bench/ is on sys.path
        import pstats

        for name, inputs, relay, run in (
            ("simple", simple_inputs(args.transactions), make_relay(), run_simple),
            ("prepared", prepared_inputs(args.transactions), prepared_relay(), run_prepared),
        ):
            prof = cProfile.Profile()
            prof.enable()
            run(relay, inputs)
            prof.disable()
            print(f"--- {name}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return
    figures = measure(args.transactions, args.rounds) | measure_cold(args.cold_transactions, args.rounds)
    if args.json:
        print(json.dumps(figures))
        return
    engine = "one cached decision" if args.same_decision else "allow-all runtime"
    print(f"µs of thread CPU per pgbench -S transaction through QueryRelay ({engine})")
    print("            hot (median / best)   cold (median)")
    for mode in ("simple", "prepared"):
        print(f"  {mode:9} {figures[mode]:7.2f} / {figures[mode + '_best']:<7.2f}  {figures[mode + '_cold']:9.1f}")


if __name__ == "__main__":
    main()
