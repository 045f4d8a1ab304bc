"""Support for the end-to-end masking tests: a recording relay, leak searches and a running proxy.

``RecordingRelay`` sits between a client and the proxy on 127.0.0.1 and keeps
every byte the proxy sends to the client, so a test can assert that no form of
a canary value (itself, hex, base64, MD5, reversed) crossed the wire by any
path, whatever the client library decoded or raised.

The runtime is the product's: the policy engine (lineage, inference guard,
sensitive columns) and the masking planner sharing one masking policy from the
policy file below, with each backend's catalog loaded from the real server.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlbastion.app import build_runtime
from sqlbastion.config import Settings, loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.sample_bank import CanaryRow
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.proxy.services import ProxyServices
from sqlbastion.proxy.session import PassThroughEngine, Runtime
from sqlbastion.users import UsersFile, make_credentials

PASSWORDS = {"dba": "dba-pw-1", "dev": "dev-pw-1", "analyst": "analyst-pw-1"}
KEY_ENV = "SQLBASTION_TEST_MASKING_KEY"
PG_SECRET_ENV = "SQLBASTION_TEST_MASK_PG_PW"
MY_SECRET_ENV = "SQLBASTION_TEST_MASK_MY_PW"

POLICY = """
[[persons]]
name = "dba"
roles = ["dba"]

[[persons]]
name = "dev"
roles = ["developer"]

[[persons]]
name = "analyst"
roles = ["analyst"]

[[roles]]
name = "dba"
duties = ["use"]
grants = [{ actions = ["select", "insert", "update", "delete"], objects = ["*:bank.*"] }]
masks = { default = "clear" }
unprovable = "audit_only"

[[roles]]
name = "developer"
duties = ["use"]
grants = [{ actions = ["select", "insert", "update", "delete"], objects = ["*:bank.*"] }]
lookups = ["*:bank.customers.mobile", "*:bank.*.customers.mobile"]

[roles.masks]
id_card = "id_card"
mobile = "mobile"
name = "chinese_name"
email = "email"
address = "address"
bank_card = "bank_card"
amount = "band"
date_of_birth = "date"
level_5 = "deny"

[[roles]]
name = "analyst"
duties = ["use"]
grants = [{ actions = ["select"], objects = ["*:bank.*"] }]
masks = { mobile = "pseudonym(key=pii)", bank_card = "fpe(key=pii)", level_4 = "null" }

[[classifications]]
objects = [
  "*:bank.customers.name", "*:bank.*.customers.name",
  "*:bank.transactions.counterparty_name", "*:bank.*.transactions.counterparty_name",
]
type = "name"
level = 3

[[classifications]]
objects = ["*:bank.transactions.memo", "*:bank.*.transactions.memo"]
type = "memo"
level = 5

[[classifications]]
objects = ["*:bank.accounts.balance", "*:bank.*.accounts.balance"]
type = "amount"
level = 3

[[classifications]]
objects = ["*:bank.customers.birth_date", "*:bank.*.customers.birth_date"]
type = "date_of_birth"
level = 3

[[classifications]]
objects = ["*:bank.customers.id_card", "*:bank.*.customers.id_card"]
type = "id_card"
level = 4

[[classifications]]
objects = ["*:bank.customers.mobile", "*:bank.*.customers.mobile"]
type = "mobile"
level = 3

[[classifications]]
objects = ["*:bank.customers.email", "*:bank.*.customers.email"]
type = "email"
level = 3

[[classifications]]
objects = ["*:bank.customers.address", "*:bank.*.customers.address"]
type = "address"
level = 3

[[classifications]]
objects = [
  "*:bank.accounts.card_no", "*:bank.*.accounts.card_no",
  "*:bank.transactions.counterparty_card", "*:bank.*.transactions.counterparty_card",
]
type = "bank_card"
level = 4
"""


# -- leak search ----------------------------------------------------------------------------


def leak_forms(value: str) -> dict[str, bytes]:
    """The byte strings that would reveal ``value``: itself and its usual encodings."""
    raw = value.encode("utf-8")
    md5 = hashlib.md5(raw).hexdigest()  # searching for the MD5 a client could compute, not hashing secrets
    forms = {
        "utf-8": raw,
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "base64": base64.b64encode(raw).rstrip(b"=")[:-1] or base64.b64encode(raw),
        "md5": md5.encode(),
        "MD5": md5.upper().encode(),
        "reversed": value[::-1].encode("utf-8"),
    }
    with contextlib.suppress(UnicodeEncodeError):
        forms["gbk"] = value.encode("gbk")
    return forms


def find_leaks(data: bytes, values: tuple[str, ...]) -> list[str]:
    """Which forms of which values occur in ``data``."""
    found = []
    for v in values:
        for form, needle in leak_forms(v).items():
            if needle and needle in data:
                found.append(f"{v!r} as {form}")
    return found


def canary_values(canary: CanaryRow) -> tuple[str, ...]:
    return canary.sensitive_values()


# -- the recording relay --------------------------------------------------------------------


class RecordingRelay:
    """A TCP relay on 127.0.0.1 that records every byte sent from the target to clients."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._to_client = bytearray()
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        t = threading.Thread(target=self._accept, name="recording-relay", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for src, dst, record in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    with self._lock:
                        self._to_client += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def received(self) -> bytes:
        with self._lock:
            return bytes(self._to_client)

    def clear(self) -> None:
        with self._lock:
            self._to_client.clear()

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


# -- runtime and proxy ----------------------------------------------------------------------


def masking_runtime(settings: Settings) -> Runtime:
    """The product's runtime (the composition ``serve`` uses), checked to hold a policy engine."""
    runtime = build_runtime(settings)
    assert not isinstance(runtime.engine, PassThroughEngine), "the policy files configure a policy engine"
    return runtime


@dataclass
class MaskingProxy:
    thread: ProxyThread
    settings: Settings
    runtime: Runtime
    ports: dict[str, int]
    saved_env: dict[str, str | None] = field(default_factory=dict)


def _set_env(saved: dict[str, str | None], name: str, value: str) -> None:
    saved.setdefault(name, os.environ.get(name))
    os.environ[name] = value


def run_masking_proxy(
    directory: Path, *, postgres: ServerInfo | None = None, mariadb: ServerInfo | None = None
) -> Iterator[MaskingProxy]:
    """A proxy with the masking test policy in front of the given servers (a generator, for fixtures)."""
    directory.mkdir(parents=True, exist_ok=True)
    saved: dict[str, str | None] = {}
    _set_env(saved, KEY_ENV, "masking-test-key-0123456789abcdef")
    (directory / "policy.toml").write_text(POLICY, encoding="utf-8")
    users = UsersFile(path=directory / "users.toml")
    for name, pw in PASSWORDS.items():
        users.persons[name] = make_credentials(name, pw, ("mysql_native", "caching_sha2", "scram_sha_256"))
    users.save()
    ports: dict[str, int] = {}
    backends = []
    if postgres is not None:
        _set_env(saved, PG_SECRET_ENV, postgres.service_password)
        ports["pg"] = free_port()
        backends.append(
            f'[[backends]]\nname = "pg"\nprotocol = "postgres"\nlisten = "127.0.0.1:{ports["pg"]}"\n'
            f'host = "{postgres.host}"\nport = {postgres.port}\nuser = "{postgres.service_user}"\n'
            f'password = "env:{PG_SECRET_ENV}"\ndatabase = "bank"\n'
        )
    if mariadb is not None:
        _set_env(saved, MY_SECRET_ENV, mariadb.service_password)
        ports["my"] = free_port()
        backends.append(
            f'[[backends]]\nname = "my"\nprotocol = "mysql"\nlisten = "127.0.0.1:{ports["my"]}"\n'
            f'host = "{mariadb.host}"\nport = {mariadb.port}\nuser = "{mariadb.service_user}"\n'
            f'password = "env:{MY_SECRET_ENV}"\ndatabase = "bank"\n'
        )
    text = (
        f'users_file = "users.toml"\n[admin]\nenabled = false\n[policy]\nfiles = ["policy.toml"]\n'
        f'[masking]\nkeys = {{ pii = "env:{KEY_ENV}" }}\n[audit]\nspool_dir = "{directory / "spool"}"\n'
        + "\n".join(backends)
    )
    settings = loads(text, source=str(directory / "sqlbastion.toml"))
    runtime = masking_runtime(settings)
    services = ProxyServices(
        settings=settings, users=UsersFile.load(settings.resolve_path(settings.users_file)), runtime=runtime
    )
    thread = ProxyThread(settings, services=services)
    thread.start()
    try:
        yield MaskingProxy(thread=thread, settings=settings, runtime=runtime, ports=ports, saved_env=saved)
    finally:
        thread.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def hidden_parts(canary: CanaryRow) -> tuple[str, ...]:
    """The parts of the canary values that their masks hide (substrings the adversarial classes aim at).

    Each is long or distinctive enough not to occur by chance in other traffic.
    """
    return (
        canary.name[2:],  # the given name after the compound surname 上官
        canary.id_card[6:-4],  # the birth date and sequence digits
        canary.email.split("@")[0][1:],  # the local part after its first character
        canary.address[len("广东省深圳市") :][:6],  # the district and street after the city
        canary.card_no[6:-4],  # the account digits between the bank prefix and the last four
    )
