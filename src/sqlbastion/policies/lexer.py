"""Server-faithful lexing before sqlglot sees a statement.

Strategy: sqlglot is a lenient transpiler whose tokenizer does not follow the
servers' lexical rules in every corner (it drops MySQL executable comments,
treats a backslash in a PostgreSQL string as an escape, knows nothing of
``sql_mode`` or ``standard_conforming_strings``). So this module lexes each
client message the way *the server* will, under the session's current lexer
state, and re-emits a canonical text that sqlglot reads unambiguously:

* comments become one space; MySQL executable comments (``/*! */``,
  ``/*!NNNNN */``, ``/*M! */``, ``/*M!NNNNNN */``) are expanded — their content
  is analysed as if it ran, even when the server's version would skip it
  (stricter, never looser);
* string literals are decoded with the server's rules (backslash escapes or
  not, ``E''``, ``U&''``, dollar quotes, adjacent-literal continuation) and
  re-emitted in one plain form;
* quoted identifiers are decoded (``U&""``, ANSI_QUOTES) and re-emitted with the
  dialect's own identifier quote;
* MySQL ``--`` not followed by whitespace is two minus signs, as the server reads it;
* the message is split into statements at top-level semicolons.

Anything this lexer cannot read with certainty (an unterminated literal, a
nested executable comment, NUL outside a literal, a parenthesis depth over the
limit) raises ``LexError``, which the analyser turns into a block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlbastion.policies.model import Dialect

__all__ = ["LexError", "LexedStatement", "LexerState", "lex"]

MAX_PAREN_DEPTH = 128
# A parameter marker's piece of the fingerprint: NUL never reaches the fingerprint from
# the text (the lexer refuses it), so no literal or operator can produce the same piece.
PARAMETER_MARK = "\x00?"
# The highest five-digit executable-comment version every supported server runs.
ALWAYS_RUN_VERSION = 50700
_PLAIN_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?")


class LexError(Exception):
    """The message cannot be lexed with certainty. ``code`` names the reason for the rule hit."""

    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


@dataclass(frozen=True, kw_only=True, slots=True)
class LexerState:
    """The session settings that change how the server reads characters."""

    dialect: Dialect
    ansi_quotes: bool = False  # MySQL sql_mode ANSI_QUOTES: "x" is an identifier
    no_backslash_escapes: bool = False  # MySQL sql_mode NO_BACKSLASH_ESCAPES
    standard_conforming_strings: bool = True  # PostgreSQL: backslash is literal in ''
    # Read versioned (/*!NNNNN */) and MariaDB-only (/*M! */) comments as plain comments:
    # the reading of a server whose version skips them (analyze compares both readings).
    skip_versioned: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class LexedStatement:
    """One statement: its canonical text for sqlglot and its leading keywords (upper case)."""

    text: str
    head: tuple[str, ...]
    words: frozenset[str]  # every unquoted word, upper case (keyword facts for unparsable statements)
    had_executable_comment: bool = False
    # Holds a versioned or MariaDB-only executable comment: the server's version decides
    # whether its content runs, so the statement has two readings.
    had_versioned_comment: bool = False
    # The canonical text with string and numeric literals replaced by '?' / ?:
    # the decision cache's token fingerprint. Identifiers and keywords stay.
    fingerprint: str = ""
    source: str = ""  # the statement's original text (comments included), for tools that show it


_WS = " \t\n\r\f\v"
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789$")
_MYSQL_ESCAPES = {"0": "\0", "'": "'", '"': '"', "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "\\": "\\"}
_PG_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _is_ident_char(ch: str) -> bool:
    return ch in _IDENT_CHARS or ord(ch) > 127


class _Lexer:
    def __init__(self, sql: str, state: LexerState) -> None:
        self.s = sql
        self.n = len(sql)
        self.st = state
        self.mysql = state.dialect == "mysql"
        self.out: list[str] = []
        self.statements: list[LexedStatement] = []
        self.words: list[str] = []
        self.depth = 0
        self.in_exec_comment = False
        self.had_exec = False
        self.had_versioned = False
        self.literal_at: dict[int, str] = {}  # index in ``out`` → fingerprint placeholder
        self.exec_plain_end = -1  # where a skipped versioned executable comment would end
        self.stmt_start = 0
        self.last_plain_string: tuple[int, str] | None = None  # MySQL adjacent-literal joining

    # -- output ---------------------------------------------------------------

    def _emit_string(self, value: str) -> None:
        self.literal_at[len(self.out)] = "'?'"
        if self.mysql:
            # sqlglot's MySQL tokenizer treats backslash as an escape: double it.
            self.out.append("'" + value.replace("\\", "\\\\").replace("'", "''") + "'")
        else:
            self.out.append("'" + value.replace("'", "''") + "'")

    def _emit_ident(self, name: str) -> None:
        if "\0" in name:
            raise LexError("lexer", "an identifier contains a NUL character")
        if self.mysql:
            self.out.append("`" + name.replace("`", "``") + "`")
        else:
            self.out.append('"' + name.replace('"', '""') + '"')

    def _end_statement(self, end: int) -> None:
        start, self.stmt_start = self.stmt_start, end + 1
        text = "".join(self.out).strip()
        if text:
            head = tuple(self.words[:6])
            lit = self.literal_at
            fp = "".join(lit.get(i, piece) for i, piece in enumerate(self.out)).strip() if lit else text
            self.statements.append(
                LexedStatement(
                    text=text,
                    head=head,
                    words=frozenset(self.words),
                    had_executable_comment=self.had_exec,
                    had_versioned_comment=self.had_versioned,
                    fingerprint=fp,
                    source=self.s[start:end].strip(),
                )
            )
        self.literal_at = {}
        self.last_plain_string = None
        self.out = []
        self.words = []
        self.depth = 0
        self.had_exec = False
        self.had_versioned = False

    # -- main loop ------------------------------------------------------------

    def run(self) -> list[LexedStatement]:
        s, n = self.s, self.n
        i = 0
        while i < n:
            ch = s[i]
            nxt = s[i + 1] if i + 1 < n else ""
            if ch == "\0":
                raise LexError("lexer", "a NUL character outside a literal")
            if ch == ";":
                if self.in_exec_comment:
                    raise LexError("lexer", "a statement separator inside an executable comment")
                self._end_statement(i)
                i += 1
            elif ch == "/" and nxt == "*":
                i = self._block_comment(i)
            elif self.in_exec_comment and ch == "*" and nxt == "/":
                if self.exec_plain_end >= 0 and i != self.exec_plain_end:
                    raise LexError("lexer", "an executable comment whose end depends on the server version")
                self.in_exec_comment = False
                self.out.append(" ")
                i += 2
            elif ch == "-" and nxt == "-":
                if self.mysql and not (i + 2 >= n or s[i + 2] in _WS or ord(s[i + 2]) < 32):
                    # MySQL: "--" starts a comment only when followed by whitespace or a
                    # control character; otherwise it is two minus signs.
                    self.out.append("- -")
                    i += 2
                else:
                    i = self._line_comment(i)
            elif ch == "#" and self.mysql:
                i = self._line_comment(i)
            elif ch == "'":
                i = self._string(i + 1, "'", backslash=self._plain_backslash())
            elif ch == '"':
                if self.mysql and not self.st.ansi_quotes:
                    i = self._string(i + 1, '"', backslash=not self.st.no_backslash_escapes)
                else:
                    name, i = self._quoted(i + 1, '"')
                    self._emit_ident(name)
            elif ch == "`" and self.mysql:
                name, i = self._quoted(i + 1, "`")
                self._emit_ident(name)
            elif ch == "$" and not self.mysql and (nxt == "$" or nxt in _IDENT_START or ord(nxt or "a") > 127):
                i = self._dollar(i)
            elif ch in _IDENT_START or ord(ch) > 127 or (ch == "$" and self.mysql):
                i = self._word(i)
            elif ch.isdigit():
                j = i
                while j < n and (_is_ident_char(s[j]) or s[j] == "."):
                    j += 1
                token = s[i:j]
                if _PLAIN_NUMBER.fullmatch(token):
                    self.literal_at[len(self.out)] = "?"
                self.out.append(token)
                i = j
            elif ch in "([":
                self.depth += 1
                if self.depth > MAX_PAREN_DEPTH:
                    raise LexError("depth", f"nesting deeper than {MAX_PAREN_DEPTH} levels")
                self.out.append(ch)
                i += 1
            elif ch in ")]":
                self.depth -= 1
                self.out.append(ch)
                i += 1
            else:
                if ch == "?":
                    # A parameter marker (MySQL "?"; PostgreSQL's jsonb operator) is not a
                    # number: "col = ?" and "col = 138" must not share a fingerprint.
                    self.literal_at[len(self.out)] = PARAMETER_MARK
                self.out.append(ch)
                i += 1
        if self.in_exec_comment:
            raise LexError("lexer", "an unterminated executable comment")
        self._end_statement(n)
        return self.statements

    def _plain_backslash(self) -> bool:
        if self.mysql:
            return not self.st.no_backslash_escapes
        return not self.st.standard_conforming_strings

    # -- pieces ---------------------------------------------------------------

    def _line_comment(self, i: int) -> int:
        j = self.s.find("\n", i)
        self.out.append(" ")
        if j < 0:
            if self.in_exec_comment:
                raise LexError("lexer", "a line comment swallows the end of an executable comment")
            return self.n
        if self.in_exec_comment and "*/" in self.s[i:j]:
            # The server ends the line comment at the newline, so the "*/" inside
            # is commented out; sqlglot-era tools disagree. Refuse the ambiguity.
            raise LexError("lexer", "an executable comment's end inside a line comment")
        return j + 1

    def _block_comment(self, i: int) -> int:
        s = self.s
        if self.mysql:
            j = i + 2
            if (j < self.n and s[j] == "!") or s.startswith("M!", j):
                if self.in_exec_comment:
                    raise LexError("lexer", "a nested executable comment")
                mariadb_only = s[j] == "M"
                j += 2 if mariadb_only else 1
                k = j
                while k < self.n and s[k].isdigit():
                    k += 1
                if k - j not in (0, 5, 6):
                    # The servers read 5 or 6 version digits; any other count is read differently by each.
                    raise LexError("lexer", "an executable comment with an ambiguous version number")
                versioned = k > j or mariadb_only
                # Every server the proxy supports (MySQL 5.7+, MariaDB 10+) runs a five-digit
                # version up to ALWAYS_RUN_VERSION: mysqldump's /*!40101 … */ has one reading.
                conditional = mariadb_only or (k > j and not (k - j == 5 and int(s[j:k]) <= ALWAYS_RUN_VERSION))
                if conditional and self.st.skip_versioned:
                    end = s.find("*/", k)
                    if end < 0:
                        raise LexError("lexer", "an unterminated executable comment")
                    self.out.append(" ")
                    return end + 2
                self.in_exec_comment = True
                self.had_exec = True
                self.had_versioned = self.had_versioned or conditional
                # A versioned (or MariaDB-only) comment is a plain comment on servers that skip it,
                # and a plain comment ends at the first "*/" whatever it holds: both readings must
                # end at the same place, so nothing inside may swallow that "*/".
                self.exec_plain_end = s.find("*/", k) if versioned else -1
                self.out.append(" ")
                return k
            if self.in_exec_comment:
                raise LexError("lexer", "a comment inside an executable comment")
            end = s.find("*/", i + 2)
            if end < 0:
                raise LexError("lexer", "an unterminated comment")
            self.out.append(" ")
            return end + 2
        # PostgreSQL block comments nest.
        depth = 0
        j = i
        while j < self.n:
            if s.startswith("/*", j):
                depth += 1
                j += 2
            elif s.startswith("*/", j):
                depth -= 1
                j += 2
                if depth == 0:
                    self.out.append(" ")
                    return j
            else:
                j += 1
        raise LexError("lexer", "an unterminated comment")

    def _string(self, i: int, quote: str, *, backslash: bool, pg_e: bool = False, prefixed: bool = False) -> int:
        """Read a string body starting after its opening quote; emits it; returns the index after it."""
        s, n = self.s, self.n
        parts: list[str] = []
        while True:
            j = i
            while True:
                if j >= n:
                    raise LexError("lexer", "an unterminated string literal")
                c = s[j]
                if c == quote:
                    if j + 1 < n and s[j + 1] == quote:
                        parts.append(quote)
                        j += 2
                        continue
                    j += 1
                    break
                if c == "\\" and backslash:
                    if j + 1 >= n:
                        raise LexError("lexer", "an unterminated string literal")
                    j = self._escape(j + 1, parts, pg_e=pg_e)
                    continue
                parts.append(c)
                j += 1
            i = j
            if self.mysql:
                # MySQL concatenates adjacent literals ('a' 'b') — sqlglot reads the
                # second as an alias, so merge them here.
                k = i
                while k < n and s[k] in _WS:
                    k += 1
                if k < n and s[k] == quote:
                    i = k + 1
                    continue
                break
            # PostgreSQL (scan.l quotecontinue): the next literal continues this one
            # when what lies between holds a newline and only whitespace and
            # "--" comments (not /* */ comments).
            quote_at = _pg_continuation(s, i)
            if quote_at is not None:
                i = quote_at + 1
                continue
            break
        value = "".join(parts)
        last = self.last_plain_string
        if (
            self.mysql
            and not prefixed
            and last is not None
            and last[0] < len(self.out)
            and all(not p or p.isspace() for p in self.out[last[0] + 1 :])
        ):
            # MySQL joins adjacent literals across any whitespace, comments and
            # executable-comment boundaries included ('a' /*! 'b' */ is 'ab').
            value = last[1] + value
            del self.out[last[0] :]
            self.literal_at.pop(last[0], None)
        self._emit_string(value)
        self.last_plain_string = (len(self.out) - 1, value) if not prefixed else None
        return i

    def _escape(self, j: int, parts: list[str], *, pg_e: bool) -> int:
        s = self.s
        c = s[j]
        if self.mysql:
            # MySQL: \% and \_ keep the backslash (LIKE patterns); others map or drop it.
            if c in "%_":
                parts.append("\\" + c)
            else:
                parts.append(_MYSQL_ESCAPES.get(c, c))
            return j + 1
        if c in _PG_ESCAPES:
            parts.append(_PG_ESCAPES[c])
            return j + 1
        if c in "01234567":
            k = j
            while k < len(s) and k - j < 3 and s[k] in "01234567":
                k += 1
            parts.append(chr(int(s[j:k], 8) & 0xFF))
            return k
        if c == "x":
            k = j + 1
            while k < len(s) and k - j <= 2 and s[k] in "0123456789abcdefABCDEF":
                k += 1
            if k == j + 1:
                parts.append("x")
                return k
            parts.append(chr(int(s[j + 1 : k], 16)))
            return k
        if c in "uU":
            width = 4 if c == "u" else 8
            digits = s[j + 1 : j + 1 + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise LexError("lexer", "an invalid Unicode escape in a string")
            parts.append(_chr(int(digits, 16)))
            return j + 1 + width
        parts.append(c)
        return j + 1

    def _quoted(self, i: int, quote: str) -> tuple[str, int]:
        s = self.s
        parts: list[str] = []
        while True:
            k = s.find(quote, i)
            if k < 0:
                raise LexError("lexer", "an unterminated quoted identifier")
            parts.append(s[i:k])
            if k + 1 < self.n and s[k + 1] == quote:
                parts.append(quote)
                i = k + 2
                continue
            return "".join(parts), k + 1

    def _dollar(self, i: int) -> int:
        s = self.s
        j = i + 1
        while j < self.n and s[j] != "$" and _is_ident_char(s[j]):
            j += 1
        if j >= self.n or s[j] != "$":
            # "$1" parameters and the like.
            self.out.append("$")
            return i + 1
        tag = s[i : j + 1]
        end = s.find(tag, j + 1)
        if end < 0:
            raise LexError("lexer", "an unterminated dollar-quoted string")
        self._emit_string(s[j + 1 : end])
        return end + len(tag)

    def _word(self, i: int) -> int:
        s, n = self.s, self.n
        j = i
        while j < n and _is_ident_char(s[j]):
            j += 1
        word = s[i:j]
        upper = word.upper()
        nxt = s[j] if j < n else ""
        if nxt == "'":
            if not self.mysql and upper == "E":
                return self._string(j + 1, "'", backslash=True, pg_e=True)
            if upper == "N":
                return self._string(j + 1, "'", backslash=self._plain_backslash())
            if upper in ("X", "B") or (self.mysql and word.startswith("_")):
                # Hex/bit literals and MySQL charset introducers: sqlglot reads the
                # prefix itself; the body is re-emitted in canonical form.
                self.out.append(word)
                return self._string(j + 1, "'", backslash=self._plain_backslash(), prefixed=True)
        if not self.mysql and upper == "U" and nxt == "&" and j + 1 < n and s[j + 1] in "'\"":
            return self._unicode_escaped(j + 1)
        if not word.isascii() and any(not c.isascii() and not c.isalnum() for c in word):
            # The servers take every non-ASCII character into an unquoted identifier
            # (MySQL U+0080-U+FFFF, PostgreSQL any high-bit byte); sqlglot may read
            # some (NBSP, zero-width space) as whitespace. Quote it so both agree.
            folded = word if self.mysql else "".join(c.lower() if c.isascii() else c for c in word)
            self._emit_ident(folded)
            return j
        self.words.append(upper)
        self.out.append(word)
        return j

    def _unicode_escaped(self, j: int) -> int:
        """PostgreSQL U&'...' / U&"..." with an optional UESCAPE clause."""
        s = self.s
        quote = s[j]
        raw, i = self._quoted(j + 1, quote)
        escape = "\\"
        k = i
        while k < self.n and s[k] in _WS:
            k += 1
        if s[k : k + 7].upper() == "UESCAPE":
            m = k + 7
            while m < self.n and s[m] in _WS:
                m += 1
            if m + 2 < self.n and s[m] == "'" and s[m + 2] == "'":
                escape = s[m + 1]
                i = m + 3
            else:
                raise LexError("lexer", "a malformed UESCAPE clause")
        value = _decode_unicode_escapes(raw, escape)
        if quote == "'":
            self._emit_string(value)
        else:
            self._emit_ident(value)
        return i


def _pg_continuation(s: str, i: int) -> int | None:
    """Index of the quote that continues the literal ending at ``i``, or None."""
    n = len(s)
    k = i
    newline = False
    while k < n:
        c = s[k]
        if c in " \t\f\v":
            k += 1
        elif c in "\n\r":
            newline = True
            k += 1
        elif s.startswith("--", k):
            while k < n and s[k] not in "\n\r":
                k += 1
        else:
            break
    if newline and k < n and s[k] == "'":
        return k
    return None


def _chr(code: int) -> str:
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise LexError("lexer", "an invalid Unicode escape")
    return chr(code)


def _decode_unicode_escapes(raw: str, esc: str) -> str:
    out: list[str] = []
    i = 0
    hexd = "0123456789abcdefABCDEF"
    while i < len(raw):
        c = raw[i]
        if c != esc:
            out.append(c)
            i += 1
            continue
        if raw[i + 1 : i + 2] == esc:
            out.append(esc)
            i += 2
        elif raw[i + 1 : i + 2] == "+" and len(raw) >= i + 8 and all(d in hexd for d in raw[i + 2 : i + 8]):
            out.append(_chr(int(raw[i + 2 : i + 8], 16)))
            i += 8
        elif len(raw) >= i + 5 and all(d in hexd for d in raw[i + 1 : i + 5]):
            out.append(_chr(int(raw[i + 1 : i + 5], 16)))
            i += 5
        else:
            raise LexError("lexer", "an invalid Unicode escape")
    return "".join(out)


def lex(sql: str, state: LexerState) -> list[LexedStatement]:
    """Split ``sql`` into canonical statements as the server would read them. Raises LexError."""
    fast = _plain_statement(sql, state)
    if fast is not None:
        return fast
    return _Lexer(sql, state).run()


# -- fast path ------------------------------------------------------------------------
#
# Most statements hold nothing the servers and sqlglot could read differently:
# ASCII only, no comments, no backslashes, no double quotes or backticks, no
# dollar quotes, no prefixed or adjacent literals, at most one trailing ";".
# For those the canonical text is the text itself and one regular expression
# finds the words and literals; anything else takes the full lexer above. The
# two agree exactly on such statements (tests compare them).

_FAST_REFUSE = re.compile(r"[\\\"`#\x00;{}?]|--|/\*|\$(?!\d)|[^\x00-\x7f]")
# One pass: a literal, a word, a number (with an optional PostgreSQL "$" before it,
# running on into letters and dots exactly as the full lexer's number token does),
# or a run of anything else.
_FAST_TOKEN = re.compile(
    r"('(?:[^']|'')*')|([A-Za-z_][A-Za-z0-9_$]*)|(\$?[0-9][A-Za-z0-9_$.]*)|([^'A-Za-z_0-9$]+|[$'])"
)


def _paren_depth(text: str) -> int:
    """The deepest parenthesis nesting (parentheses inside literals count too: an over-estimate)."""
    depth = deepest = 0
    for p in _PARENS.findall(text):
        depth += 1 if p == "(" else -1
        deepest = max(deepest, depth)
    return deepest


_PARENS = re.compile(r"[()]")


def _plain_statement(sql: str, state: LexerState) -> list[LexedStatement] | None:
    text = sql.strip()
    if text.endswith(";"):
        text = text[:-1].rstrip()
    if not text or _FAST_REFUSE.search(text) or "[" in text:
        return None
    if text.count("(") > MAX_PAREN_DEPTH and _paren_depth(text) > MAX_PAREN_DEPTH:
        return None
    if state.dialect == "mysql" and "$" in text:  # MySQL words may start with "$"
        return None
    words: list[str] = []
    pieces: list[str] = []
    previous = ""  # the previous token's group: "s", "w", "n" or "o"
    string_then_space = False  # a literal followed so far only by whitespace
    for s, w, n, o in _FAST_TOKEN.findall(text):
        if s:
            if previous in ("w", "n") or (previous == "o" and pieces[-1].endswith("&")) or string_then_space:
                return None  # E'', N'', X'', U&'', _charset'', or adjacent literals the servers join
            pieces.append("'?'")
            previous, string_then_space = "s", True
        elif w:
            words.append(w.upper())
            pieces.append(w)
            previous, string_then_space = "w", False
        elif n:
            if n[0] == "$":
                pieces.append("$?" if _PLAIN_NUMBER.fullmatch(n, 1) else n)
            else:
                pieces.append("?" if _PLAIN_NUMBER.fullmatch(n) else n)
            previous, string_then_space = "n", False
        else:
            if o == "'":
                return None  # an unterminated literal
            pieces.append(o)
            string_then_space = string_then_space and o.isspace()
            previous = "o"
    fingerprint = "".join(pieces)
    return [
        LexedStatement(
            text=text,
            head=tuple(words[:6]),
            words=frozenset(words),
            fingerprint=fingerprint,
            source=text,
        )
    ]


@dataclass(frozen=True, slots=True)
class Token:
    """A token of canonical text (as ``lex`` emits it): kind word, string, ident, number, punct."""

    kind: str
    text: str
    start: int
    end: int  # exclusive

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text


def tokens(text: str, *, mysql: bool) -> list[Token]:
    """Split canonical text into tokens, for keyword-level handling of statements sqlglot does not model.

    Canonical text has no comments, plain '...' strings (with '' doubling, and
    doubled backslashes on MySQL) and quoted identifiers, so this is exact.
    """
    out: list[Token] = []
    i, n = 0, len(text)
    ident_quote = "`" if mysql else '"'
    while i < n:
        ch = text[i]
        if ch in _WS:
            i += 1
            continue
        start = i
        if ch == "'":
            i += 1
            while i < n:
                if mysql and text[i] == "\\":
                    i += 2
                    continue
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            out.append(Token("string", text[start + 1 : i - 1].replace("''", "'"), start, i))
        elif ch == ident_quote:
            i += 1
            while i < n:
                if text[i] == ident_quote:
                    if i + 1 < n and text[i + 1] == ident_quote:
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            out.append(Token("ident", text[start + 1 : i - 1].replace(ident_quote * 2, ident_quote), start, i))
        elif ch in _IDENT_START or ord(ch) > 127:
            while i < n and _is_ident_char(text[i]):
                i += 1
            out.append(Token("word", text[start:i], start, i))
        elif ch.isdigit():
            while i < n and (_is_ident_char(text[i]) or text[i] == "."):
                i += 1
            out.append(Token("number", text[start:i], start, i))
        else:
            i += 1
            out.append(Token("punct", ch, start, i))
    return out
