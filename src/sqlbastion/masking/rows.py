"""Masked result rows at wire speed: a mask plan compiled into a per-column row program.

The proxies relay a masked result by handing each received chunk's run of row
messages to one call, instead of decoding, masking and re-encoding row by row
in Python:

* ``RowProgram.rewrite_pg`` — PostgreSQL DataRow messages;
* ``RowProgram.rewrite_mysql`` — MySQL text-protocol row packets;
* ``RowProgram.rewrite_mysql_binary`` — MySQL binary-protocol row packets.

Both stop at the first message that is not a plain row (or is incomplete, too
large or malformed) and leave it, unconsumed, to the relay's per-message path.
``masking.rowref`` states the exact semantics; ``sqlbastion._rowfast`` (C) is
used when it is built, the reference otherwise (``SQLBASTION_ROWFAST=0`` forces
the reference).

Strategy: the planner's maskers (``plan._counted``) are registered here with
the ASCII operation their own fast path runs (``functions.AsciiOp``, taken
from the same place as ``MaskFunction.ascii_bytes``) and their tally. A
column whose masker is registered gets that operation done in the compiled
loop, and the masker for every value the operation does not take in place; any
other masker (a binary-format converter, a test's callable) is called for every
value. A masker the program cannot account for is therefore always called:
nothing is ever passed through that the plan masks.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlbastion.logs import get_logger
from sqlbastion.masking import rowref
from sqlbastion.masking.functions import AsciiOp
from sqlbastion.proxy.mysql.constants import FIXED_WIDTH, TEMPORAL_TYPES
from sqlbastion.proxy.session import ColumnMasker, MaskPlan

__all__ = [
    "IMPLEMENTATION",
    "TALLY_FLUSH",
    "RowProgram",
    "binary_layout",
    "compile_columns",
    "program_for",
    "register_masker",
]

log = get_logger("masking.rows")

TEMPORAL = frozenset(int(t) for t in TEMPORAL_TYPES)
TALLY_FLUSH = 256  # values counted before the tally is added to sqlbastion_masked_values_total
MAX_PROGRAMS = 1024  # programs cached per plan object (plans themselves are cached and shared)

_OPS = {
    "full": rowref.OP_FULL,
    "keep": rowref.OP_KEEP,
    "mobile": rowref.OP_MOBILE,
    "keep_digits": rowref.OP_KEEP_DIGITS,
    "email": rowref.OP_EMAIL,
    "name": rowref.OP_NAME,
}


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


_Data = bytes | bytearray | memoryview
_Columns = tuple[rowref.ColumnEntry, ...]
# (data, pos, end, columns, limit, max_length, out) → (pos, rows, masked)
_PgRewrite = Callable[[_Data, int, int, _Columns, int, int, bytearray], tuple[int, int, int]]
# (data, pos, end, columns, limit, seq, eof_limit, out) → (pos, rows, masked, seq)
_MysqlRewrite = Callable[[_Data, int, int, _Columns, int, int, int, bytearray], tuple[int, int, int, int]]
# (data, pos, end, columns, layout, limit, seq, eof_limit, out) → (pos, rows, masked, seq)
_BinaryRewrite = Callable[
    [_Data, int, int, _Columns, tuple[int, ...], int, int, int, bytearray], tuple[int, int, int, int]
]


def _load() -> tuple[str, _PgRewrite, _MysqlRewrite, _BinaryRewrite]:
    if os.environ.get("SQLBASTION_ROWFAST", "1") != "0":
        try:
            from sqlbastion import _rowfast
        except ImportError:
            log.warning("rowfast_missing", detail="masked rows take the slower pure-Python path")
        else:
            if hasattr(_rowfast, "mysql_binary_rewrite"):
                return "c", _rowfast.pg_rewrite, _rowfast.mysql_rewrite, _rowfast.mysql_binary_rewrite
            # Built from older sources: never mix it with this reference; rebuild (scripts/install-deps.sh).
            log.warning("rowfast_stale", detail="masked rows take the pure-Python path")
    return "python", rowref.pg_rewrite, rowref.mysql_rewrite, rowref.mysql_binary_rewrite


IMPLEMENTATION, _pg_rewrite, _mysql_rewrite, _mysql_binary_rewrite = _load()
"""``"c"`` when the compiled extension is in use, ``"python"`` for the reference."""


@dataclass(frozen=True, kw_only=True, slots=True)
class _Registered:
    op: AsciiOp
    tally: list[int]
    counter: Any  # the metric child the tally is added to (prometheus_client has no stubs for it)


# masker → what its fast path does. Weak: the planner's masker caches are bounded and cleared.
_REGISTERED: weakref.WeakKeyDictionary[Callable[..., object], _Registered] = weakref.WeakKeyDictionary()


def register_masker(masker: ColumnMasker, op: AsciiOp, tally: list[int], counter: _Counter) -> None:
    """Declare that ``masker`` applies ``op`` to every all-ASCII value and counts into ``tally``.

    ``tally[0]`` is the masker's running count of masked values, added to
    ``counter`` in batches of ``TALLY_FLUSH`` (``plan._counted``).
    """
    _REGISTERED[masker] = _Registered(op=op, tally=tally, counter=counter)


def _entry(masker: ColumnMasker) -> tuple[rowref.ColumnEntry, _Registered | None]:
    reg = _REGISTERED.get(masker)
    if reg is not None:
        code = _OPS.get(reg.op.kind)
        first, last = reg.op.first, reg.op.last
        if code is not None and 0 <= first <= rowref.MAX_KEEP and 0 <= last <= rowref.MAX_KEEP:
            return (code, first, last, masker, reg.tally), reg
    return (rowref.OP_CALL, 0, 0, masker, None), None


class RowProgram:
    """A mask plan compiled for the row rewriters (one per plan; holds no per-result state)."""

    __slots__ = ("_flush", "columns", "masked_columns")

    def __init__(self, maskers: Sequence[ColumnMasker | None]) -> None:
        entries: list[rowref.ColumnEntry] = []
        flush: list[_Registered] = []
        for m in maskers:
            if m is None:
                entries.append(None)
                continue
            entry, reg = _entry(m)
            entries.append(entry)
            if reg is not None and all(r.tally is not reg.tally for r in flush):
                flush.append(reg)
        self.columns: tuple[rowref.ColumnEntry, ...] = tuple(entries)
        self.masked_columns = sum(e is not None for e in entries)
        self._flush = tuple(flush)

    def _flush_tallies(self) -> None:
        for reg in self._flush:
            n = reg.tally[0]
            if n >= TALLY_FLUSH:
                reg.tally[0] = 0
                reg.counter.inc(n)

    def rewrite_pg(
        self, data: bytes | bytearray, pos: int, end: int, out: bytearray, *, limit: int, max_length: int
    ) -> tuple[int, int, int]:
        """Rewrite the run of complete DataRow messages at ``data[pos:end]`` into ``out``.

        Returns (offset after the last rewritten message, rows, masked values).
        At most ``limit`` rows; a message longer than ``max_length`` ends the run.
        """
        result = _pg_rewrite(data, pos, end, self.columns, limit, max_length, out)
        if self._flush and result[1]:
            self._flush_tallies()
        return result

    def rewrite_mysql(
        self, data: bytes | bytearray, pos: int, end: int, out: bytearray, *, limit: int, seq: int, eof_limit: int
    ) -> tuple[int, int, int, int]:
        """Rewrite the run of complete text row packets at ``data[pos:end]`` into ``out``.

        Returns (offset after the last rewritten packet, rows, masked values, next
        sequence id). Packets must be numbered from ``seq``; a 0xFE payload shorter
        than ``eof_limit`` ends the rows (9, or 0xFFFFFF with CLIENT_DEPRECATE_EOF).
        """
        result = _mysql_rewrite(data, pos, end, self.columns, limit, seq, eof_limit, out)
        if self._flush and result[1]:
            self._flush_tallies()
        return result

    def rewrite_mysql_binary(
        self,
        data: bytes | bytearray,
        pos: int,
        end: int,
        out: bytearray,
        *,
        types: Sequence[int],
        limit: int,
        seq: int,
        eof_limit: int,
    ) -> tuple[int, int, int, int]:
        """``rewrite_mysql`` for binary-protocol rows; ``types`` are the columns' field types."""
        layout = binary_layout(types)
        if len(layout) != len(self.columns):
            return pos, 0, 0, seq  # not this plan's result: the per-row path refuses it
        result = _mysql_binary_rewrite(data, pos, end, self.columns, layout, limit, seq, eof_limit, out)
        if self._flush and result[1]:
            self._flush_tallies()
        return result


_LAYOUTS: dict[tuple[int, ...], tuple[int, ...]] = {}


def binary_layout(types: Sequence[int]) -> tuple[int, ...]:
    """Each column's value layout in a MySQL binary row (``rowref.binary_layout``), cached per type list."""
    key = tuple(types)
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = rowref.binary_layout(key, {int(t): w for t, w in FIXED_WIDTH.items()}, TEMPORAL)
        if len(_LAYOUTS) >= MAX_PROGRAMS:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return layout


def compile_columns(maskers: Sequence[ColumnMasker | None]) -> RowProgram | None:
    """The row program for these per-column maskers; None when nothing is masked (or no columns)."""
    if not maskers or all(m is None for m in maskers) or len(maskers) > rowref.MAX_COLUMNS:
        return None
    return RowProgram(maskers)


# id(plan) → (plan, program): the plan is kept so that its id cannot be reused while cached.
_PROGRAMS: dict[int, tuple[MaskPlan, RowProgram | None]] = {}


def program_for(plan: MaskPlan) -> RowProgram | None:
    """The (cached) row program for a plan's maskers; None for a plan that masks nothing or refuses."""
    hit = _PROGRAMS.get(id(plan))
    if hit is not None and hit[0] is plan:
        return hit[1]
    program = None if plan.refuse is not None else compile_columns(plan.columns)
    if len(_PROGRAMS) >= MAX_PROGRAMS:
        _PROGRAMS.clear()
    _PROGRAMS[id(plan)] = (plan, program)
    return program
