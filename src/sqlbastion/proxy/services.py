"""What every listener needs from the process: settings, persons, runtime, TLS."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlbastion.config import Settings
from sqlbastion.proxy.session import Runtime
from sqlbastion.users import UsersFile


@dataclass(kw_only=True, slots=True)
class ProxyServices:
    settings: Settings
    users: UsersFile
    runtime: Runtime = field(default_factory=Runtime)
    server_tls: ssl.SSLContext | None = None
    # observability.metrics.Metrics once it exists; typed loosely to keep the
    # proxy importable without the admin endpoint.
    metrics: Any = None
    # The policy engine's reload: parse, validate and swap the policy in
    # atomically; (True, message) or (False, why the new policy was refused).
    # Called by ``POST /-/reload`` on the admin endpoint and on SIGHUP.
    reload_policy: Callable[[], tuple[bool, str]] | None = None


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """sqlbastion's own TLS context for clients, or None when [tls] is absent."""
    if settings.tls is None:
        return None
    import os
    import tempfile

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if settings.tls.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    # The key is a secret reference whose value is the PEM text; ssl wants a
    # path, so it goes through a private (0600) temporary file removed at once.
    key_pem = settings.tls.key_file.reveal_bytes()
    fd, path = tempfile.mkstemp(prefix="sqlbastion-key-")
    try:
        os.write(fd, key_pem)
        os.close(fd)
        ctx.load_cert_chain(str(settings.resolve_path(settings.tls.cert_file)), path)
    finally:
        os.unlink(path)
    return ctx
