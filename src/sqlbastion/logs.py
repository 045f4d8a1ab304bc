"""Logging: structlog, rendered as JSON or for the console, one logger per component.

Log events are structured key/values. Secrets never reach a logger: settings
hold ``SecretRef`` references, and the redaction processor below drops any key
whose name says it holds a secret, as a second line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from sqlbastion.config import LoggingSettings

_SECRET_KEYS = frozenset({"password", "passwd", "secret", "token", "key", "auth", "authorization", "dsn"})


def _redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event_dict):
        if k.lower() in _SECRET_KEYS:
            event_dict[k] = "[redacted]"
    return event_dict


def configure(settings: LoggingSettings, *, stream: Any = None) -> None:
    """Configure structlog and the standard library's root logger once per process."""
    level = getattr(logging, settings.level.upper())
    renderer: Any
    if settings.format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=stream or sys.stderr, format="%(name)s %(levelname)s %(message)s")


def get_logger(component: str) -> Any:
    """The logger for one component (``proxy.mysql``, ``audit.sinks.syslog`` …)."""
    return structlog.get_logger(component=component)
