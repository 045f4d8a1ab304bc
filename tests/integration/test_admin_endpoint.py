"""The admin endpoint as ``serve`` runs it, in front of a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sqlbastion.config import Settings, loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

TOKEN_ENV = "SQLBASTION_TEST_ADMIN_EP_TOKEN"
PG_SECRET_ENV = "SQLBASTION_TEST_ADMIN_EP_PG_PW"
TOKEN = "admin-endpoint-token"


def _settings(directory: Path, pg: ServerInfo, *, admin_port: int, backend_port: int, enabled: bool = True) -> Settings:
    return loads(
        f"""
users_file = "{directory / "users.toml"}"

[admin]
enabled = {"true" if enabled else "false"}
listen = "127.0.0.1:{admin_port}"
token = "env:{TOKEN_ENV}"

[policy]
allow_unchecked = true

[audit]
spool_dir = "{directory / "spool"}"

[[backends]]
name = "pgadmin"
protocol = "postgres"
listen = "127.0.0.1:{free_port()}"
host = "127.0.0.1"
port = {backend_port}
user = "{pg.service_user}"
password = "env:{PG_SECRET_ENV}"
database = "postgres"
""",
        source=str(directory / "sqlbastion.toml"),
    )


@pytest.fixture
def workdir(postgres_server: ServerInfo) -> Iterator[Path]:
    saved = {k: os.environ.get(k) for k in (TOKEN_ENV, PG_SECRET_ENV)}
    os.environ[TOKEN_ENV] = TOKEN
    os.environ[PG_SECRET_ENV] = postgres_server.service_password
    with tempfile.TemporaryDirectory(prefix="sqlbastion-admin-") as tmp:
        directory = Path(tmp)
        users = UsersFile(path=directory / "users.toml")
        users.persons["carol"] = make_credentials("carol", "carol-pw", ("scram_sha_256",))
        users.save()
        try:
            yield directory
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _get(port: int, path: str, *, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ready(port: int) -> tuple[int, dict[str, Any]]:
    status, body = _get(port, "/readyz")
    return status, json.loads(body)


def test_serve_starts_the_admin_endpoint_and_reports_readiness(workdir: Path, postgres_server: ServerInfo) -> None:
    admin_port = free_port()
    settings = _settings(workdir, postgres_server, admin_port=admin_port, backend_port=postgres_server.port)
    with ProxyThread(settings) as proxy:
        assert _get(admin_port, "/healthz", token=None) == (200, b"ok\n")
        assert _get(admin_port, "/metrics", token=None)[0] == 401
        status, checks = _ready(admin_port)
        assert status == 200, checks
        assert set(checks["checks"]) == {"backend:pgadmin", "policy", "audit_spool", "audit_pipeline"}
        assert all(c["ok"] for c in checks["checks"].values())

        port = proxy.port("pgadmin")
        with psycopg.connect(
            host="127.0.0.1", port=port, user="carol", password="carol-pw", dbname="postgres", sslmode="disable"
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            _, text = _get(admin_port, "/metrics")
            assert b'sqlbastion_client_connections_active{backend="pgadmin",protocol="postgres"} 1.0' in text
        # no reload function is wired in this runtime: the endpoint says so
        req = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/-/reload", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 503
    # stopped with the proxy
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=2)


def test_unreachable_backend_is_not_ready(workdir: Path, postgres_server: ServerInfo) -> None:
    admin_port = free_port()
    settings = _settings(workdir, postgres_server, admin_port=admin_port, backend_port=free_port())
    with ProxyThread(settings):
        status, checks = _ready(admin_port)
        assert status == 503
        backend = checks["checks"]["backend:pgadmin"]
        assert backend["ok"] is False
        assert "unreachable" in backend["detail"]
        assert checks["checks"]["audit_spool"]["ok"] is True
        assert TOKEN not in json.dumps(checks)
        assert postgres_server.service_password not in json.dumps(checks)


def test_admin_disabled_opens_no_port(workdir: Path, postgres_server: ServerInfo) -> None:
    admin_port = free_port()
    settings = _settings(
        workdir, postgres_server, admin_port=admin_port, backend_port=postgres_server.port, enabled=False
    )
    with ProxyThread(settings), pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=2)
