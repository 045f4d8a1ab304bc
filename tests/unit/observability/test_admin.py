"""The admin endpoint over a real loopback socket: routes, token, bounds, readiness, reload."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import AsyncIterator, Sequence
from http import HTTPStatus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.config import AdminSettings, BackendSettings, SecretRef, loads
from sqlbastion.devtools.servers import free_port
from sqlbastion.observability.admin import AdminEndpoint, PolicyReloader
from sqlbastion.observability.httpwire import Limits, Request
from sqlbastion.observability.metrics import Metrics
from sqlbastion.observability.readiness import (
    CheckResult,
    ReadinessCheck,
    backend_reachable,
    default_checks,
    policy_loaded,
    readiness,
    run_checks,
    spool_writable,
)
from sqlbastion.proxy.session import Runtime
from sqlbastion.settings_schema import SecretUnavailable

TOKEN = "t0ken-for-tests"


async def http(port: int, raw: bytes, *, read_timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def get(path: str, *, token: str | None = None, extra: str = "", method: str = "GET") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{extra}Connection: close\r\n\r\n".encode()


class Ready:
    def __init__(self) -> None:
        self.results: list[CheckResult] = [CheckResult(name="backend:core", ok=True, detail="reachable")]

    async def __call__(self) -> Sequence[CheckResult]:
        return self.results


@pytest.fixture
async def endpoint() -> AsyncIterator[AdminEndpoint]:
    metrics = Metrics()
    metrics.prepare(backends=[("mysql", "core")], sinks=["sqlite"])
    calls: list[int] = []
    versions = iter(["v2", "v3"])
    current = {"v": "v1"}

    def reload() -> tuple[bool, str]:
        calls.append(1)
        if len(calls) == 2:
            return False, "policy.toml: roles[0].grants: unknown action 'selec'"
        if len(calls) == 3:
            raise RuntimeError("boom")
        current["v"] = next(versions)
        return True, "policy reloaded"

    ep = AdminEndpoint(
        listen=f"127.0.0.1:{free_port()}",
        token=TOKEN,
        metrics=metrics,
        readiness=Ready(),
        reloader=PolicyReloader(reload, version=lambda: current["v"], metrics=metrics),
        request_timeout_s=0.5,
        idle_timeout_s=1.0,
        max_connections=4,
    )
    await ep.start()
    try:
        yield ep
    finally:
        await ep.close()


def port_of(ep: AdminEndpoint) -> int:
    return ep.address[1]


async def test_healthz_needs_no_token(endpoint: AdminEndpoint) -> None:
    status, headers, body = await http(port_of(endpoint), get("/healthz"))
    assert status == 200
    assert body == b"ok\n"
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
async def test_token_required(endpoint: AdminEndpoint, path: str) -> None:
    status, headers, _ = await http(port_of(endpoint), get(path))
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, _ = await http(port_of(endpoint), get(path, token="wrong"))
    assert status == 401
    status, _, _ = await http(port_of(endpoint), get(path, token=TOKEN + "x"))
    assert status == 401
    bad_scheme = f"Authorization: Basic {TOKEN}\r\n"
    status, _, _ = await http(port_of(endpoint), get(path, extra=bad_scheme))
    assert status == 401
    twice = f"Authorization: Bearer {TOKEN}\r\n"
    status, _, _ = await http(port_of(endpoint), get(path, token=TOKEN, extra=twice))
    assert status == 401
    status, _, _ = await http(port_of(endpoint), get(path, token=TOKEN))
    assert status == 200


async def test_metrics_exposition(endpoint: AdminEndpoint) -> None:
    status, headers, body = await http(port_of(endpoint), get("/metrics", token=TOKEN))
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'sqlbastion_client_connections_total{backend="core",protocol="mysql"} 0.0' in text
    assert 'sqlbastion_audit_sink_errors_total{sink="sqlite"} 0.0' in text
    assert "process_cpu_seconds_total" in text
    assert "sqlbastion_build_info" in text


async def test_metrics_openmetrics_and_gzip(endpoint: AdminEndpoint) -> None:
    extra = "Accept: application/openmetrics-text;version=1.0.0\r\nAccept-Encoding: gzip\r\n"
    status, headers, body = await http(port_of(endpoint), get("/metrics", token=TOKEN, extra=extra))
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")


async def test_head_has_no_body(endpoint: AdminEndpoint) -> None:
    status, headers, body = await http(port_of(endpoint), get("/healthz", method="HEAD"))
    assert status == 200
    assert headers["content-length"] == "3"
    assert body == b""


async def test_unknown_route_and_wrong_method(endpoint: AdminEndpoint) -> None:
    status, _, _ = await http(port_of(endpoint), get("/nope", token=TOKEN))
    assert status == 404
    status, headers, _ = await http(port_of(endpoint), get("/metrics", token=TOKEN, method="POST"))
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    status, headers, _ = await http(port_of(endpoint), get("/-/reload", token=TOKEN))
    assert status == 405
    assert headers["allow"] == "POST"


async def test_readyz(endpoint: AdminEndpoint) -> None:
    status, _, body = await http(port_of(endpoint), get("/readyz", token=TOKEN))
    assert status == 200
    assert json.loads(body) == {"ready": True, "checks": {"backend:core": {"ok": True, "detail": "reachable"}}}
    assert isinstance(endpoint.readiness, Ready)
    endpoint.readiness.results.append(CheckResult(name="audit_spool", ok=False, detail="/x is not writable"))
    status, _, body = await http(port_of(endpoint), get("/readyz", token=TOKEN))
    assert status == 503
    assert json.loads(body)["ready"] is False


async def test_reload_ok_refused_and_raising(endpoint: AdminEndpoint) -> None:
    post = get("/-/reload", token=TOKEN, method="POST")
    metrics = endpoint.metrics
    status, _, body = await http(port_of(endpoint), post)
    assert (status, json.loads(body)) == (200, {"ok": True, "message": "policy reloaded"})
    assert metrics.registry.get_sample_value("sqlbastion_policy_info", {"version": "v2"}) == 1
    assert metrics.registry.get_sample_value("sqlbastion_policy_last_reload_ok") == 1

    status, _, body = await http(port_of(endpoint), post)
    assert status == 422
    assert json.loads(body)["ok"] is False
    assert "unknown action" in json.loads(body)["message"]
    assert metrics.registry.get_sample_value("sqlbastion_policy_last_reload_ok") == 0
    # the version in force did not change
    assert metrics.registry.get_sample_value("sqlbastion_policy_info", {"version": "v2"}) == 1

    status, _, body = await http(port_of(endpoint), post)
    assert status == 422
    assert json.loads(body) == {"ok": False, "message": "policy reload failed: RuntimeError"}
    assert metrics.registry.get_sample_value("sqlbastion_policy_reloads_total", {"result": "ok"}) == 1
    assert metrics.registry.get_sample_value("sqlbastion_policy_reloads_total", {"result": "failed"}) == 2


async def test_reload_unavailable_without_a_reloader() -> None:
    ep = AdminEndpoint(listen=f"127.0.0.1:{free_port()}", metrics=Metrics())
    await ep.start()
    try:
        status, _, body = await http(ep.address[1], get("/-/reload", method="POST"))
        assert status == 503
        assert json.loads(body)["ok"] is False
        # without a token configured, /metrics is open (loopback only; config enforces the token elsewhere)
        status, _, _ = await http(ep.address[1], get("/metrics"))
        assert status == 200
    finally:
        await ep.close()


async def test_keep_alive_serves_several_requests(endpoint: AdminEndpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(endpoint))
    try:
        one = f"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        writer.write(one.encode())
        await writer.drain()
        first = await reader.readuntil(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200")
        assert b"Connection: keep-alive" in first
        await reader.readexactly(3)
        second = await reader.readuntil(b"\r\n\r\n")
        assert second.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_malformed_request_gets_a_status_and_close(endpoint: AdminEndpoint) -> None:
    status, headers, _ = await http(port_of(endpoint), b"GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n")
    assert status == 400
    assert headers["connection"] == "close"
    big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    status, _, _ = await http(port_of(endpoint), big)
    assert status == 431


async def test_slow_request_times_out(endpoint: AdminEndpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(endpoint))
    try:
        # Trickle bytes: each arrives within the idle timeout, but the request never completes.
        for _ in range(4):
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.2)
        data = await asyncio.wait_for(reader.read(), 3.0)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 408")


async def test_idle_connection_is_closed(endpoint: AdminEndpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(endpoint))
    try:
        data = await asyncio.wait_for(reader.read(), 3.0)
    finally:
        writer.close()
    assert data == b""


async def test_connection_cap(endpoint: AdminEndpoint) -> None:
    held = [await asyncio.open_connection("127.0.0.1", port_of(endpoint)) for _ in range(4)]
    await asyncio.sleep(0.05)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(endpoint))
        writer.write(get("/healthz"))
        try:
            data = await asyncio.wait_for(reader.read(), 3.0)
        except ConnectionError:
            data = b""
        writer.close()
        assert data == b""  # aborted without an answer
    finally:
        for _, w in held:
            w.close()
    await asyncio.sleep(0.05)
    status, _, _ = await http(port_of(endpoint), get("/healthz"))
    assert status == 200


async def test_admin_requests_are_counted(endpoint: AdminEndpoint) -> None:
    await http(port_of(endpoint), get("/healthz"))
    await http(port_of(endpoint), get("/nope"))
    reg = endpoint.metrics.registry
    assert reg.get_sample_value("sqlbastion_admin_requests_total", {"route": "/healthz", "code": "200"}) == 1
    assert reg.get_sample_value("sqlbastion_admin_requests_total", {"route": "other", "code": "404"}) == 1


def test_from_settings_reveals_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLBASTION_TEST_ADMIN_TOKEN", TOKEN)
    settings = AdminSettings(listen="0.0.0.0:9187", token=SecretRef("env:SQLBASTION_TEST_ADMIN_TOKEN"))
    ep = AdminEndpoint.from_settings(settings, metrics=Metrics())
    assert ep.token == TOKEN
    assert TOKEN not in repr(settings)
    monkeypatch.setenv("SQLBASTION_TEST_ADMIN_TOKEN", "")
    with pytest.raises(SecretUnavailable, match="empty"):
        AdminEndpoint.from_settings(settings, metrics=Metrics())


# -- readiness checks ---------------------------------------------------------


async def test_backend_reachable_checks_tcp() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = BackendSettings(
        name="core", protocol="mysql", listen="127.0.0.1:1", host="127.0.0.1", port=port, user="u"
    )
    try:
        [ok] = await run_checks([backend_reachable(backend)])
        assert ok == CheckResult(name="backend:core", ok=True, detail=f"127.0.0.1:{port} reachable")
    finally:
        server.close()
        await server.wait_closed()
    [down] = await run_checks([backend_reachable(backend)])
    assert not down.ok
    assert "unreachable" in down.detail


async def test_spool_writable(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    [ok] = await run_checks([spool_writable(tmp_path)])
    assert ok.ok
    [missing] = await run_checks([spool_writable(tmp_path / "absent")])
    assert not missing.ok
    [full] = await run_checks([spool_writable(tmp_path, min_free_bytes=1 << 62)])
    assert not full.ok
    assert "free" in full.detail
    assert list(tmp_path.iterdir()) == []


async def test_failing_and_slow_checks_are_not_ready() -> None:
    async def boom() -> tuple[bool, str]:
        raise RuntimeError("secret detail must not leak")

    async def slow() -> tuple[bool, str]:
        await asyncio.sleep(10)
        return True, ""

    results = await run_checks(
        [ReadinessCheck(name="boom", probe=boom), ReadinessCheck(name="slow", probe=slow)], timeout_s=0.1
    )
    assert [(r.name, r.ok) for r in results] == [("boom", False), ("slow", False)]
    assert "secret" not in results[0].detail


async def test_policy_loaded_and_default_checks() -> None:
    runtime = Runtime()  # the pass-through engine: version "none"
    [r] = await run_checks([policy_loaded(runtime, policy_files=["policy.toml"])])
    assert not r.ok
    [r] = await run_checks([policy_loaded(runtime, policy_files=[])])
    assert r.ok
    settings = loads(
        """
        [[backends]]
        name = "core"
        protocol = "mysql"
        listen = "127.0.0.1:13306"
        host = "127.0.0.1"
        port = 1
        user = "sqlbastion"
        """
    )
    names = [c.name for c in default_checks(settings, runtime)]
    assert names == ["backend:core", "policy", "audit_spool", "audit_pipeline"]
    ready = readiness(default_checks(settings, runtime), timeout_s=1.0)
    results = {r.name: r.ok for r in await ready()}
    assert results["backend:core"] is False
    assert results["audit_pipeline"] is True


def test_reloader_runs_reload_off_the_event_loop() -> None:
    seen: list[str] = []

    def reload() -> tuple[bool, str]:
        seen.append(threading.current_thread().name)
        return True, "ok"

    metrics = Metrics()
    ok, _ = asyncio.run(PolicyReloader(reload, version=lambda: "abc", metrics=metrics)())
    assert ok
    assert len(seen) == 1
    assert seen[0] != threading.main_thread().name
    assert metrics.registry.get_sample_value("sqlbastion_policy_info", {"version": "abc"}) == 1


async def test_request_body_over_the_limit_is_refused() -> None:
    ep = AdminEndpoint(listen=f"127.0.0.1:{free_port()}", metrics=Metrics(), limits=Limits(max_body=16))
    await ep.start()
    try:
        raw = b"POST /-/reload HTTP/1.1\r\nContent-Length: 17\r\n\r\n" + b"x" * 17
        status, headers, _ = await http(ep.address[1], raw)
        assert status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE.value
        assert headers["connection"] == "close"
    finally:
        await ep.close()


async def test_concurrent_scrapes_are_all_answered(endpoint: AdminEndpoint) -> None:
    for i in range(300):  # a registry of realistic size
        endpoint.metrics.statements.labels("mysql", "core", "select", "block", f"R{i}").inc()
    results = await asyncio.gather(*(http(port_of(endpoint), get("/metrics", token=TOKEN)) for _ in range(4)))
    assert [status for status, _, _ in results] == [200] * 4
    for _, _, body in results:
        assert b'rule_id="R299"' in body


async def test_request_fed_byte_by_byte_over_the_socket(endpoint: AdminEndpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(endpoint))
    try:
        for b in get("/healthz"):
            writer.write(bytes([b]))
            await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nok\n")


async def test_pipelined_good_then_bad_request(endpoint: AdminEndpoint) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(endpoint))
    try:
        writer.write(
            b"GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    first, _, rest = data.partition(b"ok\n")
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert rest.startswith(b"HTTP/1.1 501 Not Implemented")
    assert b"Connection: close" in rest


async def test_smuggled_request_in_a_body_is_not_served(endpoint: AdminEndpoint) -> None:
    smuggled = f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    raw = (
        b"POST /-/reload HTTP/1.1\r\nContent-Length: "
        + str(len(smuggled)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + smuggled
    )
    status, _, body = await http(port_of(endpoint), raw)
    assert status == 401  # the POST itself, without a token; its body is never read as a request
    assert b"sqlbastion_" not in body


_FUZZ_ENDPOINT = AdminEndpoint(listen="127.0.0.1:9187", token=TOKEN, metrics=Metrics())


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
    path=st.sampled_from(["/metrics", "/readyz", "/-/reload", "/healthz", "/", "/metrics/", "/METRICS", "/-/reload/x"]),
    auth=st.one_of(
        st.none(),
        st.just(f"Bearer {TOKEN}"),
        st.sampled_from([f"bearer {TOKEN}", f"Bearer  {TOKEN} ", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN]),
        st.text(max_size=60).map(lambda t: "Bearer " + t),
        st.text(max_size=60),
    ),
)
def test_fuzzed_requests_never_reach_a_protected_route_without_the_token(
    method: str, path: str, auth: str | None
) -> None:
    headers = (("authorization", auth),) if auth is not None else ()
    request = Request(method=method, path=path, query="", version="HTTP/1.1", headers=headers)
    response = asyncio.run(_FUZZ_ENDPOINT.respond(request))
    scheme, _, credentials = (auth or "").partition(" ")
    authorized = scheme.lower() == "bearer" and credentials.strip() == TOKEN
    if response.status is HTTPStatus.OK and path != "/healthz":
        assert authorized
    if path == "/healthz" and method in ("GET", "HEAD"):
        assert response.status is HTTPStatus.OK
