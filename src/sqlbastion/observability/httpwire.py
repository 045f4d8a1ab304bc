"""A small, strict, sans-IO HTTP/1.1 request reader and response writer for the admin endpoint.

Strategy: the admin endpoint serves a handful of fixed routes to Prometheus,
load balancers and operators, so it accepts the narrowest useful subset of
HTTP/1.1 (RFC 9112) and refuses everything else with a status code:

* request line ``method SP request-target SP HTTP-version`` (RFC 9112 §3),
  origin-form targets only (``/path?query``), HTTP/1.0 and HTTP/1.1;
* header fields ``name ":" OWS value OWS`` (RFC 9112 §5); obsolete line
  folding is refused (§5.2 allows a server to reject it with 400);
* bodies only with ``Content-Length`` (§6.2). ``Transfer-Encoding`` is refused
  with 501, and a message with both is refused with 400 (§6.3 calls that a
  request-smuggling risk);
* every size a peer controls is bounded: the request line, the header
  section, the number of header fields and the body.

``RequestReader`` takes bytes with ``feed`` and returns complete requests from
``next_request`` (None while it needs more bytes). Anything malformed raises
``HttpError`` carrying the status to answer with; after that the connection
must be closed, because the reader cannot know where the next request starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = ["HttpError", "Limits", "Request", "RequestReader", "render_response"]

_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"})


class HttpError(Exception):
    """The peer sent something this server will not process; answer ``status`` and close."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(f"{status.value} {status.phrase}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Bounds on what one request may hold."""

    max_request_line: int = 4096
    max_header_bytes: int = 16384
    max_headers: int = 64
    max_body: int = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: tuple[tuple[str, str], ...]  # names lowercased, in order received
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of a header that must appear at most once (None when absent)."""
        values = [v for k, v in self.headers if k == name]
        return values[0] if values else None

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request (RFC 9112 §9.3)."""
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass(kw_only=True, slots=True)
class RequestReader:
    """Incremental request parser; see the module docstring."""

    limits: Limits = field(default_factory=Limits)
    _buffer: bytearray = field(default_factory=bytearray)
    _closed: bool = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if not data:
            self._closed = True
            return
        self._buffer += data
        # The largest request this reader will ever accept; anything beyond it
        # is refused now rather than buffered.
        ceiling = self.limits.max_request_line + self.limits.max_header_bytes + self.limits.max_body + 4
        if len(self._buffer) > ceiling:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header section too large")

    def next_request(self) -> Request | None:
        """The next complete request, or None when more bytes are needed. Raises HttpError."""
        buf = self._buffer
        line_end = buf.find(b"\r\n")
        if line_end < 0:
            if len(buf) > self.limits.max_request_line:
                raise HttpError(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
            return self._need_more()
        if line_end > self.limits.max_request_line:
            raise HttpError(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buf) - line_end > self.limits.max_header_bytes:
                raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header section too large")
            return self._need_more()
        if head_end - line_end > self.limits.max_header_bytes:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header section too large")
        method, path, query, version = _parse_request_line(bytes(buf[:line_end]))
        headers = _parse_headers(bytes(buf[line_end + 2 : head_end]), self.limits.max_headers)
        length = _body_length(headers, self.limits.max_body)
        body_start = head_end + 4
        if len(buf) < body_start + length:
            return self._need_more()
        body = bytes(buf[body_start : body_start + length])
        del buf[: body_start + length]
        return Request(method=method, path=path, query=query, version=version, headers=headers, body=body)

    def _need_more(self) -> Request | None:
        """None (more bytes needed), unless the peer already closed mid-request."""
        if self._closed and self._buffer:
            raise HttpError(HTTPStatus.BAD_REQUEST, "connection closed in the middle of a request")
        return None


def _parse_request_line(line: bytes) -> tuple[str, str, str, str]:
    # RFC 9112 §3: request-line = method SP request-target SP HTTP-version
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    raw_method, target, raw_version = parts
    if not raw_method or not all(c in _TOKEN_CHARS for c in raw_method):
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed method")
    method = raw_method.decode("ascii")
    if method not in _METHODS:
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "unknown method")
    if raw_version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.0 and HTTP/1.1 are served")
    # Origin-form only (RFC 9112 §3.2.1); visible ASCII, no fragments.
    if not target.startswith(b"/") or any(c <= 0x20 or c >= 0x7F for c in target) or b"#" in target:
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request target")
    path, _, query = target.decode("ascii").partition("?")
    return method, path, query, raw_version.decode("ascii")


def _parse_headers(block: bytes, max_headers: int) -> tuple[tuple[str, str], ...]:
    if not block:
        return ()
    lines = block.split(b"\r\n")
    if len(lines) > max_headers:
        raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields")
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(HTTPStatus.BAD_REQUEST, "obsolete line folding is not accepted")
        name, sep, value = line.partition(b":")
        # RFC 9112 §5.1: no whitespace between the field name and the colon.
        if not sep or not name or not all(c in _TOKEN_CHARS for c in name):
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed header field")
        value = value.strip(b" \t")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise HttpError(HTTPStatus.BAD_REQUEST, "control character in a header value")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    return tuple(headers)


def _body_length(headers: tuple[tuple[str, str], ...], max_body: int) -> int:
    names = [k for k, _ in headers]
    if "transfer-encoding" in names:
        if "content-length" in names:
            raise HttpError(HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length")
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "Transfer-Encoding is not supported")
    values = [v for k, v in headers if k == "content-length"]
    if not values:
        return 0
    if len(set(values)) != 1 or not values[0].isdigit() or not values[0].isascii():
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
    if len(values[0]) > 12 or int(values[0]) > max_body:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
    return int(values[0])


def render_response(
    status: HTTPStatus,
    body: bytes = b"",
    *,
    content_type: str = "text/plain; charset=utf-8",
    headers: tuple[tuple[str, str], ...] = (),
    keep_alive: bool = True,
    head: bool = False,
) -> bytes:
    """A complete HTTP/1.1 response. ``head`` keeps Content-Length but drops the body (RFC 9110 §9.3.2)."""
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    for name, value in headers:
        if any(c in name + value for c in "\r\n"):
            raise ValueError("header names and values must not hold line breaks")
        lines.append(f"{name}: {value}")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head else head_bytes + body
