"""How fast can Python rewrite masked PostgreSQL DataRows? The per-row cost, measured in process.

The masked-scan benchmark (1M rows, 2 of 4 columns masked) spends 5–6 µs of
sqlbastion CPU per row. This script separates that cost without sockets:

* ``floor``   — only splitting a chunk of backend bytes into DataRow frames
  (what the relay must do at the least for a masked result);
* ``current`` — what ``QueryRelay._data_row`` does per row today:
  ``decode_data_row`` → the column maskers → ``encode_data_row``;
* ``chunked`` — a reference loop over a whole received chunk: field lengths
  read with ``struct.unpack_from``, columns that pass through copied as byte
  ranges without being decoded, only the masked columns cut out and passed to
  their maskers, one ``bytes.join`` for the chunk;
* ``compiled`` — what the relay runs now: ``masking.rows.RowProgram.rewrite_pg``
  with the C extension (``sqlbastion._rowfast``), the planner's maskers
  compiled to their built-in ASCII operations;
* ``rowref`` — the same call on the pure-Python reference (``masking.rowref``),
  the path taken when the extension is not built.

The maskers are the real ones (``masking.functions`` through
``masking.wire.build_converter``). ``chunked`` is checked to produce exactly
the bytes ``current`` produces before anything is timed.

Run: ``.venv/bin/python bench/rows_bench.py [--rows 200000] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlbastion.masking import rowref
from sqlbastion.masking.functions import build_function
from sqlbastion.masking.plan import _counted
from sqlbastion.masking.rows import IMPLEMENTATION, RowProgram, compile_columns
from sqlbastion.masking.wire import ascii_fast_op, build_converter
from sqlbastion.proxy.mysql.framing import frame_into
from sqlbastion.proxy.mysql.rows import encode_text_row, mask_text_row
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.session import ColumnMasker

Masker = Callable[[bytes], bytes | None]

_HEAD = struct.Struct("!cI")  # message type byte, Int32 length including itself (§55.7)
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")


def sample_rows(n: int) -> bytes:
    """``n`` DataRow messages shaped like the bench_mask table: id, mobile, id_card, city."""
    cities = (b"Beijing", b"Shanghai", b"Shenzhen", b"Hangzhou")
    out = []
    for i in range(1, n + 1):
        values = [
            str(i).encode(),
            b"138%08d" % i,
            b"110101%08d%04d" % (19700101 + i % 20000, i % 10000),
            cities[i % 4],
        ]
        out.append(p.encode_data_row(values))
    return b"".join(out)


def split_frames(chunk: bytes) -> list[bytes]:
    """The floor: cut a chunk into whole messages (bodies not looked at)."""
    frames = []
    pos, end = 0, len(chunk)
    unpack = _HEAD.unpack_from
    while pos + 5 <= end:
        _, length = unpack(chunk, pos)
        nxt = pos + 1 + length
        if nxt > end:
            break
        frames.append(chunk[pos:nxt])
        pos = nxt
    return frames


def rewrite_current(frames: Sequence[bytes], maskers: Sequence[Masker | None]) -> bytes:
    """Today's path, row by row (QueryRelay._data_row without its bookkeeping)."""
    out = bytearray()
    for frame in frames:
        values = p.decode_data_row(frame[5:])
        for i, masker in enumerate(maskers):
            if masker is not None:
                values[i] = masker(values[i])  # type: ignore[arg-type]  # the sample has no NULLs
        out += p.encode_data_row(values)
    return bytes(out)


def rewrite_chunked(chunk: bytes, maskers: Sequence[Masker | None]) -> tuple[bytes, int]:
    """A whole chunk of DataRows at once; returns the rewritten bytes and where the unparsed tail starts.

    Fields are walked with ``struct.unpack_from`` on the chunk itself; runs of
    pass-through columns are copied as one slice, only masked columns become
    ``bytes`` objects for their maskers, and the row's header is written once
    its new length is known.
    """
    unpack_head, unpack_i32 = _HEAD.unpack_from, _I32.unpack_from
    pack_i32, pack_head = _I32.pack, _HEAD.pack
    ncols = len(maskers)
    count = _I16.pack(ncols)
    columns = tuple(enumerate(maskers))
    out: list[bytes] = []
    append = out.append
    pos, end = 0, len(chunk)
    while pos + 5 <= end:
        kind, length = unpack_head(chunk, pos)
        nxt = pos + 1 + length
        if nxt > end:
            break
        if kind != b"D":
            append(chunk[pos:nxt])  # not a row: relayed as it is
            pos = nxt
            continue
        if chunk[pos + 5 : pos + 7] != count:
            raise ValueError("DataRow does not match its RowDescription")
        q = copy_from = pos + 7
        parts: list[bytes] = []
        for _i, masker in columns:
            (flen,) = unpack_i32(chunk, q)
            vend = q + 4 + (flen if flen > 0 else 0)
            if masker is not None:
                if q > copy_from:
                    parts.append(chunk[copy_from:q])  # the untouched columns before this one
                new = masker(chunk[q + 4 : vend]) if flen >= 0 else None
                if new is None:
                    parts.append(b"\xff\xff\xff\xff")
                else:
                    parts.append(pack_i32(len(new)))
                    parts.append(new)
                copy_from = vend
            q = vend
        if q != nxt:
            raise ValueError("DataRow length does not match its fields")
        if copy_from < nxt:
            parts.append(chunk[copy_from:nxt])
        body = b"".join(parts)
        append(pack_head(b"D", len(body) + 6))
        append(count)
        append(body)
        pos = nxt
    return b"".join(out), pos


def _time(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def run(rows: int) -> dict[str, float]:
    maskers = _maskers()
    mobile, id_card = maskers[1], maskers[2]
    if mobile is None or id_card is None:  # cannot happen: _maskers masks these two
        raise SystemExit("rows_bench: no maskers for mobile and id_card")
    chunk = sample_rows(rows)
    frames = split_frames(chunk)
    reference = rewrite_current(frames, maskers)
    rewritten, tail = rewrite_chunked(chunk, maskers)
    if rewritten != reference or tail != len(chunk):
        raise SystemExit("rows_bench: the chunked rewrite differs from the current one")
    program = compile_columns(_planner_maskers())
    if program is None:  # cannot happen: two columns are masked
        raise SystemExit("rows_bench: no row program")
    compiled = _compiled(chunk, program)
    if compiled != reference or _reference(chunk, program) != reference:
        raise SystemExit("rows_bench: the compiled rewrite differs from the current one")
    per_row = 1e6 / rows
    floor = _time(lambda: split_frames(chunk)) * per_row
    current = _time(lambda: rewrite_current(split_frames(chunk), maskers)) * per_row
    chunked = _time(lambda: rewrite_chunked(chunk, maskers)) * per_row
    maskers_only = _time(lambda: [(mobile(b"13800000001"), id_card(b"110101197001020001")) for _ in range(rows)])
    result = {
        "rows": rows,
        "floor_us_per_row": round(floor, 3),
        "current_us_per_row": round(current, 3),
        "chunked_us_per_row": round(chunked, 3),
        "maskers_only_us_per_row": round(maskers_only * per_row, 3),
        "rowref_us_per_row": round(_time(lambda: _reference(chunk, program)) * per_row, 3),
    }
    if IMPLEMENTATION == "c":
        result["compiled_us_per_row"] = round(_time(lambda: _compiled(chunk, program)) * per_row, 3)
    result.update(_mysql(rows, program))
    return result


def _mysql(rows: int, program: RowProgram) -> dict[str, float]:
    """The same rows as MySQL text-protocol packets: ``mask_text_row`` per packet, then the compiled path."""
    payloads = [encode_text_row(p.decode_data_row(frame[5:])) for frame in split_frames(sample_rows(rows))]
    packets = b"".join(len(pl).to_bytes(3, "little") + bytes((i & 0xFF,)) + pl for i, pl in enumerate(payloads))
    maskers = _planner_maskers()

    def per_packet() -> bytes:
        out = bytearray()
        for i, pl in enumerate(payloads):
            row, _ = mask_text_row(pl, maskers)
            frame_into(out, i & 0xFF, row)
        return bytes(out)

    def chunked() -> bytes:
        out = bytearray()
        pos, seq = 0, 0
        while pos < len(packets):
            stop = min(len(packets), pos + _CHUNK)
            new, _, _, seq = program.rewrite_mysql(packets, pos, stop, out, limit=1 << 62, seq=seq, eof_limit=9)
            if new == pos:
                break
            pos = new
        return bytes(out)

    if chunked() != per_packet():
        raise SystemExit("rows_bench: the MySQL rewrite differs from mask_text_row")
    per_row = 1e6 / rows
    key = "mysql_compiled_us_per_row" if IMPLEMENTATION == "c" else "mysql_rowref_us_per_row"
    return {
        "mysql_current_us_per_row": round(_time(per_packet) * per_row, 3),
        key: round(_time(chunked) * per_row, 3),
    }


_CHUNK = 65536  # what one socket read brings, about


def _compiled(chunk: bytes, program: RowProgram) -> bytes:
    """The relay's path: one ``rewrite_pg`` call per received chunk of about ``_CHUNK`` bytes."""
    out = bytearray()
    pos = 0
    while pos < len(chunk):
        stop = min(len(chunk), pos + _CHUNK)
        new, _, _ = program.rewrite_pg(chunk, pos, stop, out, limit=1 << 62, max_length=1 << 30)
        if new == pos:
            break
        pos = new
    return bytes(out)


def _reference(chunk: bytes, program: RowProgram) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(chunk):
        stop = min(len(chunk), pos + _CHUNK)
        new, _, _ = rowref.pg_rewrite(chunk, pos, stop, program.columns, 1 << 62, 1 << 30, out)
        if new == pos:
            break
        pos = new
    return bytes(out)


def _planner_maskers() -> list[ColumnMasker | None]:
    """The same two masks as the planner builds them (counted, with their ASCII operations)."""

    def text(name: str) -> ColumnMasker:
        fn = build_function(name)
        convert = build_converter(fn, dialect="postgres", type_name="bpchar", binary=False, encoding="utf-8")
        op = ascii_fast_op(fn, dialect="postgres", type_name="bpchar", encoding="utf-8")
        return _counted(convert, [0], _NoMetric(), op)

    return [None, text("mobile"), text("id_card"), None]


class _NoMetric:
    def inc(self, amount: float = 1) -> None:
        pass


def _profile(rows: int) -> int:
    """Where today's per-row time goes, as a call tree (pyinstrument, a development dependency)."""
    from pyinstrument import Profiler

    maskers = _maskers()
    chunk = sample_rows(rows)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    rewrite_current(split_frames(chunk), maskers)
    profiler.stop()
    sys.stdout.write(profiler.output_text(unicode=True, color=False))
    return 0


def _maskers() -> list[Masker | None]:
    """id and city pass through; mobile and id_card get the real masking functions, as for bench_mask."""

    def text(name: str) -> Masker:
        return build_converter(
            build_function(name), dialect="postgres", type_name="bpchar", binary=False, encoding="utf-8"
        )

    return [None, text("mobile"), text("id_card"), None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print pyinstrument's call tree of today's path")
    args = parser.parse_args(argv)
    if args.profile:
        return _profile(args.rows)
    result = run(args.rows)
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    sys.stdout.write(
        f"PostgreSQL DataRow rewrite, 4 columns, 2 masked, {result['rows']:,} rows (µs per row, best of 5):\n"
        f"  split into frames only : {result['floor_us_per_row']:.2f}\n"
        f"  the two maskers only   : {result['maskers_only_us_per_row']:.2f}\n"
        f"  current (decode/encode): {result['current_us_per_row']:.2f}\n"
        f"  chunked reference loop : {result['chunked_us_per_row']:.2f}\n"
        f"  rowref (pure Python)   : {result['rowref_us_per_row']:.2f}\n"
        f"  compiled (C extension) : {result.get('compiled_us_per_row', float('nan')):.2f}\n"
        f"MySQL text rows, the same table (µs per row):\n"
        f"  mask_text_row per packet: {result['mysql_current_us_per_row']:.2f}\n"
        f"  chunk at a time ({IMPLEMENTATION})  : "
        f"{result.get('mysql_compiled_us_per_row', result.get('mysql_rowref_us_per_row', float('nan'))):.2f}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
