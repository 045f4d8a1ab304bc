"""Result sets of the PostgreSQL relay: column metadata, mask plans, DataRow rewriting.

A result's columns come from RowDescription (PostgreSQL 15 documentation
§55.7): table OID and attribute number, resolved to names by the catalog
cache, and the type OID. The session's mask plan for them decides the path:

* empty plan → the fast path: QueryRelay relays DataRows as byte spans;
* maskers → each DataRow is decoded, masked column by column, re-encoded;
* ``refuse`` → rows are dropped and the result ends in ErrorResponse 42501.

A result whose columns were never described is refused, never relayed
unplanned. This is a mixin of ``QueryRelay``; it holds no state of its own.
"""

from __future__ import annotations

from collections import deque

from sqlbastion.policies.model import Decision
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import ProtocolViolation, RowColumn
from sqlbastion.proxy.postgres.tracking import (
    COLUMN_CACHE_ENTRIES,
    NO_CAP,
    ROW_CAP_EXCEEDED,
    ROW_CAP_MESSAGE,
    WITHHELD,
    ColumnResolver,
    Kind,
    Pending,
)
from sqlbastion.proxy.session import EMPTY_MASK_PLAN, MaskPlan, ResultColumn, Session

__all__ = ["ResultHandling"]


class ResultHandling:
    """The result-set half of QueryRelay (which sets every attribute declared here)."""

    session: Session
    resolver: ColumnResolver
    need_catalog: tuple[RowColumn, ...] | None
    _items: deque[Pending]
    _to_client: bytearray
    _encoding: str
    _plan: MaskPlan | None
    _row_passthrough: bool
    _discarding: bool
    _rows_passthrough: int
    _room: int
    _masked_rows: int
    _capped: bool
    _reply_hold: int
    _columns_cache: dict[tuple[tuple[RowColumn, ...], tuple[int, ...] | None], list[ResultColumn]]
    _row_cache: dict[bytes, tuple[RowColumn, ...]]
    _query_plans: dict[bytes, tuple[Decision, str]]

    def _withhold(self, item: Pending | None, kind: int, body: bytes) -> bytes | None:
        """An ErrorResponse/NoticeResponse with its text replaced, for statements on sensitive columns."""
        if item is None or item.verdict is None or not item.verdict.decision.sensitive_columns:
            return None
        fields = p.decode_error_fields(body)
        kept = [(c, v) for c, v in fields if c in (b"S", b"V", b"C")]
        kept.append((b"M", WITHHELD.format(item.verdict.event_id)))
        return p.encode_error_fields(kind, kept)

    def _result_columns(self, row: tuple[RowColumn, ...], formats: tuple[int, ...] | None) -> list[ResultColumn] | None:
        key = (row, formats)
        cached = self._columns_cache.get(key)
        if cached is not None:
            return cached
        columns = self._resolve_columns(row, formats)
        if columns is not None:
            if len(self._columns_cache) >= COLUMN_CACHE_ENTRIES:
                self._columns_cache.clear()  # also lets renamed columns be seen again
            self._columns_cache[key] = columns
        return columns

    def _resolve_columns(
        self, row: tuple[RowColumn, ...], formats: tuple[int, ...] | None
    ) -> list[ResultColumn] | None:
        metas = self.resolver.resolve(row)
        if metas is None:
            self.need_catalog = tuple(row)
            return None
        out = []
        for i, (col, meta) in enumerate(zip(row, metas, strict=True)):
            if formats is None:
                binary = col.format == 1
            elif not formats:
                binary = False
            else:
                binary = (formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0) == 1
            out.append(
                ResultColumn(
                    name=col.name.decode(self._encoding, "replace"),
                    schema=meta.schema,
                    table=meta.table,
                    column=meta.column,
                    type_name=meta.type_name,
                    binary=binary,
                )
            )
        return out

    def _start_result(self, item: Pending, row: tuple[RowColumn, ...] | None, formats: tuple[int, ...] | None) -> bool:
        """Choose the mask plan for a result set. False when paused for the catalog."""
        verdict = item.verdict
        if verdict is None or item.swallow:
            self._plan, self._row_passthrough = None, False  # swallowed rows go through _data_row
            return True
        self._set_room(item, verdict.decision)
        plans = item.portal.statement.plans if item.portal is not None and formats is not None else None
        if plans is not None and row is not None and formats is not None:
            cached = plans.get((row, formats))
            # Only a plan that masks nothing is reused: a masking or refusing result asks the
            # session each time, so each Execute's audit event names its masks and the metric counts it.
            if cached is not None and (cached is EMPTY_MASK_PLAN or cached.empty):
                self._plan = cached
                self._row_passthrough = True
                self._discarding = False  # an empty plan refuses nothing
                return True
        if row is None:
            # Rows whose columns were never described: fail closed.
            self._plan = MaskPlan(refuse="sqlbastion: result columns could not be described; the result is withheld")
        else:
            columns = self._result_columns(row, formats)
            if columns is None:
                return False
            self._plan = self.session.mask_plan(verdict, columns)
            if not self._plan.refuse and self._plan.columns and len(self._plan.columns) != len(columns):
                self._plan = MaskPlan(refuse="sqlbastion: the masking plan does not match the result; withheld")
            if plans is not None and formats is not None:
                if len(plans) >= 16:
                    plans.clear()
                plans[(row, formats)] = self._plan
        # The planners return the shared EMPTY_MASK_PLAN when nothing is masked: skip the scan.
        self._row_passthrough = self._plan is EMPTY_MASK_PLAN or self._plan.empty
        self._discarding = self._plan.refuse is not None
        return True

    def _set_room(self, item: Pending, decision: Decision) -> None:
        """The row cap: what this result may still carry. One Query message counts all its
        results together (one decision covers the message); an Execute counts on from the
        portal's earlier Executes (portal suspension)."""
        cap = decision.max_rows
        if cap is None:
            self._room = NO_CAP
        else:
            portal = item.portal
            before = portal.rows_sent if item.kind == Kind.EXECUTE and portal is not None else item.rows_sent
            self._room = max(0, cap - before)
        self._masked_rows = 0

    def _end_result(self) -> None:
        if self._plan is None and not self._row_passthrough and not self._discarding:
            return  # already ended (CommandComplete, then ReadyForQuery)
        self._plan = None
        self._row_passthrough = False
        self._discarding = False
        self._capped = False

    def _start_rows(self, item: Pending) -> bool:
        """The first DataRow of a result whose plan is not chosen yet. False when paused for the catalog."""
        portal = item.portal
        if item.kind == Kind.EXECUTE and portal is not None:
            row = portal.row if portal.row is not None else portal.statement.row
            return self._start_result(item, row, portal.formats)
        return self._start_result(item, None, None)

    def _row_allowed(self, item: Pending) -> bool:
        """Before a DataRow leaves on the general path (the first row of a result, masked rows):
        False when it is one past the row cap, which then ends the result (``_cap_reached``)."""
        if self._discarding:
            return True  # dropped anyway
        if self._row_passthrough:
            if self._rows_passthrough < self._room:
                return True  # _data_row counts it
        elif self._masked_rows < self._room:
            self._masked_rows += 1
            return True
        self._cap_reached(item)
        return False

    def _cap_reached(self, item: Pending) -> None:
        """One row past the person's row cap: this and the remaining rows are dropped, and the
        result ends in ErrorResponse 42501 in place of its CommandComplete (or PortalSuspended),
        exactly as for a refused result (``_complete``, then muted until ReadyForQuery)."""
        verdict = item.verdict
        cap = verdict.decision.max_rows if verdict is not None else None
        ref = verdict.event_id if verdict is not None else "-"
        self._plan = MaskPlan(refuse=ROW_CAP_MESSAGE.format(cap=cap, ref=ref))
        self._row_passthrough = False
        self._discarding = True
        self._capped = True
        item.outcome.backend_error = ROW_CAP_EXCEEDED

    def _row_description(self, item: Pending, frame: bytes, body: bytes) -> bool:
        if item.kind != Kind.DESCRIBE and (self._plan is not None or self._row_passthrough or self._discarding):
            # A server ends each result (CommandComplete, or ErrorResponse) before the next one
            # starts; a second RowDescription inside one would restart the row cap's count.
            raise ProtocolViolation("backend sent RowDescription inside a result")
        verdict = item.verdict
        if item.kind == Kind.QUERY and verdict is not None:
            hit = self._query_plans.get(body)
            if (
                hit is not None
                and hit[0] is verdict.decision
                and hit[1] == self.session.runtime.engine.version
                and not item.swallow
            ):
                # The same columns under the same decision planned empty before: relay the rows.
                self._plan = EMPTY_MASK_PLAN
                self._row_passthrough = True
                self._discarding = False
                self._set_room(item, verdict.decision)
                self._reply_hold = -1  # a further result: the Query's reply goes on
                self._to_client += frame
                return True
        row = self._row_cache.get(body)
        if row is None:
            row = p.decode_row_description(body)
            if len(self._row_cache) >= COLUMN_CACHE_ENTRIES:
                self._row_cache.clear()
            self._row_cache[body] = row
        if item.kind == Kind.DESCRIBE:
            target = item.portal if item.portal is not None else item.statement
            if target is not None:
                target.row = row
            items = self._items
            items.popleft()
            if not item.swallow:
                self._to_client += frame
            if items and item.portal is not None and self._plan is None and not self._row_passthrough:
                # Describe portal, then Execute of that portal (what libpq sends): choose the
                # result's plan now, so that its rows take the fast path from the first one.
                following = items[0]
                if (
                    following.kind == Kind.EXECUTE
                    and following.portal is item.portal
                    and not self._start_result(following, row, item.portal.formats)
                ):
                    self.need_catalog = None  # not cached yet: the first row asks again
            return True
        if item.kind in (Kind.QUERY, Kind.INTERNAL):
            if not self._start_result(item, row, None):
                return False
            self._reply_hold = -1  # a further result: the Query's reply goes on
            if self._row_passthrough and verdict is not None and not item.swallow:
                # Keyed by the raw RowDescription; reused only for the same decision object (the
                # engine returns one object per cached decision, so the same statement shape in
                # the same session state) under the same policy version, and only when empty:
                # a masking or refusing plan is asked for again, so its audit names its masks.
                plans = self._query_plans
                if len(plans) >= COLUMN_CACHE_ENTRIES:
                    plans.clear()
                plans[body] = (verdict.decision, self.session.runtime.engine.version)
            if not self._discarding and not item.swallow:
                self._to_client += frame
            return True
        raise ProtocolViolation("backend sent RowDescription out of turn")

    def _data_row(self, item: Pending, frame: bytes, body: bytes) -> bool:
        if item.swallow:
            if item.kind == Kind.INTERNAL:
                self._internal_row(body)
            return True
        if self._plan is None and not self._row_passthrough:
            if item.kind == Kind.EXECUTE and item.portal is not None:
                portal = item.portal
                row = portal.row if portal.row is not None else portal.statement.row
                if not self._start_result(item, row, portal.formats):
                    return False
            elif not self._start_result(item, None, None):
                return False
        if self._row_passthrough:
            self._rows_passthrough += 1
            if not item.swallow:
                self._to_client += frame
            return True
        if self._discarding:
            return True
        plan = self._plan
        assert plan is not None  # set by _start_result
        values = p.decode_data_row(body)
        if len(values) != len(plan.columns):
            raise ProtocolViolation("backend DataRow does not match its RowDescription")
        masked = 0
        for i, masker in enumerate(plan.columns):
            if masker is not None:
                values[i] = masker(values[i])
                masked += 1
        item.outcome.masked_values += masked
        item.outcome.rows += 1
        self._to_client += p.encode_data_row(values)
        return True

    def _internal_row(self, body: bytes) -> None:
        values = p.decode_data_row(body)
        if len(values) == 1 and values[0] is not None:
            text = values[0].decode(self._encoding, "replace")
            self.session.state.search_path = tuple(s.strip().strip('"') for s in text.split(",") if s.strip())
            self._query_plans.clear()  # plans depend on the session state

    def _copy(self, item: Pending, kind: int, frame: bytes) -> None:
        if item.swallow:
            return
        if kind != p.COPY_DATA:
            self._reply_hold = -1  # a COPY's start or end: the Query's reply goes on
        verdict = item.verdict
        if kind == p.COPY_OUT_RESPONSE and verdict is not None and verdict.decision.sensitive_columns:
            # COPY TO STDOUT carries no per-column metadata to mask by: refuse the data.
            self._plan = MaskPlan(refuse="sqlbastion: COPY TO STDOUT of sensitive columns is refused; use SELECT")
            self._discarding = True
            return
        if self._discarding and kind in (p.COPY_DATA, p.COPY_DONE):
            return
        if kind == p.COPY_OUT_RESPONSE and verdict is not None and verdict.decision.max_rows is not None:
            # COPY … TO STDOUT needs the export action, whose holders have no cap; should a policy
            # allow it to a capped person all the same, each CopyData message counts as one row
            # (PostgreSQL sends one per row in text and CSV format).
            self._room = verdict.decision.max_rows
            self._masked_rows = 0
        elif kind == p.COPY_DATA and verdict is not None and verdict.decision.max_rows is not None:
            if self._masked_rows >= self._room:
                item.outcome.rows += self._masked_rows  # rows sent; the capped result ignores its tag
                self._cap_reached(item)
                return
            self._masked_rows += 1
        self._to_client += frame
