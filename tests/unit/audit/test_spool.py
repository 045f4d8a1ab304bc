"""Spool segments: rotation, readers across segments, release once every required sink is past."""

from __future__ import annotations

from pathlib import Path

from sqlbastion.audit.chain import list_segments
from sqlbastion.audit.spool import Spool, SpoolReader

from .conftest import SECRET, statement, verify


def _open(spool_dir: Path, **kw: int) -> Spool:
    spool = Spool(spool_dir, secret=SECRET, **kw)  # type: ignore[arg-type]  # only int settings are passed
    spool.open()
    return spool


def test_segments_rotate_past_segment_bytes(spool_dir: Path) -> None:
    spool = _open(spool_dir, segment_bytes=3000)
    for i in range(100):
        spool.append([statement(i)])
    spool.close()
    segments = list_segments(spool_dir)
    assert len(segments) > 5
    for _, path in segments:
        assert path.stat().st_size < 3000 + 600  # rotated once past the limit, by at most one batch
    assert verify(spool_dir).ok


def test_a_reader_sees_every_event_once_across_segments(spool_dir: Path) -> None:
    spool = _open(spool_dir, segment_bytes=2500)
    reader = SpoolReader(spool_dir, -1)
    seen: list[str] = []
    for i in range(60):
        spool.append([statement(i)])
        if i % 7 == 0:
            records, _ = reader.read(spool.written_seq, 5)
            seen.extend(r.event["event_id"] for r in records)
    spool.close()
    while True:
        records, _ = reader.read(spool.written_seq, 1000)
        if not records:
            break
        seen.extend(r.event["event_id"] for r in records)
    assert seen == [statement(i)["event_id"] for i in range(60)]


def test_a_reader_never_reads_past_the_written_limit(spool_dir: Path) -> None:
    spool = _open(spool_dir)
    spool.append([statement(i) for i in range(10)])
    reader = SpoolReader(spool_dir, -1)
    records, cursor = reader.read(5, 1000)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert cursor == 5
    records, cursor = reader.read(spool.written_seq, 1000)
    assert [r.seq for r in records] == [6, 7, 8, 9, 10]
    spool.close()


def test_a_reader_resumes_from_a_cursor_in_an_older_segment(spool_dir: Path) -> None:
    spool = _open(spool_dir, segment_bytes=2000)
    for i in range(40):
        spool.append([statement(i)])
    spool.close()
    reader = SpoolReader(spool_dir, 17)
    records, _ = reader.read(spool.written_seq, 1000)
    assert records[0].seq > 17
    assert len({r.seq for r in records}) == len(records)
    assert records[-1].event["event_id"] == statement(39)["event_id"]


def test_release_deletes_only_segments_every_record_of_which_is_acknowledged(spool_dir: Path) -> None:
    spool = _open(spool_dir, segment_bytes=2000)
    for i in range(40):
        spool.append([statement(i)])
    segments = list_segments(spool_dir)
    assert len(segments) >= 4
    before = spool.bytes_used()
    second_start = segments[1][0]
    freed = spool.release(second_start)  # the first segment is wholly acknowledged, the second is not
    assert freed > 0
    assert spool.bytes_used() == before - freed
    remaining = list_segments(spool_dir)
    assert remaining[0][0] == second_start
    spool.release(10**9)  # everything acknowledged: the live segment stays
    remaining = list_segments(spool_dir)
    assert len(remaining) == 1
    spool.close()
    report = verify(spool_dir)
    assert report.ok, report.describe()  # verification starts at the oldest kept segment


def test_spool_files_are_private(spool_dir: Path) -> None:
    spool = Spool(spool_dir)  # no configured secret: a key is generated beside the spool
    spool.open()
    spool.append([statement(1)])
    spool.close()
    assert (spool_dir / "chain.key").stat().st_mode & 0o077 == 0
    assert (spool_dir / "chain.state").stat().st_mode & 0o077 == 0
    for _, path in list_segments(spool_dir):
        assert path.stat().st_mode & 0o077 == 0


def test_a_reader_hands_sinks_the_mac_as_written_and_checks_a_changed_one(spool_dir: Path) -> None:
    """The reader copies a record's lowercase-hex MAC into the event's chain field; a MAC field that
    is not lowercase hex (upper case, a quote that would break the event's JSON) is decoded by
    split_record, which normalises it or refuses the record."""
    import json

    import pytest

    spool = _open(spool_dir)
    spool.append([statement(i) for i in range(3)])
    spool.close()
    _, path = list_segments(spool_dir)[0]
    lines = path.read_bytes().split(b"\n")
    macs = [line.rpartition(b"\t")[2].decode("ascii") for line in lines[1:4]]
    records, _ = SpoolReader(spool_dir, -1).read(3, 10)
    assert [json.loads(r.json)["chain"] for r in records] == [{"seq": i + 1, "mac": macs[i]} for i in range(3)]

    lines[1] = lines[1][:-64] + lines[1][-64:].upper()
    path.write_bytes(b"\n".join(lines))
    records, _ = SpoolReader(spool_dir, -1).read(3, 10)
    assert json.loads(records[0].json)["chain"]["mac"] == macs[0]

    lines[2] = lines[2][:-64] + b'"' + lines[2][-63:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError):
        SpoolReader(spool_dir, -1).read(3, 10)
