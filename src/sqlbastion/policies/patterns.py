"""Object patterns for grants and custom rules: ``backend:part.part…``.

``*`` and ``?`` are wildcards within one part, ``{a,b}`` lists alternatives.
A pattern covers an object path when each of its parts matches the path's part
at that position and the path is at least as long (so a table pattern covers
its columns); trailing ``*`` parts also cover a shorter path (``bank.*`` covers
database ``bank`` itself). Matching folds case on MySQL backends only.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

from sqlbastion.config import ConfigError
from sqlbastion.policies.model import ObjectPattern

_BRACES = re.compile(r"\{([^{}]*)\}")


def _alternatives(part: str) -> tuple[str, ...]:
    m = _BRACES.search(part)
    if m is None:
        return (part,)
    out: list[str] = []
    for alt in m.group(1).split(","):
        out.extend(_alternatives(part[: m.start()] + alt.strip() + part[m.end() :]))
    return tuple(out)


def _split(text: str) -> list[str]:
    """Split on dots outside braces."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_pattern(text: str, *, file: str, key: str) -> ObjectPattern:
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(file, key, f"expected 'backend:database.table[.column]' (or '*'), got {text!r}")
    backend, _, rest = text.partition(":")
    if not backend or not rest:
        raise ConfigError(file, key, f"expected 'backend:database.table[.column]', got {text!r}")
    if rest.count("{") != rest.count("}"):
        raise ConfigError(file, key, f"unbalanced braces in {text!r}")
    parts = _split(rest)
    if len(parts) > 4 or any(not p for p in parts):
        raise ConfigError(file, key, f"at most four non-empty dot-separated parts, got {text!r}")
    return ObjectPattern(text=text, backend=backend, parts=tuple(_alternatives(p) for p in parts))


@lru_cache(maxsize=4096)
def _match_part(alternatives: tuple[str, ...], value: str, fold: bool) -> bool:
    if fold:
        value = value.lower()
        return any(fnmatch.fnmatchcase(value, a.lower()) for a in alternatives)
    return any(fnmatch.fnmatchcase(value, a) for a in alternatives)


def covers(pattern: ObjectPattern, backend: str, path: tuple[str, ...], *, fold: bool) -> bool:
    if not _match_part((pattern.backend,), backend, False):
        return False
    n = len(pattern.parts)
    if len(path) < n:
        # Extra pattern parts must all be plain "*" to cover the shorter path.
        if any(p != ("*",) for p in pattern.parts[len(path) :]):
            return False
        n = len(path)
    return all(_match_part(pattern.parts[i], path[i], fold) for i in range(n))
