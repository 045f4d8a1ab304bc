"""Turning parsed TOML into typed, frozen settings.

Strategy: every settings class is a frozen, keyword-only dataclass whose field
types say what the TOML must hold. ``build(cls, data, path)`` walks the
dataclass fields, converts each value and reports the first problem as a
``ConfigError`` naming the file, the dotted key path and what was expected.
Unknown keys are errors, because a typo'd key that is silently ignored is a
policy that silently does not apply.

Secrets are never literal: a field typed ``SecretRef`` takes ``env:NAME`` or
``file:/path`` and is resolved only when the value is needed, so neither the
settings object nor its repr ever holds the secret itself.
"""

from __future__ import annotations

import dataclasses
import os
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem; the message names the file, the key and the fix."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRef:
    """A reference to a secret (``env:NAME`` or ``file:/path``), never the secret.

    ``str()`` and ``repr()`` show the reference only, so a settings object can be
    logged or printed without leaking anything.
    """

    ref: str

    def __post_init__(self) -> None:
        scheme, _, rest = self.ref.partition(":")
        if scheme not in ("env", "file") or not rest:
            raise ValueError("a secret must be a reference: 'env:NAME' or 'file:/path'")

    def __str__(self) -> str:
        return self.ref

    def reveal(self) -> str:
        """Resolve the reference. Raises ``SecretUnavailable`` naming the reference only."""
        scheme, _, rest = self.ref.partition(":")
        if scheme == "env":
            value = os.environ.get(rest)
            if value is None:
                raise SecretUnavailable(f"environment variable {rest} is not set (secret {self.ref})")
            return value
        try:
            return Path(rest).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretUnavailable(f"cannot read secret file {rest}: {exc.strerror}") from None

    def reveal_bytes(self) -> bytes:
        return self.reveal().encode("utf-8")


class SecretUnavailable(Exception):
    """A secret reference could not be resolved. The message never holds the secret."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"an array of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a table of {_type_name(get_args(tp)[1])}"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if tp is SecretRef:
        return "a secret reference ('env:NAME' or 'file:/path')"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, file: str, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) != len(get_args(tp)):
            return None
        errors: list[ConfigError] = []
        for option in options:
            try:
                return _convert(option, value, file, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(file, key, f"expected {_type_name(tp)}, got {type(value).__name__}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {type(value).__name__}")
        item_type = get_args(tp)[0]
        items = [_convert(item_type, v, file, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {type(value).__name__}")
        vt = get_args(tp)[1]
        return {str(k): _convert(vt, v, file, f"{key}.{k}") for k, v in value.items()}
    if tp is SecretRef:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected {_type_name(tp)}")
        try:
            return SecretRef(value)
        except ValueError:
            # Never echo the value: it may be a pasted password.
            raise ConfigError(
                file, key, "secrets must be references ('env:NAME' or 'file:/path'), not literal values"
            ) from None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table, got {type(value).__name__}")
        return build(tp, value, file=file, prefix=key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected true or false, got {type(value).__name__}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"expected an integer, got {type(value).__name__}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(file, key, f"expected a number, got {type(value).__name__}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected a string, got {type(value).__name__}")
        return value
    if tp is Any:
        return value
    raise ConfigError(file, key, f"unsupported setting type {tp!r}")  # a bug in a settings class


def build(cls: type[T], data: dict[str, Any], *, file: str, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a TOML table, validating every key."""
    assert dataclasses.is_dataclass(cls)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key in data:
        name = raw_key.replace("-", "_")
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, _join(prefix, raw_key), f"unknown key (known keys here: {known})")
    for name, field in fields.items():
        key = _join(prefix, name)
        if name in data:
            raw = data[name]
        elif name.replace("_", "-") in data:
            raw = data[name.replace("_", "-")]
        elif field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
            continue
        else:
            raise ConfigError(file, key, f"required key is missing (expected {_type_name(hints[name])})")
        kwargs[name] = _convert(hints[name], raw, file, key)
    try:
        obj = cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(file, prefix or "(top level)", str(exc)) from None
    return obj


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def describe(obj: Any) -> Any:
    """A JSON-able view of settings, with secrets shown as their references only."""
    if isinstance(obj, SecretRef):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: describe(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if isinstance(obj, dict):
        return {k: describe(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


__all__ = ["ConfigError", "SecretRef", "SecretUnavailable", "build", "describe"]
