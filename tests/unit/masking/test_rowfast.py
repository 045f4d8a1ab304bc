"""The chunk-at-a-time row rewriters: C and Python give the same bytes, and both agree with the per-row paths.

``masking.rowref`` (Python) states the semantics and ``sqlbastion._rowfast`` (C)
must match it byte for byte; both must match what the relays did row by row
before (``decode_data_row``/``encode_data_row`` with the plan's maskers for
PostgreSQL, ``mask_text_row`` for MySQL) on every row they consume, and must
leave every message they do not understand unconsumed.
"""

from __future__ import annotations

import gc
import os
import struct
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlbastion.masking import rowref, rows
from sqlbastion.masking.functions import build_function
from sqlbastion.masking.plan import _counted
from sqlbastion.masking.wire import ascii_fast_op, build_converter
from sqlbastion.proxy.mysql.constants import FieldType
from sqlbastion.proxy.mysql.errors import LocalProtocolError
from sqlbastion.proxy.mysql.rows import encode_binary_row, mask_binary_row, mask_text_row
from sqlbastion.proxy.mysql.wire import lenenc_int
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.session import ColumnMasker, MaskPlan

try:
    from sqlbastion import _rowfast

    FAST: ModuleType | None = _rowfast
except ImportError:  # pragma: no cover - the CI test below fails in that case
    FAST = None

needs_c = pytest.mark.skipif(FAST is None, reason="the C extension is not built (CI fails in test_extension_loaded)")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_extension_loaded_in_ci() -> None:
    if IN_CI or FAST is not None:
        assert FAST is not None, "sqlbastion._rowfast is not built: run scripts/install-deps.sh"
        assert rows.IMPLEMENTATION == "c" or os.environ.get("SQLBASTION_ROWFAST") == "0"


@needs_c
def test_operation_codes_agree() -> None:
    assert FAST is not None
    for name in ("OP_CALL", "OP_FULL", "OP_KEEP", "OP_MOBILE", "OP_KEEP_DIGITS", "OP_EMAIL", "OP_NAME", "MAX_KEEP"):
        assert getattr(FAST, name) == getattr(rowref, name), name
    for name in ("LAYOUT_TEMPORAL", "LAYOUT_LENENC"):
        assert getattr(FAST, name) == getattr(rowref, name), name


# --- maskers as the planner builds them -------------------------------------------------


@dataclass
class Child:
    """A metric child: records what is added to it."""

    total: int = 0

    def inc(self, amount: float = 1) -> None:
        self.total += int(amount)


@dataclass
class Tally:
    count: list[int] = field(default_factory=lambda: [0])
    child: Child = field(default_factory=Child)

    @property
    def total(self) -> int:
        return self.count[0] + self.child.total

    def reset(self) -> None:
        self.count[0] = 0
        self.child.total = 0


FUNCTIONS = ("mobile", "id_card", "bank_card", "keep(first=2,last=3)", "full", "email", "chinese_name", "null")
KINDS = (*FUNCTIONS, "reverse", "nulls", "pass")


def planner_masker(function: str, tally: Tally, *, encoding: str = "utf-8") -> ColumnMasker:
    """The masker MaskingPlanner builds for a text column (registered when it has an ASCII op)."""
    fn = build_function(function)
    convert = build_converter(fn, dialect="postgres", type_name="varchar", binary=False, encoding=encoding)
    op = ascii_fast_op(fn, dialect="postgres", type_name="varchar", encoding=encoding)
    return _counted(convert, tally.count, tally.child, op)


def _reverse(value: bytes | None) -> bytes | None:
    return None if value is None else value[::-1] + b"!"


def _nulls(value: bytes | None) -> bytes | None:
    return b"was-null" if value is None else None


def maskers_for(kinds: Sequence[str], tallies: list[Tally]) -> list[ColumnMasker | None]:
    out: list[ColumnMasker | None] = []
    for k in kinds:
        if k == "pass":
            out.append(None)
        elif k == "reverse":
            out.append(_reverse)
        elif k == "nulls":
            out.append(_nulls)
        else:
            tally = Tally()
            tallies.append(tally)
            out.append(planner_masker(k, tally))
    return out


# --- chunks -----------------------------------------------------------------------------

Value = bytes | None

values = st.one_of(
    st.none(),
    st.binary(max_size=24),
    st.text(max_size=10).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True).map(str.encode),
    st.from_regex(r"[0-9]{15,19}", fullmatch=True).map(str.encode),
    st.from_regex(r"[0-9 -]{0,20}", fullmatch=True).map(str.encode),
    st.from_regex(r"[a-z.@]{0,4}@[a-z.@]{0,6}", fullmatch=True).map(str.encode),
    st.from_regex(r"[ \t\x1c\x1f]{0,2}[A-Za-z][A-Za-z \x1e]{0,8}[ \x0b\r]{0,2}", fullmatch=True).map(str.encode),
    st.sampled_from([b"", b"13812341234", "张三丰".encode(), b"a@b.c", b"\x80\xff", b"x" * 260, b"@", b"ab@"]),
)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[Value]]]:
    ncols = draw(st.integers(1, 6))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=ncols, max_size=ncols))
    nrows = draw(st.integers(0, 8))
    table = [draw(st.lists(values, min_size=ncols, max_size=ncols)) for _ in range(nrows)]
    return kinds, table


def pg_tail() -> st.SearchStrategy[bytes]:
    """What may follow the rows: nothing, another message, a cut message, garbage."""
    return st.one_of(
        st.just(b""),
        st.just(p.encode_message(p.COMMAND_COMPLETE, b"SELECT 3\x00")),
        st.binary(max_size=12),
        st.builds(lambda n, b: b"D" + struct.pack("!i", n) + b, st.integers(-5, 40), st.binary(max_size=10)),
    )


def mysql_frame(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes((seq & 0xFF,)) + payload


def mysql_row(vals: Sequence[Value]) -> bytes:
    out = bytearray()
    for v in vals:
        if v is None:
            out.append(0xFB)
        else:
            out += lenenc_int(len(v))
            out += v
    return bytes(out)


def run(
    impl: Callable[..., tuple[int, ...]], maskers: Sequence[ColumnMasker | None], *args: Any
) -> tuple[tuple[int, ...], bytes]:
    program = rows.compile_columns(maskers)
    assert program is not None
    out = bytearray(b"kept")
    data, pos, end, *rest = args
    result = impl(data, pos, end, program.columns, *rest, out)
    assert out[:4] == b"kept"
    return result, bytes(out[4:])


def both(
    maskers: Sequence[ColumnMasker | None], tallies: Sequence[Tally], mysql: bool, *args: Any
) -> tuple[tuple[int, ...], bytes, list[int]]:
    """Run the reference and (when built) the extension; assert they agree; return the reference's answer."""
    ref_impl = rowref.mysql_rewrite if mysql else rowref.pg_rewrite
    for t in tallies:
        t.reset()
    ref = run(ref_impl, maskers, *args)
    ref_tallies = [t.total for t in tallies]
    if FAST is not None:
        for t in tallies:
            t.reset()
        fast = run(FAST.mysql_rewrite if mysql else FAST.pg_rewrite, maskers, *args)
        assert fast == ref
        assert [t.total for t in tallies] == ref_tallies
    return ref[0], ref[1], ref_tallies


def pg_today(frames: Sequence[bytes], maskers: Sequence[ColumnMasker | None]) -> tuple[bytes, int]:
    """QueryRelay's per-row path: decode_data_row, the maskers, encode_data_row."""
    out = bytearray()
    masked = 0
    for frame in frames:
        vals = p.decode_data_row(frame[5:])
        assert len(vals) == len(maskers)
        for i, m in enumerate(maskers):
            if m is not None:
                vals[i] = m(vals[i])
                masked += 1
        out += p.encode_data_row(vals)
    return bytes(out), masked


# --- PostgreSQL -------------------------------------------------------------------------


@given(tables(), pg_tail(), st.integers(0, 10), st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_pg_rewrite_matches_today_and_c(
    table: tuple[list[str], list[list[Value]]], tail: bytes, limit: int, data: st.DataObject
) -> None:
    kinds, table_rows = table
    if all(k == "pass" for k in kinds):
        kinds[0] = "mobile"
    tallies: list[Tally] = []
    maskers = maskers_for(kinds, tallies)
    frames = [p.encode_data_row(r) for r in table_rows]
    lead = data.draw(st.binary(max_size=3), label="lead")
    chunk = lead + b"".join(frames) + tail
    result, out, got_tallies = both(maskers, tallies, False, chunk, len(lead), len(chunk), limit, 1 << 20)
    pos, nrows, masked = result
    take = min(limit, len(frames))
    # Every complete row is consumed up to the limit; a tail that happens to be a valid row may be too.
    assert nrows >= take
    rows_end = len(lead) + sum(len(f) for f in frames[:take])
    for t in tallies:
        t.reset()
    expected, expected_masked = pg_today(frames[:take], maskers)
    if nrows == take:
        assert pos == rows_end
        assert out == expected
        assert masked == expected_masked
        assert got_tallies == [t.total for t in tallies]
    else:  # the tail happened to be a well-formed row
        assert take == len(frames)
        assert nrows == take + 1
        assert rows_end < pos <= len(chunk)
        assert out.startswith(expected)


@given(tables(), st.data())
@settings(max_examples=150, deadline=None)
def test_pg_rewrite_fed_in_pieces(table: tuple[list[str], list[list[Value]]], data: st.DataObject) -> None:
    """Cut anywhere, called again from where it stopped: the same bytes as one call."""
    kinds, table_rows = table
    kinds[-1] = "mobile"
    tallies: list[Tally] = []
    maskers = maskers_for(kinds, tallies)
    chunk = b"".join(p.encode_data_row(r) for r in table_rows)
    whole = both(maskers, tallies, False, chunk, 0, len(chunk), 1 << 30, 1 << 20)
    cuts = [*sorted(data.draw(st.lists(st.integers(0, len(chunk)), max_size=4), label="cuts")), len(chunk)]
    pos = 0
    out = b""
    nrows = 0
    for cut in cuts:
        if cut < pos:
            continue
        (pos, n, _), piece, _ = both(maskers, tallies, False, chunk, pos, cut, 1 << 30, 1 << 20)
        out += piece
        nrows += n
    assert (pos, nrows, out) == (whole[0][0], whole[0][1], whole[1])


def test_pg_rewrite_byte_by_byte() -> None:
    tallies: list[Tally] = []
    maskers = maskers_for(["pass", "mobile", "id_card", "email"], tallies)
    table: list[list[Value]] = [
        [b"1", b"13812341234", b"110101197001020001", b"zhang@example.com"],
        [None, None, "李四".encode(), b""],
    ]
    chunk = b"".join(p.encode_data_row(r) for r in table)
    program = rows.compile_columns(maskers)
    assert program is not None
    out = bytearray()
    pos = 0
    for end in range(len(chunk) + 1):
        pos, _, _ = program.rewrite_pg(chunk, pos, end, out, limit=100, max_length=1 << 20)
    assert pos == len(chunk)
    assert bytes(out) == pg_today([p.encode_data_row(r) for r in table], maskers)[0]
    assert b"13812341234" not in out
    assert b"zhang" not in out


def test_pg_rewrite_stops_at_what_it_does_not_own() -> None:
    tallies: list[Tally] = []
    maskers = maskers_for(["mobile", "pass"], tallies)
    row = p.encode_data_row([b"13812341234", b"x"])
    cases = {
        "another message": p.encode_message(p.COMMAND_COMPLETE, b"SELECT 1\x00"),
        "wrong column count": p.encode_data_row([b"13812341234"]),
        "field past the end": b"D" + struct.pack("!ih", 10, 2) + struct.pack("!i", 50),
        "negative length": b"D" + struct.pack("!ihi", 10, 1, -2),
        "bytes after the fields": b"D" + struct.pack("!ihi", 11, 1, -1) + b"z",
        "too short": b"D" + struct.pack("!i", 5) + b"\x00",
        "too long for max_length": p.encode_data_row([b"13812341234", b"y" * 200]),
        "incomplete": row[:-1],
    }
    for what, bad in cases.items():
        chunk = row + bad + (row if what != "incomplete" else b"")
        (pos, n, masked), out, _ = both(maskers, tallies, False, chunk, 0, len(chunk), 10, 100)
        assert (pos, n, masked) == (len(row), 1, 1), what
        assert out == pg_today([row], maskers)[0]


def test_pg_rewrite_limit_stops_exactly() -> None:
    tallies: list[Tally] = []
    maskers = maskers_for(["mobile"], tallies)
    chunk = b"".join(p.encode_data_row([b"1380000000%d" % i]) for i in range(10))
    for limit in (0, 1, 3, 10, 11):
        (pos, n, _), out, _ = both(maskers, tallies, False, chunk, 0, len(chunk), limit, 1 << 20)
        assert n == min(limit, 10)
        assert pos == n * len(chunk) // 10
        assert out.count(b"D") == n


# --- MySQL ------------------------------------------------------------------------------


def mysql_tail() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(b""),
        st.just(mysql_frame(0, b"\xfe\x00\x00\x02\x00")),  # EOF (the seq is fixed up below)
        st.just(mysql_frame(0, b"\xff\x15\x04#28000denied")),  # ERR
        st.just(mysql_frame(0, b"\xfe\x00\x00\x02\x00\x00\x00")),  # OK with the 0xFE header
        st.just(b"\xff\xff\xff\x00" + b"\x05hello"),  # the start of a 16 MiB packet
        st.just(mysql_frame(0, b"")),  # an empty payload
        st.binary(max_size=10),
    )


@given(tables(), mysql_tail(), st.integers(0, 10), st.integers(0, 255), st.booleans(), st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mysql_rewrite_matches_today_and_c(
    table: tuple[list[str], list[list[Value]]],
    tail: bytes,
    limit: int,
    seq: int,
    deprecate_eof: bool,
    data: st.DataObject,
) -> None:
    kinds, table_rows = table
    if all(k == "pass" for k in kinds):
        kinds[0] = "id_card"
    tallies: list[Tally] = []
    maskers = maskers_for(kinds, tallies)
    payloads = [mysql_row(r) for r in table_rows]
    frames = [mysql_frame(seq + i, pl) for i, pl in enumerate(payloads)]
    if len(tail) >= 4 and data.draw(st.booleans(), label="tail in sequence"):
        tail = tail[:3] + bytes(((seq + len(frames)) & 0xFF,)) + tail[4:]
    chunk = b"".join(frames) + tail
    eof_limit = 0xFFFFFF if deprecate_eof else 9
    result, out, got_tallies = both(maskers, tallies, True, chunk, 0, len(chunk), limit, seq, eof_limit)
    pos, nrows, masked, next_seq = result
    take = min(limit, len(frames))
    assert nrows >= take
    assert next_seq == (seq + nrows) & 0xFF
    for t in tallies:
        t.reset()
    expected = bytearray()
    expected_masked = 0
    for i, pl in enumerate(payloads[:take]):
        row, m = mask_text_row(pl, maskers)
        expected += mysql_frame(seq + i, row)
        expected_masked += m
    if nrows == take:
        assert pos == sum(len(f) for f in frames[:take])
        assert out == bytes(expected)
        assert masked == expected_masked
        assert got_tallies == [t.total for t in tallies]
    else:  # the tail happened to be a well-formed row
        assert take == len(frames)
        assert nrows == take + 1
        assert out.startswith(bytes(expected))


def test_mysql_rewrite_stops_at_what_it_does_not_own() -> None:
    tallies: list[Tally] = []
    maskers = maskers_for(["mobile", "pass"], tallies)
    good = mysql_row([b"13812341234", b"x"])
    cases: dict[str, tuple[bytes, int]] = {
        "EOF": (b"\xfe\x00\x00\x02\x00", 9),
        "OK as EOF": (b"\xfe\x00\x00\x02\x00\x00\x00", 0xFFFFFF),
        "ERR": (b"\xff\x15\x04#28000no", 9),
        "empty": (b"", 9),
        "bad lenenc": (b"\xff\x01", 0xFFFFFF),
        "value past the end": (b"\x05ab", 9),
        "too few values": (b"\x0b13812341234", 9),
        "bytes after the values": (good + b"\x00", 9),
        "short 0xFC": (b"\xfc\x01", 9),
    }
    for what, (bad, eof_limit) in cases.items():
        chunk = mysql_frame(7, good) + mysql_frame(8, bad) + mysql_frame(9, good)
        (pos, n, masked, seq), out, _ = both(maskers, tallies, True, chunk, 0, len(chunk), 10, 7, eof_limit)
        assert (pos, n, masked, seq) == (len(good) + 4, 1, 1, 8), what
        assert out == mysql_frame(7, mask_text_row(good, maskers)[0])
    # A packet numbered out of turn, and a 16 MiB piece, are left to the relay too.
    chunk = mysql_frame(7, good) + mysql_frame(9, good)
    assert both(maskers, tallies, True, chunk, 0, len(chunk), 10, 7, 9)[0][:2] == (len(good) + 4, 1)
    chunk = mysql_frame(7, good) + b"\xff\xff\xff\x08" + b"\x01"
    assert both(maskers, tallies, True, chunk, 0, len(chunk), 10, 7, 9)[0][:2] == (len(good) + 4, 1)


def test_mysql_rewrite_long_values_and_lenenc_widths() -> None:
    tallies: list[Tally] = []
    maskers = maskers_for(["keep(first=2,last=3)", "pass", "reverse"], tallies)
    for n in (0, 250, 251, 0xFFFF, 0x10000, 70_000):
        payload = mysql_row([b"a" * n, b"b" * n, b"c" * n])
        chunk = mysql_frame(1, payload)
        (pos, nrows, _, _), out, _ = both(maskers, tallies, True, chunk, 0, len(chunk), 5, 1, 9)
        assert (pos, nrows) == (len(chunk), 1)
        assert out == mysql_frame(1, mask_text_row(payload, maskers)[0])
    # 0xFD widths in PostgreSQL too
    program = rows.compile_columns(maskers)
    assert program is not None
    row = p.encode_data_row([b"a" * 70_000, None, b"c"])
    pg_out = bytearray()
    assert program.rewrite_pg(row, 0, len(row), pg_out, limit=1, max_length=1 << 20)[:2] == (len(row), 1)
    assert bytes(pg_out) == pg_today([row], maskers)[0]


def test_mysql_rewrite_refuses_to_grow_a_row_into_pieces() -> None:
    """A row that masking would grow to 0xFFFFFF bytes is left to the relay, which splits it."""

    size = 0xFFFFFF - 4  # with its 4-byte length prefix the payload is exactly 0xFFFFFF bytes

    def grow(value: bytes | None) -> bytes:
        return b"g" * size

    chunk = mysql_frame(3, mysql_row([b"x"]))
    tallies: list[Tally] = []
    (pos, nrows, _, seq), out, _ = both([grow], tallies, True, chunk, 0, len(chunk), 5, 3, 9)
    assert (pos, nrows, seq, out) == (0, 0, 3, b"")
    size -= 1  # one byte less fits in one packet
    (pos, nrows, _, seq), out, _ = both([grow], tallies, True, chunk, 0, len(chunk), 5, 3, 9)
    assert (pos, nrows, seq, len(out)) == (len(chunk), 1, 4, 4 + 0xFFFFFE)


# --- errors, reference counts, memory ---------------------------------------------------


class Boom(ValueError):
    pass


def test_masker_errors_propagate_and_leave_out_unchanged() -> None:
    calls = []

    def bad(value: bytes | None) -> bytes | None:
        calls.append(value)
        if value == b"boom":
            raise Boom("no")
        return value

    tally = Tally()
    mobile = planner_masker("mobile", tally)
    chunk = b"".join(p.encode_data_row([b"13812341234", v]) for v in (b"ok", b"boom", b"never"))
    impls: list[Callable[..., Any]] = [rowref.pg_rewrite] + ([FAST.pg_rewrite] if FAST is not None else [])
    for impl in impls:
        tally.reset()
        calls.clear()
        program = rows.compile_columns([mobile, bad])
        assert program is not None
        out = bytearray(b"before")
        with pytest.raises(Boom):
            impl(chunk, 0, len(chunk), program.columns, 10, 1 << 20, out)
        assert out == b"before"
        assert calls == [b"ok", b"boom"]
        assert tally.total == 0  # the compiled operations' count is added only on success

    def wrong_type(v: bytes | None) -> Any:
        return "text"

    for impl in impls:
        out = bytearray()
        with pytest.raises(TypeError):
            impl(chunk, 0, len(chunk), (None, (rowref.OP_CALL, 0, 0, wrong_type, None)), 10, 1 << 20, out)
        assert out == b""


def test_a_tally_emptied_by_a_masker_is_an_error_both_ways() -> None:
    tally: list[int] = [0]

    def empties(value: bytes | None) -> bytes | None:
        tally.clear()
        return value

    chunk = p.encode_data_row([b"13812341234", b"x"])
    impls: list[Callable[..., Any]] = [rowref.pg_rewrite] + ([FAST.pg_rewrite] if FAST is not None else [])
    for impl in impls:
        tally[:] = [0]
        out = bytearray(b"o")
        columns = ((rowref.OP_MOBILE, 0, 0, _reverse, tally), (rowref.OP_CALL, 0, 0, empties, None))
        with pytest.raises(IndexError):
            impl(chunk, 0, len(chunk), columns, 10, 1 << 20, out)
        assert out == b"o"


@pytest.mark.parametrize(
    "columns",
    [
        (),
        ((99, 0, 0, _reverse, None),),
        ((rowref.OP_KEEP, -1, 0, _reverse, None),),
        ((rowref.OP_KEEP, 0, rowref.MAX_KEEP + 1, _reverse, None),),
        ((rowref.OP_CALL, 0, 0, "not callable", None),),
        ((rowref.OP_FULL, 0, 0, _reverse, []),),
        ((rowref.OP_FULL, 0, 0),),
        ([rowref.OP_FULL, 0, 0, _reverse, None],),
    ],
)
def test_bad_programs_are_refused(columns: tuple[Any, ...]) -> None:
    impls: list[Callable[..., Any]] = [rowref.pg_rewrite] + ([FAST.pg_rewrite] if FAST is not None else [])
    chunk = p.encode_data_row([b"x"])
    for impl in impls:
        with pytest.raises((TypeError, ValueError)):
            impl(chunk, 0, len(chunk), columns, 1, 100, bytearray())


@pytest.mark.parametrize(("pos", "end"), [(-1, 5), (3, 2), (0, 10_000)])
def test_bad_ranges_are_refused(pos: int, end: int) -> None:
    impls: list[Callable[..., Any]] = [rowref.pg_rewrite] + ([FAST.pg_rewrite] if FAST is not None else [])
    chunk = p.encode_data_row([b"x"])
    for impl in impls:
        with pytest.raises(ValueError, match="pos and end"):
            impl(chunk, pos, end, ((rowref.OP_FULL, 0, 0, _reverse, None),), 1, 100, bytearray())


@needs_c
def test_no_reference_or_memory_leaks() -> None:
    """Many calls, including failing ones: traced memory stays flat."""
    assert FAST is not None
    tally = Tally()
    maskers = [None, planner_masker("mobile", tally), planner_masker("email", tally), _reverse]
    program = rows.compile_columns(maskers)
    assert program is not None
    table: list[list[Value]] = [
        [b"1", b"13812341234", "张@例子.中国".encode(), b"abc"],
        [None, "１３８".encode(), None, None],
    ]
    chunk = bytearray(b"".join(p.encode_data_row(r) for r in table) * 50)
    mchunk = b"".join(mysql_frame(i, mysql_row(r)) for i, r in enumerate(table * 50))
    failing = ((rowref.OP_CALL, 0, 0, lambda v: 1 / 0, None),)
    types = [int(FieldType.VAR_STRING)] * 4
    layout = rows.binary_layout(types)
    bchunk = b"".join(mysql_frame(i, encode_binary_row(r, types)) for i, r in enumerate(table * 50))

    def work() -> None:
        out = bytearray()
        FAST.pg_rewrite(chunk, 0, len(chunk), program.columns, 1 << 30, 1 << 20, out)
        FAST.mysql_rewrite(mchunk, 0, len(mchunk), program.columns, 1 << 30, 0, 9, out)
        FAST.mysql_binary_rewrite(bchunk, 0, len(bchunk), program.columns, layout, 1 << 30, 0, 9, out)
        with pytest.raises(ZeroDivisionError):
            FAST.mysql_binary_rewrite(bchunk, 0, len(bchunk), failing * 4, layout, 10, 0, 9, out)
        with pytest.raises(ZeroDivisionError):
            FAST.pg_rewrite(chunk, 0, len(chunk), failing * 4, 10, 1 << 20, out)
        with pytest.raises(TypeError):
            FAST.pg_rewrite(chunk, 0, len(chunk), (None, None, None, (1, 0, 0, 5, None)), 10, 1 << 20, out)

    for _ in range(200):
        work()
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(200):
            work()
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(800):
            work()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - base < 64 * 1024, f"traced memory grew by {after - base} bytes"
    assert tally.total > 0


def test_the_source_buffer_cannot_be_resized_by_a_masker() -> None:
    chunk = bytearray(p.encode_data_row([b"abc"]) * 3)

    def resize(v: bytes | None) -> bytes:
        chunk.extend(b"x" * 100)
        return b"v"

    impls: list[Callable[..., Any]] = [FAST.pg_rewrite] if FAST is not None else []
    for impl in impls:
        out = bytearray()
        with pytest.raises(BufferError):
            impl(chunk, 0, len(chunk), ((rowref.OP_CALL, 0, 0, resize, None),), 10, 1 << 20, out)
        assert out == b""


# --- the planner's side -----------------------------------------------------------------


def test_program_columns_follow_the_planner_maskers() -> None:
    tally = Tally()
    maskers = [
        None,
        planner_masker("mobile", tally),
        planner_masker("id_card", tally),
        planner_masker("bank_card", tally),
        planner_masker("full", tally),
        planner_masker("email", tally),
        planner_masker("chinese_name", tally),
        planner_masker("mobile", tally, encoding="gb18030"),  # not UTF-8: no in-place operation
        planner_masker("address", tally),  # no ASCII operation
        _reverse,
    ]
    program = rows.compile_columns(maskers)
    assert program is not None
    codes = [None if e is None else e[:3] for e in program.columns]
    assert codes == [
        None,
        (rowref.OP_MOBILE, 0, 0),
        (rowref.OP_KEEP, 6, 4),
        (rowref.OP_KEEP_DIGITS, 6, 4),
        (rowref.OP_FULL, 0, 0),
        (rowref.OP_EMAIL, 0, 0),
        (rowref.OP_NAME, 0, 0),
        (rowref.OP_CALL, 0, 0),
        (rowref.OP_CALL, 0, 0),
        (rowref.OP_CALL, 0, 0),
    ]
    assert program.masked_columns == 9
    assert rows.compile_columns([None, None]) is None
    assert rows.compile_columns([]) is None


def test_program_for_caches_per_plan_and_refuses_nothing_silently() -> None:
    tally = Tally()
    plan = MaskPlan(columns=(None, planner_masker("mobile", tally)), functions=(None, "mobile"))
    first = rows.program_for(plan)
    assert first is not None
    assert rows.program_for(plan) is first
    assert rows.program_for(MaskPlan(refuse="no")) is None
    assert rows.program_for(MaskPlan(columns=(None,))) is None


def test_compiled_counts_reach_the_metric_in_batches() -> None:
    tally = Tally()
    program = rows.compile_columns([planner_masker("mobile", tally)])
    assert program is not None
    chunk = b"".join(p.encode_data_row([b"13812341234"]) for _ in range(300))
    out = bytearray()
    program.rewrite_pg(chunk, 0, len(chunk), out, limit=1000, max_length=1 << 20)
    assert tally.child.total == 300  # flushed: 300 >= TALLY_FLUSH
    assert tally.count[0] == 0
    program.rewrite_pg(chunk, 0, len(p.encode_data_row([b"13812341234"])) * 5, out, limit=1000, max_length=1 << 20)
    assert tally.total == 305
    assert tally.count[0] == 5


# --- garbage ----------------------------------------------------------------------------


@st.composite
def garbage_chunks(draw: st.DrawFn) -> bytes:
    """Row-shaped bytes with random lengths, counts and types mixed in, or plain noise."""
    pieces = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            pieces.append(draw(st.binary(max_size=16)))
        elif kind == 1:  # a DataRow header with any length and count, then anything
            pieces.append(
                b"D"
                + struct.pack("!iH", draw(st.integers(-(2**31), 2**31 - 1)), draw(st.integers(0, 65535)))
                + draw(st.binary(max_size=12))
            )
        elif kind == 2:  # a field with any length
            pieces.append(struct.pack("!i", draw(st.integers(-(2**31), 2**31 - 1))) + draw(st.binary(max_size=8)))
        else:  # a MySQL header with any length and sequence id, then lenenc-ish bytes
            n = draw(st.integers(0, 0xFFFFFF))
            pieces.append(n.to_bytes(3, "little") + bytes((draw(st.integers(0, 255)),)))
            pieces.append(bytes(draw(st.lists(st.sampled_from([0, 1, 5, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF]), max_size=6))))
    return b"".join(pieces)


@given(garbage_chunks(), st.lists(st.sampled_from(KINDS), min_size=1, max_size=3), st.integers(0, 255), st.data())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_garbage_gives_the_same_answer_and_never_crashes(
    chunk: bytes, kinds: list[str], seq: int, data: st.DataObject
) -> None:
    if all(k == "pass" for k in kinds):
        kinds[0] = "full"
    tallies: list[Tally] = []
    maskers = maskers_for(kinds, tallies)
    pos = data.draw(st.integers(0, len(chunk)), label="pos")
    end = data.draw(st.integers(pos, len(chunk)), label="end")
    for buffer in (chunk, bytearray(chunk), memoryview(chunk)):
        (p_pos, _, _), _, _ = both(maskers, tallies, False, buffer, pos, end, 100, 1 << 20)
        assert pos <= p_pos <= end
        (m_pos, m_rows, _, m_seq), _, _ = both(maskers, tallies, True, buffer, pos, end, 100, seq, 9)
        assert pos <= m_pos <= end
        assert m_seq == (seq + m_rows) & 0xFF
    # The same bytes as binary rows, with any layout per column.
    layout = tuple(data.draw(st.lists(st.integers(-2, 8), min_size=len(kinds), max_size=len(kinds)), label="layout"))
    program = rows.compile_columns(maskers)
    assert program is not None
    answers = []
    impls: list[Callable[..., Any]] = [rowref.mysql_binary_rewrite]
    if FAST is not None:
        impls.append(FAST.mysql_binary_rewrite)
    for impl in impls:
        for t in tallies:
            t.reset()
        out = bytearray()
        result = impl(chunk, pos, end, program.columns, layout, 100, seq, 9, out)
        answers.append((result, bytes(out), [t.total for t in tallies]))
    assert all(a == answers[0] for a in answers)
    assert pos <= answers[0][0][0] <= end


# --- MySQL binary rows ------------------------------------------------------------------

BINARY_TYPES = {
    FieldType.LONGLONG: 8,
    FieldType.LONG: 4,
    FieldType.SHORT: 2,
    FieldType.TINY: 1,
    FieldType.DOUBLE: 8,
    FieldType.NULL: 0,
    FieldType.DATE: -1,
    FieldType.DATETIME: -1,
    FieldType.TIME: -1,
    FieldType.VAR_STRING: -2,
    FieldType.BLOB: -2,
    FieldType.NEWDECIMAL: -2,
}


def _same_width(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(len(value))  # zeros, keeping the width


def _widen(value: bytes | None) -> bytes | None:
    return None if value is None else value + b"!"  # does not fit a fixed or full temporal layout


@st.composite
def binary_tables(draw: st.DrawFn) -> tuple[list[int], list[ColumnMasker | None], list[list[Value]], list[Tally]]:
    ncols = draw(st.integers(1, 12))
    types = draw(st.lists(st.sampled_from(list(BINARY_TYPES)), min_size=ncols, max_size=ncols))
    tallies: list[Tally] = []
    maskers: list[ColumnMasker | None] = []
    for _ in types:
        choice = draw(st.sampled_from(["pass", "same", "widen", "nulls", "planner"]))
        if choice == "pass":
            maskers.append(None)
        elif choice == "same":
            maskers.append(_same_width)
        elif choice == "widen":
            maskers.append(_widen)
        elif choice == "nulls":
            maskers.append(_nulls)
        else:
            tally = Tally()
            tallies.append(tally)
            maskers.append(planner_masker(draw(st.sampled_from(["mobile", "email", "full", "chinese_name"])), tally))
    if all(m is None for m in maskers):
        maskers[0] = _same_width
    table = []
    for _ in range(draw(st.integers(0, 6))):
        row: list[Value] = []
        for t in types:
            width = BINARY_TYPES[t]
            if draw(st.integers(0, 4)) == 0:
                row.append(None)
            elif width >= 0:
                row.append(draw(st.binary(min_size=width, max_size=width)))
            elif width == -1:
                row.append(draw(st.sampled_from([b"", b"\x07\xd0\x01\x02", bytes(7), bytes(11), bytes(12)])))
            else:
                row.append(draw(values.filter(lambda v: v is not None)))
        table.append(row)
    return [int(t) for t in types], maskers, table, tallies


@given(binary_tables(), st.integers(0, 8), st.integers(0, 255), st.sampled_from([b"", b"\xfe\x00\x00\x02\x00"]))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mysql_binary_rewrite_matches_mask_binary_row_and_c(
    table: tuple[list[int], list[ColumnMasker | None], list[list[Value]], list[Tally]],
    limit: int,
    seq: int,
    tail: bytes,
) -> None:
    types, maskers, table_rows, tallies = table
    payloads = [encode_binary_row(r, types) for r in table_rows]
    chunk = b"".join(mysql_frame(seq + i, pl) for i, pl in enumerate(payloads))
    if tail:
        chunk += mysql_frame(seq + len(payloads), tail)
    program = rows.compile_columns(maskers)
    assert program is not None
    layout = rows.binary_layout(types)
    impls: list[Callable[..., Any]] = [rowref.mysql_binary_rewrite]
    if FAST is not None:
        impls.append(FAST.mysql_binary_rewrite)
    answers = []
    for impl in impls:
        for t in tallies:
            t.reset()
        out = bytearray(b"kept")
        result = impl(chunk, 0, len(chunk), program.columns, layout, limit, seq, 9, out)
        answers.append((result, bytes(out[4:]), [t.total for t in tallies]))
    assert all(a == answers[0] for a in answers)
    (pos, nrows, masked, next_seq), out_bytes, got_tallies = answers[0]
    assert next_seq == (seq + nrows) & 0xFF
    # Today's path, row by row, up to the limit or the first row it refuses.
    for t in tallies:
        t.reset()
    expected = bytearray()
    expected_masked = 0
    done = 0
    for i, pl in enumerate(payloads[:limit]):
        try:
            row, m = mask_binary_row(pl, types, maskers)
        except LocalProtocolError:
            break
        expected += mysql_frame(seq + i, row)
        expected_masked += m
        done += 1
    assert nrows == done
    assert out_bytes == bytes(expected)
    assert masked == expected_masked
    assert pos == sum(len(pl) + 4 for pl in payloads[:done])
    if done == min(limit, len(payloads)):
        assert got_tallies == [t.total for t in tallies]
