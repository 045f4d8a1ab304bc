"""Test-session fixtures: real MariaDB and PostgreSQL servers on loopback ports.

The servers start once per test session in a temporary directory and stop at
the end. With ``CI=true`` a server that cannot start fails the run; elsewhere
the integration tests that need it are skipped with the reason.

Set ``SQLBASTION_TEST_SERVERS=/path/to/servers.json`` (written by
``python -m sqlbastion.devtools.servers start``) to reuse running servers.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlbastion.devtools.sample_bank import LoadedBank, load_servers
from sqlbastion.devtools.servers import ServerError, ServerInfo, start_mariadb, start_postgres, stop

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} could not start: {exc}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _reused(kind: str) -> ServerInfo | None:
    path = os.environ.get("SQLBASTION_TEST_SERVERS")
    if not path:
        return None
    data = json.loads(Path(path).read_text())
    return ServerInfo(**data[kind]) if kind in data else None


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sqlbastion-test-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


@pytest.fixture(scope="session")
def mariadb_server(servers_dir: Path) -> Iterator[ServerInfo]:
    reused = _reused("mariadb")
    if reused:
        yield reused
        return
    try:
        info = start_mariadb(servers_dir / "mariadb")
    except ServerError as exc:
        _unavailable("MariaDB", exc)
        raise
    try:
        yield info
    finally:
        stop(info)


@pytest.fixture(scope="session")
def postgres_server(servers_dir: Path) -> Iterator[ServerInfo]:
    reused = _reused("postgres")
    if reused:
        yield reused
        return
    try:
        info = start_postgres(servers_dir / "postgres")
    except ServerError as exc:
        _unavailable("PostgreSQL", exc)
        raise
    try:
        yield info
    finally:
        stop(info)


@pytest.fixture(scope="session")
def sample_bank(mariadb_server: ServerInfo, postgres_server: ServerInfo) -> LoadedBank:
    """The sample bank (database ``bank``; schema ``public`` in PostgreSQL), loaded once into both servers.

    Read-only for tests: a test that writes uses its own table or rolls back.
    ``sample_bank.canary`` holds customer 1's known values (name, id_card, mobile,
    email, address, card_no …) for masking and leak checks.
    """
    return load_servers(mariadb=mariadb_server, postgres=postgres_server)
