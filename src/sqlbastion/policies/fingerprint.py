"""The decision cache's token fingerprint of a plain statement, without lexing it.

Strategy: a statement with new literals (what pgbench, sysbench and
applications send every time) misses the exact-text level of the decision
cache, and its fingerprint — the canonical text with string and numeric
literals replaced — used to come from a token-by-token lexing costing tens of
microseconds. ``fast_fingerprint`` produces the same key with two C-level
regular-expression substitutions and a handful of refusal checks:

* it accepts ASCII text without control characters, ``--`` or ``#`` comments,
  executable or nested ``/* */`` comments, backslashes, double quotes, backticks, dollar quotes, brackets or
  semicolons inside, no ``$``, no prefixed (``E''``, ``N''``, ``X''``, ``U&''``,
  ``_charset''``) or adjacent literals, no unterminated literal, no number
  token the simple number rule below would cut differently, bounded length;
* plain ``/* */`` comments (SQL commenter tags, application names) become one
  space, as in the lexer. They are found by one left-to-right scan that also
  steps over ``'...'`` literals; where that scan and the server's reading could
  part (a backslash, a double quote, a backtick, ``--``, ``#``, ``$``, a nested
  or executable comment), the character that makes them part is outside every
  comment the scan removed, so the refusals below still see it;
* within that subset every ``'`` opens or closes a literal (nothing else can
  hold one), so one left-to-right substitution of ``'(?:[^']|'')*'`` cuts the
  literals exactly where the lexer does; and a number token starts exactly at a
  digit whose preceding character cannot
  continue a word or a number, which the lookbehind below states once the
  refusals have removed the ``.``-digit cases where that is not so.

Anything else returns ``None`` and the caller lexes in full; a differential
test (tests/unit/policies/test_fingerprint.py) checks over the corpus and
generated statements that a key, whenever one is produced, equals the full
path's fingerprint. Equal keys are all the cache needs: decisions that depend
on a literal's value are stored at their fingerprint as "decide by exact text
only" markers, as before.
"""

from __future__ import annotations

import re

from sqlbastion.policies.lexer import MAX_PAREN_DEPTH

__all__ = ["MAX_FAST_CHARS", "fast_fingerprint"]

# Longer statements take the full lexer (their cost is dominated elsewhere, and
# the bound keeps the scan's work per message small and predictable).
MAX_FAST_CHARS = 8192
MAX_FAST_COMMENTS = 8

# Characters that make the lexer's fast path refuse, plus control characters other
# than tab/newline/carriage return (so Python's whitespace and the servers' agree),
# every "$" (PostgreSQL parameters come with fixed text, which the exact-text level
# serves), "?" (a parameter marker is fingerprinted apart from a number: lexer.PARAMETER_MARK)
# and brackets. Non-ASCII is refused by ``str.isascii`` first.
_REFUSE_CHAR = re.compile(r"[\\\"`#;{}\[\]$?\x00-\x08\x0b-\x1f\x7f]")
# A "." followed by a digit where the number rule below would not cut as the lexer
# does: after something that is not a digit (".5", "a.5") or after digits that
# continue a word or another number ("a1.5", "1.5.6"). Decimals such as "12.5" pass.
_DOT_DIGIT = re.compile(r"\.[0-9]")
_BAD_DOT_DIGIT = re.compile(r"[^0-9]\.[0-9]|[A-Za-z_.][0-9]+\.[0-9]")
_STRING = re.compile(r"'(?:[^']|'')*'")
_STRING_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|/\*(.*?)\*/", re.DOTALL)
# A literal the servers would read with a prefix or join to the next one.
_PREFIXED = re.compile(r"[A-Za-z0-9_&.]'\?'")
_ADJACENT = re.compile(r"'\?'[ \t\n\r]*'")
# A plain number token ([0-9]+ with an optional fraction, the lexer's _PLAIN_NUMBER),
# standing alone: not inside a word or a longer number token on either side. The
# lookbehind follows the first digit so that the scan can skip to digits quickly.
_NUMBER = re.compile(r"[0-9](?<![A-Za-z0-9_$.][0-9])[0-9]*(?:\.[0-9]*)?(?![A-Za-z0-9_$.])")


def fast_fingerprint(sql: str) -> str | None:
    """The fingerprint ``lex`` would give this one-statement message, or None when unsure.

    None means only "take the full lexer"; it never says anything about the statement.
    The text it accepts holds nothing the lexer state (dialect, ``sql_mode``,
    ``standard_conforming_strings``) changes: no backslash, double quote, backtick or
    "$"; the state is part of the cache key all the same.
    """
    if len(sql) > MAX_FAST_CHARS or not sql.isascii():
        return None
    if "/*" in sql and ("*/" not in sql or sql.count("/*") > MAX_FAST_COMMENTS):
        return None  # each "/*" may scan to the end of the text: bound how many there are
    uncommented = _without_comments(sql) if "/*" in sql else sql
    if uncommented is None:
        return None
    text = uncommented.strip()
    if text.endswith(";"):
        text = text[:-1].rstrip()
    if not text or text[0] == "." or _REFUSE_CHAR.search(text) or "--" in text or "/*" in text:
        return None
    if text.count("(") > MAX_PAREN_DEPTH:  # the lexer's depth check: let it decide
        return None
    if "." in text and _DOT_DIGIT.search(text) and _BAD_DOT_DIGIT.search(text):
        return None
    if "'" in text:
        text, literals = _STRING.subn("'?'", text)
        if text.count("'") != 2 * literals or _PREFIXED.search(text) or _ADJACENT.search(text):
            return None
    return _NUMBER.sub("?", text)


class _Declined(Exception):
    """A comment the fast scan does not read (executable, nested)."""


def _comment_to_space(m: re.Match[str]) -> str:
    body = m.group(1)
    if body is None:
        return m.group(0)  # a literal: kept for the steps after
    if body.startswith(("!", "M!")) or "/*" in body or body.endswith("/"):
        # MySQL/MariaDB executable comments run their content; PostgreSQL comments nest
        # (a "/" before the closing "*/" opens a nested comment there: "/*/*/").
        raise _Declined
    return " "


def _without_comments(text: str) -> str | None:
    """``text`` with each plain block comment replaced by one space, or None."""
    try:
        return _STRING_OR_COMMENT.sub(_comment_to_space, text)
    except _Declined:
        return None
