"""A small asyncio HTTP/1.1 client for the Elasticsearch/OpenSearch and Loki sinks.

One request per connection (``Connection: close``): audit batches are large
and infrequent enough that keep-alive buys little, and it keeps the client
simple to reason about. Requests carry ``Content-Length`` (RFC 9112 §6.2);
responses are read by ``Content-Length``, ``Transfer-Encoding: chunked``
(RFC 9112 §7.1) or until close. Header and body sizes are bounded.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HTTPError", "HTTPResponse", "request"]

MAX_HEADER_BYTES = 64 << 10
MAX_BODY_BYTES = 16 << 20


class HTTPError(Exception):
    """The request could not be sent or the response was malformed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class HTTPResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def build_request(method: str, url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bool, bytes]:
    """(host, port, tls, request bytes) for ``url``. Exposed so tests can compare bytes."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPError(f"unsupported URL {parts.scheme}://…: use http:// or https://")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}", f"Content-Length: {len(body)}", "Connection: close"]
    for k, v in headers.items():
        if "\r" in k + v or "\n" in k + v:
            raise HTTPError("header values must not contain line breaks")
        lines.append(f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return parts.hostname, port, tls, head + body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailer section, ended by an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise HTTPError("response body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def request(
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout_s: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> HTTPResponse:
    host, port, tls, data = build_request(method, url, body, headers)
    ctx = (ssl_context or ssl.create_default_context()) if tls else None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=host if ctx else None, limit=MAX_HEADER_BYTES
            )
            try:
                writer.write(data)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status_line, *header_lines = head.decode("latin-1").split("\r\n")
                parts = status_line.split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                    raise HTTPError("malformed status line")
                resp_headers: dict[str, str] = {}
                for line in header_lines:
                    if line:
                        k, _, v = line.partition(":")
                        resp_headers[k.strip().lower()] = v.strip()
                if resp_headers.get("transfer-encoding", "").lower() == "chunked":
                    resp_body = await _read_chunked(reader)
                elif "content-length" in resp_headers:
                    length = int(resp_headers["content-length"])
                    if length > MAX_BODY_BYTES:
                        raise HTTPError("response body too large")
                    resp_body = await reader.readexactly(length)
                else:
                    resp_body = await reader.read(MAX_BODY_BYTES)
                return HTTPResponse(status=int(parts[1]), headers=resp_headers, body=resp_body)
            finally:
                writer.close()
    except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise HTTPError(f"{method} {host}:{port} failed: {type(exc).__name__}") from None
    except ValueError as exc:
        raise HTTPError(f"malformed response from {host}:{port}: {exc}") from None
