"""Statement text for the audit trail: literals redacted, fail closed.

Rules (docs/audit.md, "Statement text"):

* By default every literal (strings of every flavour, numbers, hex/bit/byte
  strings, dollar-quoted bodies) becomes ``?`` and comments are dropped. The
  text is rebuilt from sqlglot's tokens for the backend's dialect, never by
  regular expressions over SQL.
* If the text cannot be tokenized, no text is kept at all (mode ``withheld``):
  an untokenizable statement could hide a literal anywhere.
* Raw text only when the backend opts in (``raw_statements_in_audit``), the
  statement touched no sensitive column, and it holds no password clause
  (``IDENTIFIED BY``, ``PASSWORD``…) and no configured backend secret.
  Otherwise the redacted text is used.
* MySQL executable comments (``/*! … */``, ``/*!50000 … */``, ``/*M!…*/``) run
  on the server, so their contents are kept (and redacted) rather than dropped
  with the other comments.
* Statements that differ only in their literals are redacted once: a cache keyed
  by the statement's *shape* (``_shape``: simple quoted strings and plain numbers
  replaced by markers, everything else kept as it is) holds the tokenizer's
  output for the first statement of that shape. The output holds no literal at
  all, so reusing it can never reveal another statement's values; shapes are
  only taken where the tokenizer's split cannot depend on the literals' contents
  (no comments, other quotes, backslashes, ``$`` or ``#``).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlglot.dialects import Dialect
from sqlglot.tokenizer_core import Token, TokenType

__all__ = ["RedactedText", "redact_literals", "statement_text"]

TextMode = Literal["redacted", "raw", "withheld", "none"]

# Longest statement text kept in an event; longer ones are cut (and say so).
MAX_TEXT_CHARS = 16384
# Statements longer than this are not tokenized at all (bounded work per event).
MAX_TOKENIZE_CHARS = 1 << 20

_LITERAL_TYPES = frozenset(
    {
        TokenType.STRING,
        TokenType.NUMBER,
        TokenType.NATIONAL_STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.BYTE_STRING,
        TokenType.RAW_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
    }
)
# Words that introduce a credential. Statements holding them never go out raw.
_CREDENTIAL_WORDS = frozenset({"IDENTIFIED", "PASSWORD", "ENCRYPTED", "UNENCRYPTED", "SECRET", "CREDENTIALS"})
# MySQL / MariaDB executable comment openers: their bodies are SQL the server runs.
_EXECUTABLE_COMMENT = re.compile(r"/\*(?:!|M!)\d{0,6}")
_DIALECTS = {"mysql": "mysql", "postgres": "postgres"}


# Identical statement texts (prepared statements, ORMs, pools repeating one query) are
# redacted once: a bounded FIFO cache of short texts.
_CACHE: OrderedDict[tuple[str, str], str] = OrderedDict()
_CACHE_ENTRIES = 4096
_CACHE_MAX_SQL = 4096
_UNTOKENIZABLE = "\x00untokenizable"
# Statements of one shape (the same text but for its literals) share one redaction.
_SHAPES: OrderedDict[tuple[str, str], str] = OrderedDict()
# A shape is only taken when nothing in the text could make the tokenizer split it differently
# depending on a literal's contents; the markers themselves must not occur in the text.
_SHAPE_UNSAFE = ('"', "`", "\\", "#", "$", "\x01", "\x02", "--", "/*")
# The same characters as one pattern: one scan of the text instead of one per marker.
_SHAPE_UNSAFE_RE = re.compile("|".join(re.escape(m) for m in _SHAPE_UNSAFE))
_SHAPE_STRING = re.compile(r"'[^'\\]*'")
# The lookahead first: the lookbehind is then only tried where a digit starts.
_SHAPE_NUMBER = re.compile(r"(?=[0-9])(?<![\w@:$.?])[0-9]+(?:\.[0-9]+)?(?![\w.])", re.ASCII)


@dataclass(frozen=True, kw_only=True, slots=True)
class RedactedText:
    text: str | None
    mode: TextMode


_local = threading.local()


def _tokenize(sql: str, dialect: str) -> list[Token]:
    # Building a tokenizer costs more than tokenizing a short statement, so each
    # thread keeps one per dialect (tokenizers are not shared across threads).
    cache: dict[str, Any] = _local.__dict__.setdefault("tokenizers", {})
    tokenizer = cache.get(dialect)
    if tokenizer is None:
        tokenizer = cache[dialect] = Dialect.get_or_raise(_DIALECTS.get(dialect, dialect)).tokenizer()
    return list(tokenizer.tokenize(sql))


def _expand_executable_comments(sql: str) -> str:
    # Only the opener is dropped; the closing "*/" then stands alone. Each
    # "/*!" opener's own "*/" is removed by pairing them left to right.
    out: list[str] = []
    pos = 0
    while True:
        m = _EXECUTABLE_COMMENT.search(sql, pos)
        if m is None:
            out.append(sql[pos:])
            break
        out.append(sql[pos : m.start()])
        out.append(" ")
        end = sql.find("*/", m.end())
        if end < 0:
            raise ValueError("unterminated executable comment")
        out.append(sql[m.end() : end])
        out.append(" ")
        pos = end + 2
    return "".join(out)


def redact_literals(sql: str, dialect: str) -> str:
    """``sql`` with literals as ``?`` and comments removed. Raises ValueError if it cannot be tokenized."""
    if len(sql) > MAX_TOKENIZE_CHARS:
        raise ValueError("statement too long to tokenize for the audit trail")
    if dialect == "mysql" and "/*" in sql:
        sql = _expand_executable_comments(sql)
    try:
        tokens = _tokenize(sql, dialect)
    except Exception as exc:  # sqlglot raises TokenError and, in its C tokenizer, others
        raise ValueError(f"cannot tokenize: {type(exc).__name__}") from None
    fast = _fast_path(sql, tokens)
    if fast is not None:
        return fast
    parts: list[str] = []
    append = parts.append
    last_end = -1
    previous_type: Any = None
    previous_redacted = False
    literal_types, identifier, parameter, var = _LITERAL_TYPES, TokenType.IDENTIFIER, TokenType.PARAMETER, TokenType.VAR
    for tok in tokens:
        start, end, ttype = tok.start, tok.end, tok.token_type
        raw = sql[start : end + 1]
        if start > last_end + 1 and parts:
            append(" ")
        if ttype in literal_types:
            # PostgreSQL's "$1" is a PARAMETER token followed by its number: a placeholder, not a value.
            keep = previous_type is parameter and start == last_end + 1 and raw.isdigit()
        elif ttype is identifier or ttype is parameter:
            keep = True
        else:
            # Belt and braces: any other token that carries a quote is treated as a literal.
            keep = (
                "'" not in raw
                and ('"' not in raw or ttype is var)
                and not (raw.startswith("$") and not raw[1:].isdigit())
            )
        if keep and previous_redacted and start == last_end + 1 and (raw[:1].isalnum() or raw[:1] == "_"):
            # A word glued to a number is part of it (PostgreSQL 16's 1_000 or 0o17, which the
            # tokenizer splits into a number and a word): redact it with the number.
            keep = False
        if keep:
            append(raw)
        elif not previous_redacted or start != last_end + 1:
            append("?")
        previous_redacted = not keep
        last_end = end
        previous_type = ttype
    return "".join(parts)


# Characters that send a statement down the token-by-token path: comment openers (comments
# are dropped there), "$" (PostgreSQL placeholders and dollar quoting) and quotes, checked in
# the fast path's output.
_SLOW_MARKERS = ("--", "/*", "#", "$")
_GLUED = re.compile(r"\?\w")


def _fast_path(sql: str, tokens: list[Token]) -> str | None:
    """The common case in one pass over the literal tokens only: copy the text between them
    (whitespace and tokens, no comments) and put ``?`` for each. None when the statement
    needs the careful path (comments, ``$``, or a quote left outside a literal)."""
    if any(m in sql for m in _SLOW_MARKERS):
        return None
    literal_types = _LITERAL_TYPES
    spans = [(t.start, t.end) for t in tokens if t.token_type in literal_types]
    parts: list[str] = []
    last = 0
    for start, end in spans:
        parts.append(sql[last:start])
        parts.append("?")
        last = end + 1
    parts.append(sql[last:])
    text = "".join(parts).strip()
    # Belt and braces: a quote that survived is either in an identifier (fine) or a literal the
    # tokenizer did not type as one (not fine), and a word glued to a "?" may be the rest of a
    # number the tokenizer split; the careful path tells them apart.
    if "'" in text or '"' in text or _GLUED.search(text):
        return None
    return text


def _shape(sql: str) -> str | None:
    """The statement with each simple quoted string as ``\\x01`` and each plain number as
    ``\\x02``; None when the text has no literal of that kind or anything that could make
    the tokenizer split it by a literal's contents."""
    if len(sql) > _CACHE_MAX_SQL or _SHAPE_UNSAFE_RE.search(sql):
        return None
    shape = _SHAPE_STRING.sub("\x01", sql)
    if "'" in shape:
        return None  # an unbalanced quote: the careful path decides
    shape = _SHAPE_NUMBER.sub("\x02", shape)
    return shape if shape != sql else None


def _redacted(sql: str, dialect: str) -> str:
    """``redact_literals`` behind the exact-text and shape caches (``_UNTOKENIZABLE`` on failure)."""
    key = (dialect, sql)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    shape = _shape(sql)
    if shape is not None:
        cached = _SHAPES.get((dialect, shape))
        if cached is not None:
            return cached
    try:
        cached = redact_literals(sql, dialect)
    except ValueError:
        cached = _UNTOKENIZABLE
    if shape is not None and cached is not _UNTOKENIZABLE:
        if len(_SHAPES) >= _CACHE_ENTRIES:
            _SHAPES.popitem(last=False)
        _SHAPES[(dialect, shape)] = cached
    elif len(sql) <= _CACHE_MAX_SQL:
        if len(_CACHE) >= _CACHE_ENTRIES:
            _CACHE.popitem(last=False)  # the oldest entry
        _CACHE[key] = cached
    return cached


def _has_credential(sql: str, dialect: str) -> bool:
    try:
        tokens = _tokenize(sql, dialect)
    except Exception:
        return True
    return any(t.text.upper() in _CREDENTIAL_WORDS for t in tokens if t.token_type is not TokenType.STRING)


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"… [{len(text) - MAX_TEXT_CHARS} more characters]"


def statement_text(
    sql: str | None,
    *,
    dialect: str,
    raw_allowed: bool,
    sensitive: bool,
    secrets: Iterable[str] = (),
) -> RedactedText:
    """The statement text an audit event may carry, and how it was produced."""
    if not sql:
        return RedactedText(text=None, mode="none")
    secret_list = [s for s in secrets if s]
    raw_ok = raw_allowed and not sensitive and len(sql) <= MAX_TOKENIZE_CHARS
    if raw_ok and not _has_credential(sql, dialect) and not any(s in sql for s in secret_list):
        return RedactedText(text=_cut(sql), mode="raw")
    cached = _redacted(sql, dialect)
    if cached is _UNTOKENIZABLE:
        return RedactedText(text=None, mode="withheld")
    text = cached
    if secret_list and any(s in text for s in secret_list):
        # A secret used as an identifier or keyword-like word: keep nothing.
        return RedactedText(text=None, mode="withheld")
    return RedactedText(text=_cut(text), mode="redacted")
