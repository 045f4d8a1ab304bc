"""The chain and its verifier: each kind of tampering is caught and named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sqlbastion.audit.chain import list_segments
from sqlbastion.audit.spool import Spool

from .conftest import SECRET, statement, verify, write_spool


def _segment_lines(directory: Path, index: int = 0) -> tuple[Path, list[bytes]]:
    path = list_segments(directory)[index][1]
    return path, path.read_bytes().splitlines(keepends=True)


def test_an_untouched_spool_verifies(spool_dir: Path) -> None:
    write_spool(spool_dir, 20)
    report = verify(spool_dir)
    assert report.ok, report.describe()
    assert report.events == 20
    assert report.records == 22  # start + 20 events + end


def test_a_modified_byte_is_reported_as_modified(spool_dir: Path) -> None:
    write_spool(spool_dir, 10)
    path, lines = _segment_lines(spool_dir)
    data = bytearray(path.read_bytes())
    offset = sum(len(line) for line in lines[:5]) + lines[5].index(b"dev")
    data[offset] ^= 0x01  # "dev" -> "eev"
    path.write_bytes(bytes(data))
    report = verify(spool_dir)
    assert not report.ok
    assert report.problem is not None
    assert report.problem.problem == "modified"
    assert report.problem.line == 6
    assert report.problem.seq == 5


def test_a_deleted_record_is_reported_as_missing(spool_dir: Path) -> None:
    write_spool(spool_dir, 10)
    path, lines = _segment_lines(spool_dir)
    del lines[4]
    path.write_bytes(b"".join(lines))
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "missing"
    assert report.problem.seq == 4
    assert report.problem.line == 5


def test_two_swapped_records_are_reported_as_reordered(spool_dir: Path) -> None:
    write_spool(spool_dir, 10)
    path, lines = _segment_lines(spool_dir)
    lines[3], lines[4] = lines[4], lines[3]
    path.write_bytes(b"".join(lines))
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "reordered"
    assert report.problem.line == 4


def test_a_truncated_tail_is_reported_as_truncated(spool_dir: Path) -> None:
    write_spool(spool_dir, 10)
    path, lines = _segment_lines(spool_dir)
    path.write_bytes(b"".join(lines[:-3]))  # the end marker and two events cut
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "truncated"


def test_a_record_cut_in_the_middle_is_reported_as_truncated(spool_dir: Path) -> None:
    write_spool(spool_dir, 10)
    path, _ = _segment_lines(spool_dir)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "truncated"


def test_a_deleted_middle_segment_is_reported_as_missing(spool_dir: Path) -> None:
    write_spool(spool_dir, 60, segment_bytes=2000)
    segments = list_segments(spool_dir)
    assert len(segments) >= 3
    segments[1][1].unlink()
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "missing"


def test_a_rewritten_record_with_a_recomputed_mac_under_a_wrong_key_is_caught(spool_dir: Path) -> None:
    # An attacker without K_i cannot forge: re-MACing with any other key fails.
    from sqlbastion.audit.chain import record_mac, split_record

    write_spool(spool_dir, 5)
    path, lines = _segment_lines(spool_dir)
    payload, _ = split_record(lines[2].rstrip(b"\n"))
    prev = split_record(lines[1].rstrip(b"\n"))[1]
    forged = payload.replace(b'"dev"', b'"eve"')
    mac = record_mac("hmac-sha256", b"guessed key".ljust(32, b"\0"), prev, forged)
    lines[2] = forged + b"\t" + mac.hex().encode() + b"\n"
    path.write_bytes(b"".join(lines))
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "modified"


def test_the_wrong_secret_fails_verification(spool_dir: Path) -> None:
    from sqlbastion.audit.chain import initial_key, verify_spool

    write_spool(spool_dir, 3)
    report = verify_spool(spool_dir, algorithm="hmac-sha256", key0=initial_key("hmac-sha256", b"other"))
    assert report.problem is not None
    assert report.problem.problem == "modified"


def test_sm3_chains_verify_and_catch_changes(spool_dir: Path) -> None:
    write_spool(spool_dir, 10, algorithm="hmac-sm3")
    assert verify(spool_dir, algorithm="hmac-sm3").ok
    assert not verify(spool_dir, algorithm="hmac-sha256").ok
    path, lines = _segment_lines(spool_dir)
    lines[3] = lines[3].replace(b"SELECT", b"DELETE")
    path.write_bytes(b"".join(lines))
    report = verify(spool_dir, algorithm="hmac-sm3")
    assert report.problem is not None
    assert report.problem.problem == "modified"


def test_reopening_continues_the_chain_across_segments(spool_dir: Path) -> None:
    write_spool(spool_dir, 5)
    spool = Spool(spool_dir, secret=SECRET)
    spool.open()
    spool.append([statement(100), statement(101)])
    spool.close()
    report = verify(spool_dir)
    assert report.ok, report.describe()
    assert report.events == 7
    assert report.segments == 2


def test_a_crash_leaves_a_live_segment_that_recovery_closes(spool_dir: Path) -> None:
    spool = Spool(spool_dir, secret=SECRET)
    spool.open()
    spool.append([statement(i) for i in range(5)])
    # Simulate a crash in the middle of a write: a torn half record, no end marker.
    path = list_segments(spool_dir)[-1][1]
    with open(path, "ab") as f:
        f.write(b'{"type":"event","event":{"half')
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "truncated"
    # The process "dies": its descriptors (and with them the lock) go away, nothing is closed cleanly.
    os.close(spool._fd)
    os.close(spool._lock_fd)
    spool2 = Spool(spool_dir, secret=SECRET)
    spool2.open()
    spool2.append([statement(9)])
    spool2.close()
    report = verify(spool_dir)
    assert report.ok, report.describe()
    assert report.events == 6
    end = json.loads(path.read_bytes().splitlines()[-1].rsplit(b"\t", 1)[0])
    assert end["type"] == "end"
    assert end["reason"] == "recovered"


def test_verify_reports_a_live_segment_without_calling_it_truncated(spool_dir: Path) -> None:
    spool = Spool(spool_dir, secret=SECRET)
    spool.open()
    spool.append([statement(1)])
    try:
        assert verify(spool_dir, live=True).ok
        assert verify(spool_dir, live=True).open_segment is not None
    finally:
        spool.close()


@pytest.mark.parametrize("garbage", [b"\n", b"not json\tzz\n", b'{"seq":"x"}\t' + b"00" * 32 + b"\n"])
def test_garbage_lines_are_reported_as_modified(spool_dir: Path, garbage: bytes) -> None:
    write_spool(spool_dir, 4)
    path, lines = _segment_lines(spool_dir)
    lines.insert(2, garbage)
    path.write_bytes(b"".join(lines))
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "modified"


def test_a_tampered_live_segment_is_not_repaired_by_recovery(spool_dir: Path) -> None:
    import pytest

    from sqlbastion.audit.spool import SpoolError

    spool = Spool(spool_dir, secret=SECRET)
    spool.open()
    spool.append([statement(i) for i in range(5)])
    path = list_segments(spool_dir)[-1][1]
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"dev"', b'"eve"')
    path.write_bytes(b"".join(lines))
    os.close(spool._fd)  # the process dies
    os.close(spool._lock_fd)
    with pytest.raises(SpoolError, match="chain is broken"):
        Spool(spool_dir, secret=SECRET).open()
    assert path.read_bytes() == b"".join(lines)  # the evidence is untouched
    report = verify(spool_dir)
    assert report.problem is not None
    assert report.problem.problem == "modified"


def test_a_spool_that_fails_to_open_is_not_left_locked(spool_dir: Path) -> None:
    import pytest

    from sqlbastion.audit.spool import SpoolError, is_locked

    write_spool(spool_dir, 3)
    (spool_dir / "chain.state").unlink()
    with pytest.raises(SpoolError):
        Spool(spool_dir, secret=b"a different secret").open()  # its MACs do not verify: refused
    assert not is_locked(spool_dir)


def test_deleting_the_newest_segments_is_caught_by_the_witnesses(spool_dir: Path) -> None:
    import json as _json

    write_spool(spool_dir, 60, segment_bytes=2000)
    segments = list_segments(spool_dir)
    assert len(segments) >= 3
    for _, path in segments[-2:]:
        path.unlink()  # what is left ends with a proper end marker and verifies on its own
    assert verify(spool_dir).ok
    from sqlbastion.audit.chain import initial_key, verify_spool

    witness = int(_json.loads((spool_dir / "chain.state").read_text())["seq"]) - 1
    report = verify_spool(
        spool_dir, algorithm="hmac-sha256", key0=initial_key("hmac-sha256", SECRET), witness_seq=witness
    )
    assert report.problem is not None
    assert report.problem.problem == "truncated"
    intact = Path(str(spool_dir) + "-intact")
    write_spool(intact, 5)
    witness = int(_json.loads((intact / "chain.state").read_text())["seq"]) - 1
    assert verify_spool(
        intact, algorithm="hmac-sha256", key0=initial_key("hmac-sha256", SECRET), witness_seq=witness
    ).ok


def test_a_record_being_appended_while_verifying_a_live_spool_is_not_an_error(spool_dir: Path) -> None:
    spool = Spool(spool_dir, secret=SECRET)
    spool.open()
    spool.append([statement(1)])
    path = list_segments(spool_dir)[-1][1]
    with open(path, "ab") as f:
        f.write(b'{"type":"event","eve')  # the writer's next record, half written
    try:
        assert verify(spool_dir, live=True).ok
        report = verify(spool_dir, live=False)
        assert report.problem is not None
        assert report.problem.problem == "truncated"
    finally:
        spool.close()


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "hmac-sm3"])
@pytest.mark.parametrize("intake", [None, 0, 7, 2**63 - 1])
def test_sealing_an_encoded_event_gives_the_bytes_of_sealing_its_record(algorithm: str, intake: int | None) -> None:
    """Spool.append seals each event's JSON inside a byte template: the line (payload, MAC) and
    the next key must be exactly what sealing the record dict gives, odd values included."""
    from sqlbastion.audit import jsontext
    from sqlbastion.audit.chain import ChainSealer

    events = [
        statement(1),
        {"kind": "statement", "sql_text": "SELECT '\ud800' -- a lone surrogate: the stdlib encoder", "n": 2**70},
        {"kind": "alert", "details": {"message": 'tab\there, newline\nthere, quote " and \u2028'}},
    ]
    by_dict = ChainSealer(algorithm=algorithm, key=b"k" * 32, seq=5, prev_mac=bytes(32))  # type: ignore[arg-type]  # parametrised Literal
    by_bytes = ChainSealer(algorithm=algorithm, key=b"k" * 32, seq=5, prev_mac=bytes(32))  # type: ignore[arg-type]  # parametrised Literal
    for e in events:
        record: dict[str, object] = {"type": "event", "event": e}
        if intake is not None:
            record = {"type": "event", "intake": intake, "event": e}
        assert by_bytes.seal_event(jsontext.dumps(e), intake) == by_dict.seal(record)
        assert (by_bytes.key, by_bytes.seq, by_bytes.prev_mac) == (by_dict.key, by_dict.seq, by_dict.prev_mac)
