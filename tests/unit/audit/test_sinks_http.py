"""Elasticsearch/OpenSearch _bulk and Loki push requests, byte for byte, against a local recording endpoint;
and the Kafka producer configuration and record bytes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sqlbastion.audit.sinks.base import SinkError
from sqlbastion.audit.sinks.http import ElasticsearchSink, LokiSink, bulk_body, loki_body, ts_to_ns
from sqlbastion.audit.sinks.httpclient import HTTPError, build_request
from sqlbastion.audit.sinks.kafka import KafkaSink, kafka_record
from sqlbastion.audit.spool import SpooledRecord
from sqlbastion.config import SecretRef


def _record(seq: int, **extra: object) -> SpooledRecord:
    event: dict[str, object] = {
        "schema_version": 1,
        "event_id": f"0191e7c0-0000-7000-8000-{seq:012d}",
        "ts": "2026-11-25T01:02:03.456789Z",
        "kind": "statement",
        "session_id": "sess-1",
        "backend": "core",
        "decision": "allow",
        "person": "dev",
        "chain": {"seq": seq, "mac": "00" * 32},
    }
    event.update(extra)
    return SpooledRecord(seq=seq, event=event)


@dataclass
class Recorder:
    """A local HTTP/1.1 endpoint that records each request's exact bytes and answers from a script."""

    requests: list[bytes] = field(default_factory=list)
    answers: list[tuple[int, bytes, bool]] = field(default_factory=list)  # status, body, chunked
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        status, payload, chunked = self.answers.pop(0) if self.answers else (200, b"{}", False)
        if chunked:
            mid = len(payload) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:mid], payload[mid:]) if p)
            writer.write(b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n" % (status, chunks))
        else:
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(payload), payload))
        await writer.drain()
        writer.close()


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    yield rec
    server.close()
    await server.wait_closed()


def test_bulk_body_is_ndjson_with_create_actions_and_event_ids() -> None:
    body = bulk_body([_record(1), _record(2)], "audit-idx")
    lines = body.split(b"\n")
    assert body.endswith(b"\n")
    assert lines[-1] == b""
    assert lines[0] == b'{"create":{"_index":"audit-idx","_id":"0191e7c0-0000-7000-8000-000000000001"}}'
    doc = json.loads(lines[1])
    assert doc["@timestamp"] == "2026-11-25T01:02:03.456789Z"
    assert doc["event_id"] == "0191e7c0-0000-7000-8000-000000000001"
    assert lines[2] == b'{"create":{"_index":"audit-idx","_id":"0191e7c0-0000-7000-8000-000000000002"}}'
    assert len(lines) == 5


async def test_elasticsearch_request_bytes(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ES_AUTH", "ApiKey c2VjcmV0")
    sink = ElasticsearchSink(
        url=f"http://127.0.0.1:{recorder.port}/", index="audit-idx", auth_header=SecretRef("env:ES_AUTH")
    )
    recorder.answers.append((200, b'{"took":3,"errors":false,"items":[{"create":{"status":201}}]}', False))
    await sink.deliver([_record(1)])
    body = bulk_body([_record(1)], "audit-idx")
    expected = (
        b"POST /_bulk HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n"
        b"Content-Type: application/x-ndjson\r\n"
        b"User-Agent: sqlbastion-audit\r\n"
        b"Authorization: ApiKey c2VjcmV0\r\n\r\n" % (recorder.port, len(body))
    ) + body
    assert recorder.requests == [expected]


async def test_elasticsearch_conflicts_count_as_delivered_other_errors_fail(recorder: Recorder) -> None:
    sink = ElasticsearchSink(url=f"http://127.0.0.1:{recorder.port}")
    conflict = {"errors": True, "items": [{"create": {"status": 201}}, {"create": {"status": 409}}]}
    recorder.answers.append((200, json.dumps(conflict).encode(), True))
    await sink.deliver([_record(1), _record(2)])
    rejected = {"errors": True, "items": [{"create": {"status": 201}}, {"create": {"status": 400}}]}
    recorder.answers.append((200, json.dumps(rejected).encode(), False))
    with pytest.raises(SinkError, match="status 400"):
        await sink.deliver([_record(1), _record(2)])
    recorder.answers.append((503, b"busy", False))
    with pytest.raises(SinkError, match="HTTP 503"):
        await sink.deliver([_record(1)])


async def test_loki_push_request_bytes(recorder: Recorder) -> None:
    sink = LokiSink(url=f"http://127.0.0.1:{recorder.port}")
    recorder.answers.append((204, b"", False))
    records = [_record(1), _record(2, kind="auth_failed", decision=None)]
    await sink.deliver(records)
    (request,) = recorder.requests
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /loki/api/v1/push HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head + b"\r\n"
    assert body == loki_body(records)
    doc = json.loads(body)
    streams = {tuple(sorted(s["stream"].items())): s["values"] for s in doc["streams"]}
    key = (("backend", "core"), ("decision", "allow"), ("kind", "statement"), ("service_name", "sqlbastion"))
    assert streams[key][0][0] == "1795568523456789000"
    assert json.loads(streams[key][0][1])["event_id"] == "0191e7c0-0000-7000-8000-000000000001"
    assert len(doc["streams"]) == 2


def test_timestamps_convert_to_unix_nanoseconds() -> None:
    assert ts_to_ns("1970-01-01T00:00:01.000001Z") == 1_000_001_000
    assert ts_to_ns("2026-11-25T01:02:03.456789Z") == 1_795_568_523_456_789_000


def test_http_requests_refuse_header_injection_and_odd_urls() -> None:
    with pytest.raises(HTTPError):
        build_request("POST", "http://h/x", b"", {"X": "a\r\nInjected: 1"})
    with pytest.raises(HTTPError):
        build_request("POST", "ftp://h/x", b"", {})
    host, port, tls, data = build_request("POST", "https://es.example:9200/base?pipeline=p", b"{}", {})
    assert (host, port, tls) == ("es.example", 9200, True)
    assert data.startswith(b"POST /base?pipeline=p HTTP/1.1\r\nHost: es.example:9200\r\n")


async def test_an_unreachable_endpoint_is_a_sink_error() -> None:
    from sqlbastion.devtools.servers import free_port

    sink = LokiSink(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SinkError):
        await sink.deliver([_record(1)])


def test_kafka_producer_configuration_is_idempotent_with_acks_all() -> None:
    sink = KafkaSink(bootstrap_servers=["k1:9092", "k2:9092"], topic="audit")
    config = sink.producer_config()
    assert config["acks"] == "all"
    assert config["enable_idempotence"] is True
    assert config["bootstrap_servers"] == "k1:9092,k2:9092"
    from aiokafka import AIOKafkaProducer

    # The configuration is one aiokafka accepts (constructing does not connect).
    async def construct() -> None:
        producer = AIOKafkaProducer(**config)
        await producer.stop()

    asyncio.run(construct())


def test_kafka_record_key_is_the_session_id_and_value_the_event_json() -> None:
    record = _record(7)
    key, value, headers = kafka_record(record.event)
    assert key == b"sess-1"
    assert json.loads(value) == record.event
    assert value == json.dumps(record.event, separators=(",", ":"), ensure_ascii=False).encode()
    assert headers == [("event_id", b"0191e7c0-0000-7000-8000-000000000007")]
    no_session = _record(8, session_id=None)
    assert kafka_record(no_session.event)[0] == b"0191e7c0-0000-7000-8000-000000000008"
