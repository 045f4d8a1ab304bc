"""Syslog over TLS (RFC 5425) with octet-counted frames, against a local TLS receiver."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sqlbastion.audit.sinks.base import SinkError
from sqlbastion.audit.sinks.syslog import SyslogSink
from sqlbastion.audit.spool import SpooledRecord


def _certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syslog-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "syslog.crt", directory / "syslog.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class Receiver:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 6587 §3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG.
        try:
            while True:
                length = int((await reader.readuntil(b" "))[:-1])
                self.messages.append(await reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[Receiver, Path]]:
    cert, key = _certificate(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, ssl=ctx)
    receiver.port = server.sockets[0].getsockname()[1]
    yield receiver, cert
    server.close()
    await server.wait_closed()


def _record(seq: int) -> SpooledRecord:
    return SpooledRecord(
        seq=seq,
        event={
            "event_id": f"e-{seq}",
            "ts": "2026-11-25T01:02:03.000001Z",
            "kind": "statement",
            "decision": "allow",
            "statement_text": "SELECT '名字'",
            "chain": {"seq": seq, "mac": "00" * 32},
        },
    )


async def test_messages_arrive_over_tls(tls_receiver: tuple[Receiver, Path]) -> None:
    receiver, cert = tls_receiver
    sink = SyslogSink(address=f"127.0.0.1:{receiver.port}", tls=True, ca_file=str(cert), confirm_after_s=0.0)
    await sink.deliver([_record(1), _record(2)])
    for _ in range(100):
        if len(receiver.messages) == 2:
            break
        await asyncio.sleep(0.02)
    await sink.close()
    assert len(receiver.messages) == 2
    assert receiver.messages[0].startswith(b"<110>1 2026-11-25T01:02:03.000001Z ")
    assert b'event_id="e-1" seq="1"' in receiver.messages[0]
    assert "名字".encode() in receiver.messages[1]


async def test_an_untrusted_certificate_is_refused(tls_receiver: tuple[Receiver, Path], tmp_path: Path) -> None:
    receiver, _ = tls_receiver
    (tmp_path / "other").mkdir()
    other, _ = _certificate(tmp_path / "other")  # a CA the receiver's certificate does not chain to
    sink = SyslogSink(address=f"127.0.0.1:{receiver.port}", tls=True, ca_file=str(other))
    with pytest.raises(SinkError):
        await sink.deliver([_record(1)])
    assert receiver.messages == []


async def test_a_closed_connection_holds_back_unconfirmed_events(tls_receiver: tuple[Receiver, Path]) -> None:
    receiver, cert = tls_receiver
    sink = SyslogSink(address=f"127.0.0.1:{receiver.port}", tls=True, ca_file=str(cert), confirm_after_s=60.0)
    await sink.deliver([_record(1)])
    assert sink.confirmed(1) == -1  # sent, but not yet long enough on a live connection
    await sink.close()
    assert sink.confirmed(1) == -1
