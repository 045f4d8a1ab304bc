"""sqlbastion's configuration: one TOML file, validated at load into frozen settings.

Every key is documented in ``config.example.toml`` (which a test validates) and in
``docs/configuration.md``. Relative paths in the file are resolved against the
file's own directory, so a configuration can be moved together with its users
and policy files.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlbastion.settings_schema import ConfigError, SecretRef, build

__all__ = [
    "AdminSettings",
    "AuditSettings",
    "BackendSettings",
    "BackendTLS",
    "ConfigError",
    "LoggingSettings",
    "MaskingSettings",
    "PolicySettings",
    "SecretRef",
    "ServerSettings",
    "Settings",
    "SinkSettings",
    "TLSSettings",
    "load",
    "parse_listen",
]


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:3307"`` or ``"[::1]:3307"`` → (host, port). Raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"listen address {value!r} must look like HOST:PORT")
    host = host.strip("[]")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"listen port {port} is out of range 1-65535")
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerSettings:
    """Process-wide limits for client connections."""

    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 28800.0
    max_connections: int = 10000
    max_statement_bytes: int = 1 << 20
    max_statements_per_message: int = 64
    drain_timeout_s: float = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class TLSSettings:
    """sqlbastion's own certificate, offered to clients on both protocols."""

    cert_file: str
    key_file: SecretRef
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"


@dataclass(frozen=True, kw_only=True, slots=True)
class BackendTLS:
    """How sqlbastion itself connects to a backend."""

    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "disable"
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.mode.startswith("verify") and not self.ca_file:
            raise ValueError(f"backend tls mode {self.mode!r} needs ca_file")


@dataclass(frozen=True, kw_only=True, slots=True)
class BackendSettings:
    """One real database server and the client-facing listener that fronts it."""

    name: str
    protocol: Literal["mysql", "postgres"]
    listen: str
    host: str
    port: int
    user: str
    password: SecretRef | None = None
    database: str | None = None
    require_tls: bool = False
    tls: BackendTLS = field(default_factory=BackendTLS)
    connect_timeout_s: float = 10.0
    raw_statements_in_audit: bool = False
    catalog_refresh_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"backend name {self.name!r} must be letters, digits, '-' or '_'")
        parse_listen(self.listen)
        if not 0 < self.port < 65536:
            raise ValueError(f"backend port {self.port} is out of range 1-65535")

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


@dataclass(frozen=True, kw_only=True, slots=True)
class AdminSettings:
    """The admin HTTP endpoint: /metrics, /healthz, /readyz, policy reload."""

    enabled: bool = True
    listen: str = "127.0.0.1:9187"
    token: SecretRef | None = None
    metrics_person_labels: bool = False
    metrics_person_label_cap: int = 100

    def __post_init__(self) -> None:
        host, _ = parse_listen(self.listen)
        if self.enabled and not _is_loopback(host) and self.token is None:
            raise ValueError("admin.listen is not a loopback address, so admin.token is required")


@dataclass(frozen=True, kw_only=True, slots=True)
class LoggingSettings:
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicySettings:
    """Where persons, roles, rules and classifications live (see docs/policy.md)."""

    files: list[str] = field(default_factory=list)
    decision_cache_entries: int = 10000
    # With no policy files nothing would be checked: refused unless a lab says so explicitly.
    allow_unchecked: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class MaskingSettings:
    """Keys for keyed masking functions (pseudonyms, format-preserving tokens)."""

    keys: dict[str, SecretRef] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class SinkSettings:
    """One audit sink. ``type`` chooses which of the other keys apply (docs/audit.md)."""

    type: Literal["sqlite", "jsonl", "postgres", "syslog", "kafka", "elasticsearch", "loki"]
    name: str | None = None
    required: bool = True
    # sqlite / jsonl
    path: str | None = None
    retention_days: float | None = None
    max_bytes: int | None = None
    # postgres
    dsn: SecretRef | None = None
    table: str = "sqlbastion_audit"
    # syslog
    address: str | None = None
    tls: bool = False
    ca_file: str | None = None
    app_name: str = "sqlbastion"
    # kafka
    bootstrap_servers: list[str] = field(default_factory=list)
    topic: str = "sqlbastion-audit"
    # elasticsearch / loki
    url: str | None = None
    index: str = "sqlbastion-audit"
    auth_header: SecretRef | None = None
    batch_size: int = 500


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditSettings:
    spool_dir: str = "var/audit/spool"
    on_audit_failure: Literal["fail_closed", "fail_open"] = "fail_closed"
    fsync: Literal["always", "interval"] = "interval"
    fsync_interval_ms: int = 50
    segment_bytes: int = 64 << 20
    max_spool_bytes: int = 4 << 30
    chain_algorithm: Literal["hmac-sha256", "hmac-sm3"] = "hmac-sha256"
    chain_key: SecretRef | None = None
    sinks: list[SinkSettings] = field(default_factory=list)
    # Where sinks run: "process" (a child process, off the proxy's interpreter lock) or "thread".
    delivery: Literal["process", "thread"] = "process"
    # Seconds sinks may go on catching up at shutdown; what they miss is delivered after the next start.
    sink_grace_s: float = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """The whole configuration. ``source`` is the file it came from."""

    source: str = "<memory>"
    users_file: str = "users.toml"
    server: ServerSettings = field(default_factory=ServerSettings)
    tls: TLSSettings | None = None
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    masking: MaskingSettings = field(default_factory=MaskingSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    backends: list[BackendSettings] = field(default_factory=list)

    def backend(self, name: str) -> BackendSettings:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def resolve_path(self, value: str) -> Path:
        """A path from the file, relative to the file's own directory."""
        p = Path(value)
        if p.is_absolute() or self.source == "<memory>":
            return p
        return Path(self.source).parent / p


def _check_cross_references(settings: Settings) -> None:
    file = settings.source
    names: set[str] = set()
    listens: set[tuple[str, int]] = set()
    for i, b in enumerate(settings.backends):
        if b.name in names:
            raise ConfigError(file, f"backends[{i}].name", f"backend name {b.name!r} is used twice")
        names.add(b.name)
        addr = b.listen_address
        if addr in listens:
            raise ConfigError(file, f"backends[{i}].listen", f"listen address {b.listen} is used twice")
        listens.add(addr)
        if b.require_tls and settings.tls is None:
            raise ConfigError(
                file, f"backends[{i}].require_tls", "require_tls needs a [tls] section with a certificate"
            )
    sink_names: set[str] = set()
    for i, s in enumerate(settings.audit.sinks):
        name = s.name or s.type
        if name in sink_names:
            raise ConfigError(file, f"audit.sinks[{i}].name", f"two sinks are called {name!r}; name them")
        sink_names.add(name)
        needed = {
            "sqlite": ("path",),
            "jsonl": ("path",),
            "postgres": ("dsn",),
            "syslog": ("address",),
            "kafka": ("bootstrap_servers",),
            "elasticsearch": ("url",),
            "loki": ("url",),
        }[s.type]
        for key in needed:
            if not getattr(s, key):
                raise ConfigError(file, f"audit.sinks[{i}].{key}", f"a {s.type} sink needs {key}")


def loads(text: str, *, source: str = "<memory>") -> Settings:
    """Parse and validate configuration text. Raises ConfigError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    data = dict(data)
    data["source"] = source
    settings = build(Settings, data, file=source)
    _check_cross_references(settings)
    return settings


def load(path: str | Path) -> Settings:
    """Read and validate a configuration file. Raises ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read the file: {exc.strerror}") from None
    return loads(text, source=str(p))


def replace(settings: Settings, **changes: object) -> Settings:
    """A copy of ``settings`` with some top-level sections replaced (for tests and tools)."""
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]  # kwargs are checked by dataclasses at run time
