"""Masking function specifications: names, parameters, and how much each one discloses.

A policy names a masking function either as a plain string (``"mobile"``), as a
string with parameters (``"keep(first=3, last=4)"``), or as a TOML inline table
(``{ function = "keep", first = 3, last = 4 }``). All three are parsed here into
a ``MaskSpec`` and validated against ``CATALOGUE`` when the policy loads, so a
typo is a configuration error, never a column that silently passes in clear.

``MaskSpec.canonical`` is the one spelling that ``Treatment.function`` carries
and that ``functions.build_function`` accepts: the name, then the parameters
that differ from their defaults in sorted order, e.g. ``keep(first=3,last=4)``.

``DISCLOSURE`` ranks functions by how much of the value they reveal, so that
"the most permissive of several roles" and "the stricter of lineage and
metadata" are well defined. Lower is stricter.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CATALOGUE",
    "DISCLOSURE",
    "STRONGEST",
    "MaskSpec",
    "ParamSpec",
    "SpecError",
    "parse_spec",
    "spec_from_value",
]

Param = int | str | tuple[float, ...]


class SpecError(ValueError):
    """A masking function specification is not valid; the message says what is expected."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ParamSpec:
    """One parameter of a masking function: its kind, default and allowed range."""

    kind: type[int] | type[str] | type[tuple[float, ...]]
    default: Param
    minimum: int = 0
    maximum: int = 64
    choices: tuple[str, ...] = ()


_AMOUNT_BOUNDS: tuple[float, ...] = (
    0.0,
    1_000.0,
    5_000.0,
    10_000.0,
    50_000.0,
    100_000.0,
    500_000.0,
    1_000_000.0,
    5_000_000.0,
    10_000_000.0,
)
"""Ten amount bands of the kind banks publish for deposits and transactions (lower bounds)."""

CATALOGUE: dict[str, dict[str, ParamSpec]] = {
    "full": {},
    "null": {},
    "keep": {
        "first": ParamSpec(kind=int, default=0),
        "last": ParamSpec(kind=int, default=0),
    },
    "mobile": {},
    "id_card": {
        "first": ParamSpec(kind=int, default=6, maximum=17),
        "last": ParamSpec(kind=int, default=4, maximum=17),
    },
    "bank_card": {
        "first": ParamSpec(kind=int, default=6, maximum=18),
        "last": ParamSpec(kind=int, default=4, maximum=18),
    },
    "chinese_name": {},
    "email": {},
    "address": {},
    "date": {"precision": ParamSpec(kind=str, default="year", choices=("year", "month"))},
    "band": {
        "bounds": ParamSpec(kind=tuple, default=_AMOUNT_BOUNDS, minimum=2, maximum=64),
        "width": ParamSpec(kind=int, default=0, maximum=1 << 62),
    },
    "pseudonym": {
        "key": ParamSpec(kind=str, default=""),
        "algorithm": ParamSpec(kind=str, default="hmac-sha256", choices=("hmac-sha256", "hmac-sm3")),
        "length": ParamSpec(kind=int, default=16, minimum=8, maximum=64),
    },
    "fpe": {
        "key": ParamSpec(kind=str, default=""),
        "alphabet": ParamSpec(kind=str, default="auto", choices=("auto", "digits", "alnum")),
    },
}

# Lower reveals less. "full"/"null" reveal nothing; generalisations reveal a
# coarse value; tokens reveal equality (joins, frequencies); partial masks
# reveal some characters.
DISCLOSURE: dict[str, int] = {
    "null": 0,
    "full": 1,
    "band": 2,
    "date": 2,
    "address": 3,
    "pseudonym": 4,
    "fpe": 4,
    "chinese_name": 5,
    "email": 5,
    "mobile": 6,
    "id_card": 6,
    "bank_card": 6,
    "keep": 6,
}

STRONGEST = "full"
"""The mask for a classified column for which none of the person's roles has a rule."""

_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_KEY_REF = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True, kw_only=True, slots=True)
class MaskSpec:
    """A validated masking function name with all its parameters (defaults filled in)."""

    name: str
    params: tuple[tuple[str, Param], ...] = ()

    def param(self, name: str) -> Param:
        for k, v in self.params:
            if k == name:
                return v
        return CATALOGUE[self.name][name].default

    def int_param(self, name: str) -> int:
        value = self.param(name)
        if not isinstance(value, int):
            raise SpecError(f"parameter {name!r} of masking function {self.name!r} is not a whole number")
        return value

    def str_param(self, name: str) -> str:
        value = self.param(name)
        if not isinstance(value, str):
            raise SpecError(f"parameter {name!r} of masking function {self.name!r} is not a string")
        return value

    def bounds_param(self, name: str) -> tuple[float, ...]:
        value = self.param(name)
        if not isinstance(value, tuple):
            raise SpecError(f"parameter {name!r} of masking function {self.name!r} is not a list of numbers")
        return value

    @property
    def canonical(self) -> str:
        defaults = CATALOGUE[self.name]
        shown = [(k, v) for k, v in self.params if v != defaults[k].default]
        if not shown:
            return self.name
        return f"{self.name}({','.join(f'{k}={_render(v)}' for k, v in shown)})"

    @property
    def key_ref(self) -> str | None:
        """The name of the key in ``[masking] keys`` that a keyed function uses."""
        if "key" in CATALOGUE[self.name]:
            value = self.param("key")
            return value if isinstance(value, str) else None
        return None


def _render(value: Param) -> str:
    if isinstance(value, tuple):
        return "[" + ";".join(_number(v) for v in value) + "]"
    return str(value)


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _convert(fname: str, pname: str, p: ParamSpec, raw: object) -> Param:
    where = f"parameter {pname!r} of masking function {fname!r}"
    if p.kind is int:
        if isinstance(raw, str) and raw.strip().isdigit():
            raw = int(raw.strip())
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise SpecError(f"{where} must be a whole number")
        if not p.minimum <= raw <= p.maximum:
            raise SpecError(f"{where} must be between {p.minimum} and {p.maximum}")
        return raw
    if p.kind is str:
        if not isinstance(raw, str):
            raise SpecError(f"{where} must be a string")
        value = raw.strip()
        if p.choices and value not in p.choices:
            raise SpecError(f"{where} must be one of {', '.join(p.choices)}")
        if pname == "key" and not _KEY_REF.match(value):
            raise SpecError(f"{where} must name a key of [masking] keys (letters, digits, '_', '-', '.')")
        return value
    # a list of numbers: band boundaries
    items: list[object]
    if isinstance(raw, str):
        items = [x for x in raw.strip().strip("[]").replace(";", " ").replace(",", " ").split() if x]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise SpecError(f"{where} must be a list of numbers")
    numbers: list[float] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float | str):
            raise SpecError(f"{where} must be a list of numbers")
        try:
            numbers.append(float(item))
        except ValueError:
            raise SpecError(f"{where} must be a list of numbers") from None
    if not p.minimum <= len(numbers) <= p.maximum:
        raise SpecError(f"{where} must hold between {p.minimum} and {p.maximum} numbers")
    if not all(math.isfinite(n) for n in numbers):
        raise SpecError(f"{where} must hold finite numbers")
    if any(b <= a for a, b in itertools.pairwise(numbers)):
        raise SpecError(f"{where} must be strictly increasing")
    return tuple(numbers)


def _build(name: str, raw_params: Mapping[str, object]) -> MaskSpec:
    if name not in CATALOGUE:
        raise SpecError(f"unknown masking function {name!r}; known: {', '.join(sorted(CATALOGUE))}")
    schema = CATALOGUE[name]
    params: dict[str, Param] = {}
    for pname, raw in raw_params.items():
        if pname not in schema:
            allowed = ", ".join(sorted(schema)) or "none"
            raise SpecError(f"masking function {name!r} has no parameter {pname!r} (parameters: {allowed})")
        params[pname] = _convert(name, pname, schema[pname], raw)
    full = tuple((k, params.get(k, p.default)) for k, p in sorted(schema.items()))
    spec = MaskSpec(name=name, params=full)
    if "key" in schema and not spec.param("key"):
        raise SpecError(f'masking function {name!r} needs key = "<name in [masking] keys>"')
    if name == "band" and spec.param("width") and "bounds" in raw_params:
        raise SpecError("masking function 'band' takes either bounds or width, not both")
    return spec


def parse_spec(text: str) -> MaskSpec:
    """Parse ``name`` or ``name(param=value, ...)``. Raises SpecError."""
    text = text.strip()
    if len(text) > 512:
        raise SpecError("a masking function specification must be shorter than 512 characters")
    name, sep, rest = text.partition("(")
    name = name.strip()
    if not _NAME.match(name):
        raise SpecError(f"{text!r} is not a masking function name")
    raw: dict[str, object] = {}
    if sep:
        if not rest.endswith(")"):
            raise SpecError(f"{text!r}: parameters must end with ')'")
        body = rest[:-1]
        # Band bounds are written in brackets; commas inside brackets are not separators.
        for part in re.split(r",(?![^\[]*\])", body):
            if not part.strip():
                continue
            key, eq, value = part.partition("=")
            if not eq or not _NAME.match(key.strip()):
                raise SpecError(f"{text!r}: parameters must look like name=value")
            raw[key.strip()] = value.strip().strip("'\"")
    return _build(name, raw)


def spec_from_value(value: Any) -> MaskSpec:
    """A masking function from a policy value: a string, or an inline table with ``function``."""
    if isinstance(value, str):
        return parse_spec(value)
    if isinstance(value, Mapping):
        fname = value.get("function")
        if not isinstance(fname, str) or not _NAME.match(fname):
            raise SpecError('an inline table must name the masking function: { function = "keep", ... }')
        return _build(fname, {k: v for k, v in value.items() if k != "function"})
    raise SpecError('expected a masking function name, "clear", "deny" or { function = ..., ... }')
