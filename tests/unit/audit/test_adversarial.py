"""Adversarial feeding: a spool read byte by byte as it is written, a ring under random damage,
HTTP endpoints that answer garbage."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.audit.chain import list_segments
from sqlbastion.audit.intake import IntakeRing
from sqlbastion.audit.sinks.httpclient import HTTPError, request
from sqlbastion.audit.spool import SpoolReader

from .conftest import statement, write_spool


def test_a_spool_read_while_it_grows_byte_by_byte_yields_each_event_once(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_spool(source, 25)
    ((_, segment),) = list_segments(source)
    data = segment.read_bytes()
    target = tmp_path / "growing"
    target.mkdir()
    growing = target / segment.name
    reader = SpoolReader(target, -1)
    seen: list[str] = []
    with open(growing, "wb") as f:
        for i in range(len(data)):
            f.write(data[i : i + 1])
            f.flush()
            if i % 7 == 0 or i == len(data) - 1:
                records, _ = reader.read(10**9, 1000)
                seen.extend(r.event["event_id"] for r in records)
    records, _ = reader.read(10**9, 1000)
    seen.extend(r.event["event_id"] for r in records)
    assert seen == [statement(i)["event_id"] for i in range(25)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=5, max_size=80), st.randoms())
def test_a_damaged_ring_yields_only_whole_entries_in_order(sizes: list[int], rnd: random.Random) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ring = IntakeRing(Path(d) / "ring", size=32 * 1024)
        ring.open()
        payloads = {}
        for n, size in enumerate(sizes):
            payload = bytes([65 + n % 26]) * size
            payloads[n] = payload
            ring.append(n, n * 10, payload)
        assert ring._map is not None
        for _ in range(rnd.randint(0, 20)):  # random bytes overwritten anywhere
            at = rnd.randrange(4096, ring.size)
            ring._map[at : at + 1] = bytes([rnd.randrange(256)])
        entries = ring.scan()
        intakes = [e.intake for e in entries]
        assert intakes == sorted(set(intakes))
        for e in entries:
            assert e.payload == payloads[e.intake]
            assert e.ts_ns == e.intake * 10


@pytest.fixture
async def endpoint() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    servers: list[asyncio.AbstractServer] = []

    async def serve(answer: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"

    yield serve
    for s in servers:
        s.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
async def test_malformed_http_answers_are_errors_never_hangs(
    endpoint: Callable[[bytes], Awaitable[str]], answer: bytes
) -> None:
    url = await endpoint(answer)
    with pytest.raises(HTTPError):
        await asyncio.wait_for(request("POST", url, b"{}", {}, timeout_s=5), 10)
