"""JSON encoding for the audit pipeline: orjson when it can, the standard library when it cannot.

Every event is encoded once into the spool and decoded by sinks that need fields, so
this is on the pipeline's hot path (orjson is several times faster than ``json``).
Output is compact, UTF-8, keys in insertion order. Anything orjson refuses — a string
with a lone surrogate, an integer beyond 64 bits, an unexpected type — falls back to
``json.dumps(ensure_ascii=True, default=str)``, which always produces valid ASCII JSON,
so one odd value can never stop the writer.
"""

from __future__ import annotations

import json
from typing import Any

orjson: Any
try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None

__all__ = ["dumps", "dumps_str", "loads"]


def dumps(obj: Any) -> bytes:
    if orjson is not None:
        try:
            encoded: bytes = orjson.dumps(obj)
            return encoded
        except (TypeError, orjson.JSONEncodeError):
            pass
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, default=str).encode("ascii")


def dumps_str(obj: Any) -> str:
    return dumps(obj).decode("utf-8")


def loads(data: str | bytes) -> Any:
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)
