"""The admin endpoint's HTTP/1.1 request reader: whole, byte by byte, pipelined, bounded, fuzzed."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.observability.httpwire import HttpError, Limits, Request, RequestReader, render_response

SCRAPE = (
    b"GET /metrics?x=1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:9187\r\n"
    b"Accept: application/openmetrics-text;version=1.0.0\r\n"
    b"Authorization: Bearer s3cret\r\n"
    b"\r\n"
)
RELOAD = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


def read_all(data: bytes, *, chunk: int | None = None, limits: Limits | None = None) -> list[Request]:
    reader = RequestReader(limits=limits or Limits())
    out: list[Request] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        reader.feed(piece)
        while (req := reader.next_request()) is not None:
            out.append(req)
    return out


def test_whole_request() -> None:
    [req] = read_all(SCRAPE)
    assert (req.method, req.path, req.query, req.version) == ("GET", "/metrics", "x=1", "HTTP/1.1")
    assert req.header("authorization") == "Bearer s3cret"
    assert req.header("accept") == "application/openmetrics-text;version=1.0.0"
    assert req.keep_alive
    assert req.body == b""


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_byte_by_byte_equals_whole(chunk: int) -> None:
    assert read_all(SCRAPE + RELOAD, chunk=chunk) == read_all(SCRAPE + RELOAD)


def test_pipelined_requests_and_body() -> None:
    first, second = read_all(SCRAPE + RELOAD)
    assert first.path == "/metrics"
    assert second.method == "POST"
    assert second.body == b"hello"


def test_trailing_partial_request_waits() -> None:
    reader = RequestReader()
    reader.feed(SCRAPE + b"GET /hea")
    assert reader.next_request() is not None
    assert reader.next_request() is None
    assert reader.buffered == len(b"GET /hea")


def test_close_mid_request_is_an_error() -> None:
    reader = RequestReader()
    reader.feed(b"GET /metrics HTTP/1.1\r\nHost:")
    reader.feed(b"")
    with pytest.raises(HttpError) as info:
        reader.next_request()
    assert info.value.status is HTTPStatus.BAD_REQUEST


@pytest.mark.parametrize(
    ("version", "connection", "keep"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Keep-Alive, Close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_keep_alive(version: str, connection: str | None, keep: bool) -> None:
    head = f"GET / {version}\r\n" + (f"Connection: {connection}\r\n" if connection else "") + "\r\n"
    [req] = read_all(head.encode())
    assert req.keep_alive is keep


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /metrics\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"G\xc3T /metrics HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"BREW /metrics HTTP/1.1\r\n\r\n", HTTPStatus.NOT_IMPLEMENTED),
        (b"GET /metrics HTTP/2.0\r\n\r\n", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
        (b"GET http://evil/metrics HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET /met\x01rics HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET /m#frag HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", HTTPStatus.NOT_IMPLEMENTED),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
            HTTPStatus.BAD_REQUEST,
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa3\r\n\r\nabc", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (b"POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    ],
)
def test_malformed_requests_are_refused_with_a_status(data: bytes, status: HTTPStatus) -> None:
    with pytest.raises(HttpError) as info:
        read_all(data)
    assert info.value.status is status


def test_same_content_length_twice_is_accepted() -> None:
    [req] = read_all(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
    assert req.body == b"ok"


def test_request_line_bound_applies_before_the_line_ends() -> None:
    reader = RequestReader(limits=Limits(max_request_line=64))
    reader.feed(b"GET /" + b"a" * 100)
    with pytest.raises(HttpError) as info:
        reader.next_request()
    assert info.value.status is HTTPStatus.REQUEST_URI_TOO_LONG


def test_header_section_bound_applies_before_it_ends() -> None:
    limits = Limits(max_header_bytes=256)
    reader = RequestReader(limits=limits)
    reader.feed(b"GET / HTTP/1.1\r\n")

    def trickle_headers() -> None:
        for _ in range(100):
            reader.feed(b"X-Filler: " + b"y" * 20 + b"\r\n")
            reader.next_request()

    with pytest.raises(HttpError) as info:
        trickle_headers()
    assert info.value.status is HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    assert reader.buffered < 4 * 256 + 64 + 4096


def test_header_count_bound() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(65)) + b"\r\n"
    with pytest.raises(HttpError) as info:
        read_all(data)
    assert info.value.status is HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


def test_endless_stream_without_header_end_is_refused_by_feed() -> None:
    reader = RequestReader(limits=Limits(max_request_line=100, max_header_bytes=100, max_body=100))

    def flood() -> None:
        for _ in range(1000):
            reader.feed(b"x" * 64)

    with pytest.raises(HttpError):
        flood()
    assert reader.buffered < 1000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=50))
def test_fuzzed_input_only_ever_raises_http_error(data: bytes, chunk: int) -> None:
    reader = RequestReader(limits=Limits(max_request_line=200, max_header_bytes=300, max_headers=8, max_body=100))
    try:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
            while reader.next_request() is not None:
                pass
        reader.feed(b"")
        while reader.next_request() is not None:
            pass
    except HttpError as exc:
        status = exc.status.value
    else:
        status = 400
    assert 400 <= status < 600


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([SCRAPE, RELOAD]), st.binary(max_size=200))
def test_fuzzed_suffix_after_a_valid_request(valid: bytes, suffix: bytes) -> None:
    reader = RequestReader()
    reader.feed(valid + suffix)
    assert reader.next_request() is not None


def test_render_response() -> None:
    out = render_response(HTTPStatus.OK, b"hi", headers=(("X-A", "1"),), keep_alive=False)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 2" in head
    assert b"Connection: close" in head
    assert b"X-A: 1" in head
    assert body == b"hi"
    assert render_response(HTTPStatus.OK, b"hi", head=True).endswith(b"\r\n\r\n")
    with pytest.raises(ValueError, match="line breaks"):
        render_response(HTTPStatus.OK, headers=(("X", "a\r\nSet-Cookie: 1"),))
