"""Following one command's response from the backend and relaying it to the client.

Strategy (DESIGN.md decision 2, "fast path first"): ``ResponseRelay`` is
sans-IO. ``feed(bytes)`` returns the bytes to write to the client. Packet
headers are always walked, because the proxy must know where the response
ends; payloads are only decoded where they matter:

* the first packet (OK / ERR / column count), column definitions, and the
  EOF/OK packets that end a result — a handful per result;
* rows only when the result's ``MaskPlan`` masks a column. Otherwise runs of
  row packets go out as one slice of the bytes that came in.

Column definitions are held (bounded) until the plan for the result is known,
because a refused result must not reach the client at all: it is replaced by
one ERR packet and the rest of the backend's response is read and dropped.

Responses (page_protocol_command_phase and the pages it links):
``query``: COM_QUERY / COM_STMT_EXECUTE — OK, ERR, or result sets, repeated
while SERVER_MORE_RESULTS_EXISTS is set; ``prepare``: COM_STMT_PREPARE_OK with
parameter and column definitions; ``field_list``: column definitions then EOF;
``fetch``: COM_STMT_FETCH rows then EOF; ``single``: one packet of any kind
(COM_PING, COM_INIT_DB, COM_STMT_RESET, COM_SET_OPTION, COM_STATISTICS …).
"""

from __future__ import annotations

import dataclasses
import struct

from sqlbastion.masking.rows import program_for
from sqlbastion.proxy.mysql.constants import MAX_PACKET_PAYLOAD, ErrorCode
from sqlbastion.proxy.mysql.errors import MalformedPacket, MySQLProtocolError
from sqlbastion.proxy.mysql.framing import frame_into
from sqlbastion.proxy.mysql.packets import ColumnDefinition, ErrPacket, OkPacket, StmtPrepareOk
from sqlbastion.proxy.mysql.resultsets import (
    _COLDEFS,
    _COLDEFS_EOF,
    _CURSOR_EXISTS,
    _DEPRECATE_EOF,
    _DISCARD,
    _DONE,
    _FIRST,
    _MORE_RESULTS,
    _PREPARE_PARAMS,
    _ROWS,
    _SESSION_TRACK,
    _STATE_CHANGED,
    MAX_COLUMNS,
    MAX_HELD_BYTES,
    NO_CAP,
    PLAN_CACHE_ENTRIES,
    ROW_CAP_MESSAGE,
    MetadataShortcut,
    Planner,
    RelayBookkeeping,
    ResponseKind,
    ResultSummary,
    RowFilter,
    _lenenc_at,
    _ok_fields,
)
from sqlbastion.proxy.mysql.rows import decode_text_row, mask_binary_row, mask_text_row
from sqlbastion.proxy.session import EMPTY_MASK_PLAN, MaskPlan

__all__ = [
    "MAX_COLUMNS",
    "MAX_HELD_BYTES",
    "NO_CAP",
    "ROW_CAP_MESSAGE",
    "MetadataShortcut",
    "Planner",
    "ResponseKind",
    "ResponseRelay",
    "ResultSummary",
    "RowFilter",
]


# A packet header read as one little-endian int<4> (page_protocol_basic_packets): the length in
# the low three bytes, the sequence id in the high one. One C call instead of four indexings.
_header_at = struct.Struct("<I").unpack_from


class ResponseRelay(RelayBookkeeping):
    """One command's response: backend bytes in, client bytes out (sans-IO).

    ``plan_cache`` (optional) maps the exact bytes of a result's column
    definitions to the plan made for them; COM_STMT_EXECUTE passes the prepared
    statement's cache so repeated executes neither decode metadata nor plan again.
    """

    __slots__ = (
        "_backend_caps",
        "_buf",
        "_cap",
        "_cap_text",
        "_client_caps",
        "_continuation",
        "_deprecate_eof",
        "_eof_limit",
        "_fast",
        "_keep_row",
        "_max_packet",
        "_ncols",
        "_nparams",
        "_partial",
        "_partial_seq",
        "_pending",
        "_plan",
        "_plan_cache",
        "_planner",
        "_rewrite_ok",
        "_shortcut",
        "_types",
        "_withhold",
        "binary",
        "kind",
        "summary",
    )

    def __init__(
        self,
        *,
        kind: ResponseKind,
        backend_capabilities: int,
        client_capabilities: int,
        binary: bool = False,
        planner: Planner | None = None,
        withhold_errors: str | None = None,
        plan: MaskPlan | None = None,
        types: list[int] | None = None,
        max_packet: int = 64 << 20,
        first_seq: int = 1,
        plan_cache: dict[bytes, tuple[MaskPlan, list[int]]] | None = None,
        keep_row: RowFilter | None = None,
        shortcut: MetadataShortcut | None = None,
        max_rows: int | None = None,
        cap_text: str = "",
        hold_capped_rows: bool = False,
    ) -> None:
        # What the connection negotiated: fixed for the relay's life (one per connection).
        self._deprecate_eof = bool(backend_capabilities & _DEPRECATE_EOF)
        self._eof_limit = 0xFFFFFF if self._deprecate_eof else 9  # 0xFE packets shorter than this end a result
        self._backend_caps = backend_capabilities
        self._client_caps = client_capabilities
        self._rewrite_ok = bool(backend_capabilities & _SESSION_TRACK and not client_capabilities & _SESSION_TRACK)
        self._max_packet = max_packet
        self._buf = bytearray()
        self._partial = bytearray()  # a logical packet spread over 16 MiB pieces
        self._held = bytearray()
        self._pending: list[bytes] = []  # raw column definitions of the current result
        self.reset(
            kind,
            binary=binary,
            planner=planner,
            withhold_errors=withhold_errors,
            plan=plan,
            types=types,
            first_seq=first_seq,
            plan_cache=plan_cache,
            keep_row=keep_row,
            shortcut=shortcut,
            max_rows=max_rows,
            cap_text=cap_text,
            hold_capped_rows=hold_capped_rows,
        )

    def reset(
        self,
        kind: ResponseKind,
        *,
        binary: bool = False,
        planner: Planner | None = None,
        withhold_errors: str | None = None,
        plan: MaskPlan | None = None,
        types: list[int] | None = None,
        first_seq: int = 1,
        plan_cache: dict[bytes, tuple[MaskPlan, list[int]]] | None = None,
        keep_row: RowFilter | None = None,
        shortcut: MetadataShortcut | None = None,
        max_rows: int | None = None,
        cap_text: str = "",
        hold_capped_rows: bool = False,
    ) -> None:
        """Follow the next command's response (the connection's relay is reused: no object per statement).

        ``summary`` is a new object each time, so a caller may keep the last one.
        """
        self.kind = kind
        # The row cap counts the rows of the whole response: every result set of one command, or
        # the rows of one COM_STMT_FETCH (the glue passes what is left of the cursor's cap). Row
        # cap + 1 is replaced by an ERR with ``cap_text`` and the rest of the response is dropped.
        if max_rows is None:
            self._cap = NO_CAP
            self._row_hold: bytearray | None = None
        else:
            self._cap = max(0, max_rows)
            cap_text = cap_text or ROW_CAP_MESSAGE.format(cap=self._cap, ref="-")
            # Rows held back (bounded) until the result ends inside the cap or the cap is passed,
            # so the cap's ERR is then the first row packet the client reads: for clients that
            # cannot read an ERR after rows (docs/mysql.md, "Row cap").
            self._row_hold = bytearray() if hold_capped_rows else None
        self._cap_text = cap_text
        self._hold_seq = 0
        self._held_rows = 0
        self._held_masked = 0
        self._keep_row = keep_row
        self._shortcut = shortcut
        self.new_shortcut: MetadataShortcut | None = None
        self.binary = binary or kind == "fetch"
        self._planner = planner
        self._plan_cache = plan_cache
        self._withhold = withhold_errors
        self.summary = ResultSummary()
        if self._buf:
            self._buf.clear()  # left over from a response that ended in an error
        self._state = _FIRST if kind != "fetch" else _ROWS
        self._plan: MaskPlan | None = plan
        self._types: list[int] = types or []
        self._fast = plan is None or plan.empty
        self._ncols = 0
        self._nparams = 0
        if self._pending:
            self._pending = []
        if self._held:
            self._held = bytearray()
        self._held_first_seq = 0
        self._held_count = 0
        self._held_in_order = True
        if self._partial:
            self._partial.clear()
        self._partial_seq = 0
        self._continuation = False  # the previous piece was 0xFFFFFF bytes long
        self._out_seq = first_seq
        self._discard_phase = "rows"
        self._discard_cols = 0

    @property
    def backend_capabilities(self) -> int:
        return self._backend_caps

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def next_seq(self) -> int:
        """The sequence id the next packet to the client must carry (for an ERR after a failure)."""
        return self._out_seq

    @property
    def plan(self) -> MaskPlan | None:
        """The mask plan of the last result set (kept for COM_STMT_FETCH on a cursor)."""
        return self._plan

    @property
    def types(self) -> list[int]:
        return self._types

    # -- output helpers ------------------------------------------------------

    def _emit_payload(self, out: bytearray, payload: bytes) -> None:
        self._out_seq = frame_into(out, self._out_seq, payload)

    def _forward(self, out: bytearray, payload: bytes, raw: bytes | None, seq: int) -> None:
        """Send a packet on unchanged (renumbered if the client's numbering has moved)."""
        if raw is None:
            self._out_seq = frame_into(out, self._out_seq, payload)
            return
        if seq == self._out_seq:
            out += raw
        else:
            out += raw[:3]
            out.append(self._out_seq)
            out += raw[4:]
        self._out_seq = (self._out_seq + 1) & 0xFF

    # -- input ---------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Consume backend bytes; return the bytes for the client.

        Raises MalformedPacket or MySQLProtocolError when the backend breaks the
        protocol; the glue then ends the session (the backend is not trusted to
        be in a known state any more).
        """
        if self._state == _DONE:
            if data:
                raise MalformedPacket("backend sent data after the end of the response")
            return b""
        buf = self._buf
        if buf:
            buf += data
            if len(buf) >= 4 and len(buf) < 4 + (buf[0] | buf[1] << 8 | buf[2] << 16):
                # Still inside one large packet: wait for the rest without copying (a 16 MiB piece
                # arrives in hundreds of reads).
                if len(buf) > self._max_packet + 8:
                    raise MalformedPacket("backend packet larger than the limit")
                return b""
            data = bytes(buf)
            buf.clear()
        out = bytearray()
        pos = 0
        n = len(data)
        sc = self._shortcut
        if sc is not None and self._state == _FIRST and sc.first_seq == self._out_seq and data.startswith(sc.meta):
            # The same metadata as last time: forward it as is and go straight to the rows.
            self._shortcut = None
            out += sc.meta
            pos = len(sc.meta)
            self._out_seq = sc.next_seq
            self._plan = sc.plan
            self._types = sc.types
            self._fast = sc.plan is EMPTY_MASK_PLAN or sc.plan.empty
            self._ncols = sc.ncols
            self._state = sc.state_after
            self.summary.status = sc.status
            self.new_shortcut = sc
        run_start = -1  # start of a run of raw row packets forwarded unchanged
        rows = 0
        room = self._room()  # rows this response may still carry before the general path decides
        eof_limit = self._eof_limit
        while n - pos >= 4:
            if n - pos > 1024 and self._state == _ROWS and self._fast and not self._continuation:
                # The tightest loop, on locals only: whole row packets in sequence, within the
                # room left. Anything else (a result's end, a 16 MiB piece, the row past the
                # cap, a renumbering) leaves it for the loop body below, which decides as before.
                # Only for reads with more than a few rows in them: a one-row response (a point
                # select) is cheaper without setting it up.
                out_seq = self._out_seq
                while n - pos >= 4:
                    header = _header_at(data, pos)[0]  # int<3> payload_length, int<1> sequence_id
                    length = header & 0xFFFFFF
                    end = pos + 4 + length
                    if end > n or rows == room or not 0 < length < MAX_PACKET_PAYLOAD or header >> 24 != out_seq:
                        break
                    b0 = data[pos + 4]
                    if b0 == 0xFF or (b0 == 0xFE and length < eof_limit):
                        break
                    rows += 1
                    if run_start < 0:
                        run_start = pos
                    out_seq = (out_seq + 1) & 0xFF
                    pos = end
                self._out_seq = out_seq
                if n - pos < 4:
                    break
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            end = pos + 4 + length
            if end > n:
                break
            seq = data[pos + 3]
            if self._state == _ROWS and self._fast and seq == self._out_seq:
                # The hot loop: unmasked rows are counted, never decoded. A piece after a
                # 0xFFFFFF-byte piece continues a row (16 MiB or more) and is never a terminator.
                ends = False
                if not self._continuation and length:
                    b0 = data[pos + 4]
                    ends = b0 == 0xFF or (b0 == 0xFE and length < eof_limit)
                if not ends:
                    # The one comparison the row cap costs: a row past the room left (or every
                    # row while rows are held back) takes the general path below.
                    if self._continuation or rows != room:
                        if not self._continuation:
                            rows += 1
                        self._continuation = length == MAX_PACKET_PAYLOAD
                        if run_start < 0:
                            run_start = pos
                        self._out_seq = (seq + 1) & 0xFF
                        pos = end
                        continue
                elif b0 == 0xFE and self._row_hold is None and self._ends_in_place(data, pos + 4, end):
                    # The EOF / OK that ends the result, forwarded with the run of rows before it.
                    if run_start < 0:
                        run_start = pos
                    self._out_seq = (seq + 1) & 0xFF
                    pos = end
                    if self._state == _DONE:
                        break
                    continue
            if run_start >= 0:
                out += data[run_start:pos]
                run_start = -1
            if rows:
                self.summary.rows += rows  # the general path counts in the summary itself
                rows = 0
            if (
                self._state == _ROWS
                and not self._fast
                and self._plan is not None
                and self._keep_row is None
                and self._row_hold is None
                and not self._partial
                and seq == self._out_seq
            ):
                # Masked rows (text or binary): the run of complete row packets from here, rewritten
                # in one call (masking.rows; C when built), within the row cap. What it does not take
                # (a terminator, a malformed or 16 MiB packet, the row past the cap, a value that does
                # not fit its binary type, a masker's error) goes on to the general path below,
                # which decides as before.
                program = program_for(self._plan)
                left = self._cap - self.summary.rows
                if program is not None and left > 0:
                    try:
                        if self.binary:
                            done, nrows, masked, next_seq = program.rewrite_mysql_binary(
                                data, pos, n, out, types=self._types, limit=left, seq=seq, eof_limit=eof_limit
                            )
                        else:
                            done, nrows, masked, next_seq = program.rewrite_mysql(
                                data, pos, n, out, limit=left, seq=seq, eof_limit=eof_limit
                            )
                    except (ValueError, TypeError):
                        nrows = 0  # out is as it was; _on_row meets the error again and refuses
                    if nrows:
                        self.summary.rows += nrows
                        self.summary.masked_values += masked
                        self._out_seq = next_seq
                        pos = done
                        room = self._room()
                        continue
            self._piece(out, data[pos:end], length, seq)
            room = self._room()
            pos = end
            if self._state == _DONE:
                break
        if run_start >= 0:
            out += data[run_start:pos]
        self.summary.rows += rows
        if pos < n:
            if self._state == _DONE:
                raise MalformedPacket("backend sent data after the end of the response")
            buf += data[pos:]
            if len(buf) > self._max_packet + 8:
                raise MalformedPacket("backend packet larger than the limit")
        self.summary.bytes_out += len(out)
        return bytes(out)

    def _room(self) -> int:
        """Rows the fast loop may still count before a row must take the general path."""
        if self._row_hold is not None:
            return 0
        return self._cap - self.summary.rows

    def _piece(self, out: bytearray, raw: bytes, length: int, seq: int) -> None:
        """One physical packet outside the fast row loop."""
        if self._partial or length == MAX_PACKET_PAYLOAD:
            if not self._partial:
                self._partial_seq = seq
            self._partial += raw[4:]
            if len(self._partial) > self._max_packet:
                raise MalformedPacket("backend packet larger than the limit")
            if length == MAX_PACKET_PAYLOAD:
                return
            payload = bytes(self._partial)
            self._partial.clear()
            self._packet(out, payload, None, self._partial_seq)
            return
        self._packet(out, raw[4:], raw, seq)

    def _packet(self, out: bytearray, payload: bytes, raw: bytes | None, seq: int) -> None:
        """One logical packet. ``raw`` is its framed form when it is one piece (forwardable as is)."""
        state = self._state
        first = payload[0] if payload else -1
        if state == _ROWS:
            if self._row_hold is None:
                self._on_row(out, payload, raw, seq)
            else:
                self._held_row(out, payload, raw, seq)
            return
        if state == _DISCARD:
            self._discard(payload)
            return
        if first == 0xFF and (state in (_FIRST, _COLDEFS_EOF) or self.kind != "query"):
            self._on_error(out, payload)
            return
        if self.kind == "single":
            if first == 0x00 and len(payload) >= 7:
                self._on_ok(out, payload, raw, seq)
            else:
                self._forward(out, payload, raw, seq)
            self._state = _DONE
            return
        if state == _FIRST:
            self._on_first(out, payload, raw, seq)
        elif state == _PREPARE_PARAMS:
            self._on_prepare_params(payload, raw, seq, out)
        elif state == _COLDEFS:
            self._on_coldef(out, payload, raw, seq)
        elif state == _COLDEFS_EOF:
            if not (first == 0xFE and len(payload) < 9):
                raise MalformedPacket("expected EOF after the column definitions")
            status = payload[3] | payload[4] << 8 if len(payload) >= 5 else 0
            self.summary.status = status
            if self.kind == "prepare":
                self._forward(out, payload, raw, seq)
                self._state = _DONE
                return
            self._hold(payload, raw, seq)
            self._release_held(out)
            self._state = _DONE if status & _CURSOR_EXISTS else _ROWS
            if self._state == _DONE and self.new_shortcut is not None:
                self.new_shortcut = dataclasses.replace(self.new_shortcut, state_after=_DONE)
        else:
            raise MalformedPacket("unexpected packet")

    # -- states --------------------------------------------------------------

    def _on_first(self, out: bytearray, payload: bytes, raw: bytes | None, seq: int) -> None:
        first = payload[0] if payload else -1
        if self.kind == "prepare":
            if first != 0x00:
                raise MalformedPacket("expected COM_STMT_PREPARE_OK")
            prep = StmtPrepareOk.decode(payload)
            self.summary.prepare_ok = prep
            self._forward(out, payload, raw, seq)
            self._nparams = prep.num_params
            self._ncols = prep.num_columns
            if prep.num_params > MAX_COLUMNS * 16 or prep.num_columns > MAX_COLUMNS:
                raise MalformedPacket("too many parameters or columns")
            if self._nparams:
                self._state = _PREPARE_PARAMS
            else:
                self._state = _COLDEFS if self._ncols else _DONE
            return
        if self.kind == "field_list":
            self._state = _COLDEFS
            self._on_coldef(out, payload, raw, seq)
            return
        if first == 0x00 and len(payload) >= 7:
            status = self._on_ok(out, payload, raw, seq)
            self.summary.results += 1
            self._state = _FIRST if status & _MORE_RESULTS else _DONE
            return
        if first == 0xFB:
            raise MalformedPacket("backend asked for a LOCAL INFILE, which sqlbastion never negotiates")
        ncols, end = _lenenc_at(payload, 0)
        if ncols == 0 or ncols > MAX_COLUMNS or end != len(payload):
            raise MalformedPacket(f"column count {ncols}")
        self._ncols = ncols
        self._pending = []
        self._held = bytearray()
        self._plan = None
        self._fast = True
        self._hold(payload, raw, seq)
        self._state = _COLDEFS

    def _on_prepare_params(self, payload: bytes, raw: bytes | None, seq: int, out: bytearray) -> None:
        if self._nparams > 0:
            self._forward(out, payload, raw, seq)
            self._nparams -= 1
            if self._nparams == 0:
                if self._deprecate_eof:
                    self._state = _COLDEFS if self._ncols else _DONE
                else:
                    self._nparams = -1  # the EOF after the parameter definitions comes next
            return
        if not (payload[:1] == b"\xfe" and len(payload) < 9):
            raise MalformedPacket("expected EOF after the parameter definitions")
        self._forward(out, payload, raw, seq)
        self._state = _COLDEFS if self._ncols else _DONE

    def _on_coldef(self, out: bytearray, payload: bytes, raw: bytes | None, seq: int) -> None:
        if self.kind == "field_list":
            first = payload[0] if payload else -1
            if first == 0xFE and len(payload) < self._eof_limit:
                if len(payload) >= 7 and self._deprecate_eof:
                    self._on_ok(out, payload, raw, seq)
                else:
                    self._forward(out, payload, raw, seq)
                self._state = _DONE
                return
            if len(self._pending) >= MAX_COLUMNS:
                raise MalformedPacket("too many column definitions")
            self._pending.append(payload)
            self._forward(out, payload, raw, seq)
            return
        self._pending.append(payload)
        if self.kind == "prepare":
            self._forward(out, payload, raw, seq)
            if len(self._pending) >= self._ncols:
                self._state = _DONE if self._deprecate_eof else _COLDEFS_EOF
            return
        self._hold(payload, raw, seq)
        if len(self._pending) < self._ncols:
            return
        self._make_plan(out)
        if self._state == _DISCARD:
            return
        if self._deprecate_eof:
            self._release_held(out)
            self._state = _ROWS
        else:
            self._state = _COLDEFS_EOF

    def columns(self) -> list[ColumnDefinition]:
        """The decoded column definitions of the current result (decoded on demand)."""
        return [ColumnDefinition.decode(p) for p in self._pending]

    def _make_plan(self, out: bytearray) -> None:
        if self._keep_row is not None:
            # Rows are filtered (process lists): every row is decoded, nothing is cached.
            cols = self.columns()
            self.summary.columns = cols
            self._types = [c.type for c in cols]
            plan = self._planner(cols, self.binary) if self._planner is not None else EMPTY_MASK_PLAN
            self._plan = None if plan.empty else plan  # None: rows pass unmasked (but still filtered)
            self._fast = False
            if plan.refuse is not None:
                self._refuse(out, plan.refuse)
            return
        cache = self._plan_cache
        key = bytes(self._held) + (b"B" if self.binary else b"T")
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            plan, self._types = cached
        else:
            cols = self.columns()
            self.summary.columns = cols
            self._types = [c.type for c in cols]
            plan = self._planner(cols, self.binary) if self._planner is not None else EMPTY_MASK_PLAN
            if cache is not None:
                if len(cache) >= PLAN_CACHE_ENTRIES:
                    cache.clear()
                cache[key] = (plan, self._types)
        self._plan = plan
        self._fast = plan is EMPTY_MASK_PLAN or plan.empty
        if plan.refuse is not None:
            self._refuse(out, plan.refuse)
        elif not plan.empty and len(plan.columns) != self._ncols:
            self._refuse(out, "sqlbastion: result withheld: the mask plan does not match the result's columns.")

    def _refuse(self, out: bytearray, text: str, *, phase: str | None = None) -> None:
        """Send one ERR instead of the result and drop the rest of the response."""
        self._held = bytearray()
        self.summary.refused = text
        err = ErrPacket(errno=ErrorCode.ER_SPECIFIC_ACCESS_DENIED_ERROR, message=text, sqlstate="42000")
        self._emit_payload(out, err.encode(self._client_caps))
        self._state = _DISCARD
        # Refused at the last column definition: the EOF after them (if any) comes next.
        self._discard_phase = phase or ("rows" if self._deprecate_eof else "eof_after_coldefs")
        self._discard_cols = 0

    def _on_row(self, out: bytearray, payload: bytes, raw: bytes | None, seq: int) -> None:
        first = payload[0] if payload else -1
        if first == 0xFF:
            self._on_error(out, payload)
            return
        if first == 0xFE and len(payload) < self._eof_limit:
            if self._deprecate_eof:
                status = self._on_ok(out, payload, raw, seq)
            else:
                status = payload[3] | payload[4] << 8 if len(payload) >= 5 else 0
                self.summary.warnings = payload[1] | payload[2] << 8 if len(payload) >= 3 else 0
                self.summary.status = status
                self._forward(out, payload, raw, seq)
            self.summary.results += 1
            self._state = _FIRST if status & _MORE_RESULTS and self.kind == "query" else _DONE
            return
        if self._keep_row is not None and not self.binary:
            try:
                values = decode_text_row(payload, self._ncols)
            except MySQLProtocolError:
                values = []
            if not values or not self._keep_row(self.summary.columns, values):
                return  # not the person's: dropped
        if self.summary.rows >= self._cap:
            self._cap_hit(out)
            return
        self.summary.rows += 1
        plan = self._plan
        if self._fast or plan is None:
            self._forward(out, payload, raw, seq)
            return
        try:
            if self.binary:
                row, masked = mask_binary_row(payload, self._types, plan.columns)
            else:
                row, masked = mask_text_row(payload, plan.columns)
        except (MySQLProtocolError, ValueError, TypeError) as exc:
            self.summary.rows -= 1
            self._refuse(
                out, f"sqlbastion: result withheld: a value could not be masked ({type(exc).__name__}).", phase="rows"
            )
            return
        self.summary.masked_values += masked
        self._emit_payload(out, row)

    def _on_error(self, out: bytearray, payload: bytes) -> None:
        err = ErrPacket.decode(payload)
        self.summary.error = err
        if self._withhold is not None:
            err = ErrPacket(errno=err.errno, message=self._withhold, sqlstate=err.sqlstate)
        self._held = bytearray()
        self._emit_payload(out, err.encode(self._client_caps))
        self._state = _DONE

    def _on_ok(self, out: bytearray, payload: bytes, raw: bytes | None, seq: int) -> int:
        """Record an OK (or 0xFE OK), forward it in the client's format; returns its status flags."""
        affected, status, warnings = _ok_fields(payload)
        summary = self.summary
        summary.status = status
        summary.warnings = warnings
        summary.affected += affected
        if status & _STATE_CHANGED or self._rewrite_ok:
            ok = OkPacket.decode(payload, self._backend_caps)
            if ok.session_state:
                summary.oks.append(ok)
            if self._rewrite_ok:
                self._emit_payload(out, ok.encode(self._client_caps))
                return status
        self._forward(out, payload, raw, seq)
        return status
