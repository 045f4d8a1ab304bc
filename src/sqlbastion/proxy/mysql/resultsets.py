"""What ``ResponseRelay`` records and the bookkeeping beside its hot path.

``ResultSummary`` (what a response did, for the audit event and the session
state), ``MetadataShortcut`` (a result's metadata bytes as last received), the
relay's constants and internal states, and ``RelayBookkeeping``: the parts of
the relay that run a handful of times per result, not per row — reading the
packet that ends a result in place, holding column definitions until the mask
plan is known, the state machine that reads and drops the rest of a refused
response, and the row cap's rare paths (the row past the cap; rows held back
for clients that cannot read an ERR after rows). ``results.py`` holds the relay
itself and its hot loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sqlbastion.proxy.mysql.constants import Capability, ServerStatus
from sqlbastion.proxy.mysql.errors import MalformedPacket
from sqlbastion.proxy.mysql.framing import frame_into
from sqlbastion.proxy.mysql.packets import ColumnDefinition, EofPacket, ErrPacket, OkPacket, StmtPrepareOk
from sqlbastion.proxy.session import MaskPlan

ResponseKind = Literal["query", "prepare", "field_list", "fetch", "single"]

MAX_COLUMNS = 4096  # MySQL's own limit on columns in a table or result
MAX_HELD_BYTES = 8 << 20  # column definitions held while a result's mask plan is computed

# Given the columns of one result set and whether its rows are binary, the plan for it.
Planner = Callable[[list[ColumnDefinition], bool], MaskPlan]
# Given the columns and one text row's values: keep the row (True) or drop it.
RowFilter = Callable[[list[ColumnDefinition], list[bytes | None]], bool]

# Internal states.
_FIRST, _PREPARE_PARAMS, _COLDEFS, _COLDEFS_EOF, _ROWS, _DISCARD, _DONE = range(7)

# Flags as plain ints: IntFlag arithmetic costs microseconds per operation on the hot path.
_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_STATE_CHANGED = int(ServerStatus.SESSION_STATE_CHANGED)
_DEPRECATE_EOF = int(Capability.DEPRECATE_EOF)
_SESSION_TRACK = int(Capability.SESSION_TRACK)
PLAN_CACHE_ENTRIES = 8
NO_CAP = 1 << 62  # "no row cap" as an integer, so the hot loop compares without a None test
MAX_HELD_ROW_BYTES = 16 << 20  # rows of a capped binary result held back (``hold_capped_rows``)
# The text of the ERR that takes the place of the row past the person's cap (docs/policy.md, max_rows).
ROW_CAP_MESSAGE = (
    "sqlbastion: result exceeds the row cap of {cap} rows for this person; "
    "exporting larger results needs the export action. Audit ref {ref}."
)


def _lenenc_at(p: bytes, i: int) -> tuple[int, int]:
    """(value, next offset) of an int<lenenc> at ``p[i]``; raises MalformedPacket when short."""
    if i >= len(p):
        raise MalformedPacket("int<lenenc> past the end of the packet")
    b = p[i]
    if b < 0xFB:
        return b, i + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(b)
    if width is None or i + 1 + width > len(p):
        raise MalformedPacket("bad int<lenenc>")
    return int.from_bytes(p[i + 1 : i + 1 + width], "little"), i + 1 + width


def _ok_fields(p: bytes) -> tuple[int, int, int]:
    """(affected_rows, status, warnings) of an OK packet without building an OkPacket."""
    affected, i = _lenenc_at(p, 1)
    _, i = _lenenc_at(p, i)
    if i + 4 > len(p):
        raise MalformedPacket("OK packet too short")
    return affected, p[i] | p[i + 1] << 8, p[i + 2] | p[i + 3] << 8


@dataclass(kw_only=True, slots=True)
class ResultSummary:
    """What happened, for the audit event and the session state."""

    rows: int = 0
    affected: int = 0
    results: int = 0
    masked_values: int = 0
    bytes_out: int = 0
    error: ErrPacket | None = None
    status: int | None = None  # the last status flags the backend reported
    warnings: int = 0
    oks: list[OkPacket] = field(default_factory=list)  # OKs carrying session state changes
    prepare_ok: StmtPrepareOk | None = None
    columns: list[ColumnDefinition] = field(default_factory=list)  # of the last result set
    refused: str | None = None
    capped: bool = False  # the row cap was hit: ``rows`` rows went out, then the cap's ERR


@dataclass(frozen=True, kw_only=True, slots=True)
class MetadataShortcut:
    """A result's metadata bytes exactly as last received, and what they led to.

    When the next response of the same statement (same decision, same session
    state) starts with exactly these bytes, the relay forwards them and goes
    straight to the rows with the same plan: identical column definitions get
    an identical plan, and nothing needs decoding.
    """

    meta: bytes
    first_seq: int
    next_seq: int
    plan: MaskPlan
    types: list[int]
    ncols: int
    state_after: int
    status: int | None


class RelayBookkeeping:
    """The per-result parts of ``ResponseRelay`` (a base without state of its own: the relay's slots)."""

    # The slots this part assigns; the rest are ResponseRelay's.
    __slots__ = (
        "_discard_cols",
        "_discard_phase",
        "_held",
        "_held_count",
        "_held_first_seq",
        "_held_in_order",
        "_held_masked",
        "_held_rows",
        "_hold_seq",
        "_out_seq",
        "_row_hold",
        "_state",
        "new_shortcut",
    )

    kind: ResponseKind
    summary: ResultSummary
    new_shortcut: MetadataShortcut | None
    _state: int
    _deprecate_eof: bool
    _rewrite_ok: bool
    _backend_caps: int
    _out_seq: int
    _plan: MaskPlan | None
    _types: list[int]
    _ncols: int
    _keep_row: RowFilter | None
    _held: bytearray
    _held_first_seq: int
    _held_count: int
    _held_in_order: bool
    _discard_phase: str
    _discard_cols: int
    _cap_text: str
    _row_hold: bytearray | None
    _hold_seq: int
    _held_rows: int
    _held_masked: int

    # ResponseRelay's own, used here.
    def _refuse(self, out: bytearray, text: str, *, phase: str | None = None) -> None:
        raise NotImplementedError

    def _on_row(self, out: bytearray, payload: bytes, raw: bytes | None, seq: int) -> None:
        raise NotImplementedError

    def _emit_payload(self, out: bytearray, payload: bytes) -> None:
        raise NotImplementedError

    def _ends_in_place(self, data: bytes, start: int, end: int) -> bool:
        """Record the 0xFE packet ending a result of unmasked rows, if it goes out unchanged.

        The same bookkeeping as ``_on_row``'s terminator branch, without slicing the
        packet out: an EOF (page_protocol_basic_eof_packet: int<1> 0xFE, int<2>
        warnings, int<2> status_flags), or with CLIENT_DEPRECATE_EOF an OK with the
        0xFE header that needs no rewriting and carries no session-state change.
        Returns False (nothing recorded) when the packet needs the general path.
        """
        summary = self.summary
        if not self._deprecate_eof:
            length = end - start
            summary.warnings = data[start + 1] | data[start + 2] << 8 if length >= 3 else 0
            status = data[start + 3] | data[start + 4] << 8 if length >= 5 else 0
        else:
            if self._rewrite_ok or end - start < 7:
                return False
            affected, status, warnings = _ok_fields(data[start:end])
            if status & _STATE_CHANGED:
                return False
            summary.warnings = warnings
            summary.affected += affected
        summary.status = status
        summary.results += 1
        self._state = _FIRST if status & _MORE_RESULTS and self.kind == "query" else _DONE
        return True

    def _discard(self, payload: bytes) -> None:
        """Read and drop packets until the backend's response ends (a small state machine of its own)."""
        first = payload[0] if payload else -1
        phase = self._discard_phase
        if first == 0xFF and phase != "coldefs":
            self._state = _DONE
            return
        if phase == "eof_after_coldefs":
            if not (first == 0xFE and len(payload) < 9):
                raise MalformedPacket("expected EOF after the column definitions")
            self._discard_phase = "rows"
            if EofPacket.decode(payload).status & _CURSOR_EXISTS:
                self._state = _DONE
            return
        if phase == "rows":
            if first == 0xFE and len(payload) < (0xFFFFFF if self._deprecate_eof else 9):
                more = self._status_of(payload) & _MORE_RESULTS
                if more and self.kind == "query":
                    self._discard_phase = "first"
                else:
                    self._state = _DONE
            return
        if phase == "first":
            if first == 0x00 and len(payload) >= 7:
                ok = OkPacket.decode(payload, self._backend_caps)
                if not ok.status & _MORE_RESULTS:
                    self._state = _DONE
                return
            ncols, _ = _lenenc_at(payload, 0)
            if ncols == 0 or ncols > MAX_COLUMNS:
                raise MalformedPacket(f"column count {ncols}")
            self._discard_phase = "coldefs"
            self._discard_cols = ncols
            return
        # phase == "coldefs"
        self._discard_cols -= 1
        if self._discard_cols <= 0:
            self._discard_phase = "rows" if self._deprecate_eof else "eof_after_coldefs"

    def _status_of(self, payload: bytes) -> int:
        if len(payload) < 9 and not self._deprecate_eof:
            return EofPacket.decode(payload).status
        return OkPacket.decode(payload, self._backend_caps).status

    def _hold(self, payload: bytes, raw: bytes | None, seq: int) -> None:
        """Keep a metadata packet until the result's plan is known (bounded)."""
        if len(self._held) + len(payload) > MAX_HELD_BYTES:
            raise MalformedPacket("result metadata larger than the limit")
        if not self._held:
            self._held_first_seq = seq
            self._held_count = 0
            self._held_in_order = True
        if raw is not None and seq == (self._held_first_seq + self._held_count) & 0xFF:
            self._held += raw
        else:
            self._held_in_order = False
            frame_into(self._held, 0, payload)
        self._held_count += 1

    def _release_held(self, out: bytearray) -> None:
        held = self._held
        if self._held_in_order and self._held_first_seq == self._out_seq:
            # The common case: the held bytes are exactly what came in, numbered as the client expects.
            out += held
            first = self._out_seq
            self._out_seq = (self._out_seq + self._held_count) & 0xFF
            self._held = bytearray()
            if self._plan is not None and self.summary.results == 0 and self._keep_row is None:
                self.new_shortcut = MetadataShortcut(
                    meta=bytes(held),
                    first_seq=first,
                    next_seq=self._out_seq,
                    plan=self._plan,
                    types=self._types,
                    ncols=self._ncols,
                    state_after=_ROWS,
                    status=self.summary.status,
                )
            return
        pos = 0
        while pos < len(held):
            length = held[pos] | held[pos + 1] << 8 | held[pos + 2] << 16
            out += held[pos : pos + 3]
            out.append(self._out_seq)
            out += held[pos + 4 : pos + 4 + length]
            self._out_seq = (self._out_seq + 1) & 0xFF
            pos += 4 + length
        self._held = bytearray()

    def _cap_hit(self, out: bytearray) -> None:
        """The row past the cap: the ERR goes out in its place and the rest of the response is dropped."""
        self.summary.capped = True
        hold = self._row_hold
        self._row_hold = None
        if hold:
            # Held rows never left: the ERR takes the sequence id of the first of them.
            self._out_seq = self._hold_seq
            self.summary.rows -= self._held_rows
            self.summary.masked_values -= self._held_masked
        self._refuse(out, self._cap_text, phase="rows")

    def _held_row(self, out: bytearray, payload: bytes, raw: bytes | None, seq: int) -> None:
        """A packet of a result whose rows are held back (``hold_capped_rows``).

        A row goes to the hold (through ``_on_row``, so masking and counting are the
        same); the packet that ends the result releases the held rows before it; the
        row past the cap drops them (``_cap_hit``). Past MAX_HELD_ROW_BYTES the rows
        are released and the rest of the response streams.
        """
        hold = self._row_hold
        assert hold is not None  # only called while holding
        mark = len(out)
        if not hold:
            self._hold_seq = self._out_seq
            self._held_rows = 0
            self._held_masked = 0
        rows, masked = self.summary.rows, self.summary.masked_values
        self._on_row(out, payload, raw, seq)
        if self._row_hold is None:
            return  # the cap was hit: the held rows were dropped and the ERR is in ``out``
        if self._state == _ROWS:
            hold += out[mark:]
            del out[mark:]
            self._held_rows += self.summary.rows - rows
            self._held_masked += self.summary.masked_values - masked
            if len(hold) > MAX_HELD_ROW_BYTES:
                out += hold
                self._row_hold = None
            return
        if hold and len(out) > mark + 4 and out[mark + 4] == 0xFF:
            # An ERR ends the result instead (the backend's, or a value that cannot be masked):
            # the held rows never leave either, and the ERR takes the first one's sequence id, so
            # it is what the client reads right after the metadata.
            err = bytes(out[mark + 4 :])
            del out[mark:]
            self.summary.rows -= self._held_rows
            self.summary.masked_values -= self._held_masked
            self._out_seq = self._hold_seq
            self._emit_payload(out, err)
            hold.clear()
            return
        # The end of the result: the held rows go out before it.
        out[mark:mark] = hold
        hold.clear()
