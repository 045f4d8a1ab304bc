"""The tamper-evident chain over spool records, and its verifier.

On-disk format (docs/audit.md, "Spool format"). A spool directory holds segment
files ``seg-<first seq, 20 digits>.log``. Each line of a segment is one record::

    <payload JSON>\\t<MAC, lowercase hex>\\n

The payload is compact JSON with ``seq`` (global, gap-free, starting at 0) and
``type``: ``start`` (first record of every segment; holds ``prev``, the MAC of
the record before it, so a verifier can start at any segment), ``event`` (one
audit event under ``event``) or ``end`` (last record of a closed segment).
JSON escapes control characters, so neither a tab nor a newline can occur
inside a payload.

Chain invariants:

* ``MAC_i = HMAC(K_i, MAC_{i-1} || payload_i)`` with ``MAC_{-1}`` all zero.
* ``K_{i+1} = H("sqlbastion.chain.next" || K_i)``: the key moves forward after
  every record and the old one is forgotten, so a key stolen from a running
  process cannot re-MAC any earlier record (forward security).
* ``K_0 = H("sqlbastion.chain.init" || secret)``; the verifier recomputes every
  key from the secret, which is why the secret must be kept (off-host).
* A segment that is not the live one must end with an ``end`` record, so a cut
  tail is visible; a segment missing between two others shows as a seq gap.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal

from sqlbastion.audit import jsontext, sm3

__all__ = [
    "ALGORITHMS",
    "ChainProblem",
    "ChainSealer",
    "VerifyReport",
    "initial_key",
    "list_segments",
    "next_key",
    "record_mac",
    "segment_name",
    "split_record",
    "verify_spool",
]

Algorithm = Literal["hmac-sha256", "hmac-sm3"]
ALGORITHMS: tuple[Algorithm, ...] = ("hmac-sha256", "hmac-sm3")
MAC_SIZE = 32
ZERO_MAC = bytes(MAC_SIZE)
_SEGMENT_RE = re.compile(r"^seg-(\d{20})\.log$")


def _hash(algorithm: Algorithm, data: bytes) -> bytes:
    if algorithm == "hmac-sha256":
        return hashlib.sha256(data).digest()
    return sm3.sm3(data)


def initial_key(algorithm: Algorithm, secret: bytes) -> bytes:
    """K_0 from the configured secret (any length)."""
    return _hash(algorithm, b"sqlbastion.chain.init" + secret)


def next_key(algorithm: Algorithm, key: bytes) -> bytes:
    """K_{i+1} from K_i (one-way)."""
    return _hash(algorithm, b"sqlbastion.chain.next" + key)


def key_at(algorithm: Algorithm, key0: bytes, seq: int) -> bytes:
    """K_seq, by moving K_0 forward ``seq`` times (the verifier's and recovery's path)."""
    key = key0
    for _ in range(seq):
        key = next_key(algorithm, key)
    return key


def record_mac(algorithm: Algorithm, key: bytes, prev_mac: bytes, payload: bytes) -> bytes:
    if algorithm == "hmac-sha256":
        # hmac.digest is OpenSSL's one-shot HMAC: the same bytes as hmac.new(...).digest() without
        # building an HMAC object and two hash objects per record (the writer seals every event).
        return hmac.digest(key, prev_mac + payload, "sha256")
    if sm3._NATIVE:
        return hmac.new(key, prev_mac + payload, "sm3").digest()
    return sm3.hmac_sm3(key, prev_mac + payload)


def segment_name(first_seq: int) -> str:
    return f"seg-{first_seq:020d}.log"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """Segments in chain order: (first seq, path)."""
    found = []
    if directory.is_dir():
        for p in directory.iterdir():
            m = _SEGMENT_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    found.sort()
    return found


def encode_payload(payload: dict[str, Any]) -> bytes:
    return jsontext.dumps(payload)


def split_record(line: bytes) -> tuple[bytes, bytes]:
    """A line (without its newline) → (payload bytes, MAC bytes). Raises ValueError."""
    payload, sep, mac_hex = line.rpartition(b"\t")
    if not sep or len(mac_hex) != MAC_SIZE * 2:
        raise ValueError("record has no MAC")
    return payload, bytes.fromhex(mac_hex.decode("ascii"))


class ChainSealer:
    """Turns payloads into sealed record lines, moving the key forward each time.

    Holds only the current key: the initial one is dropped once moved past.
    """

    __slots__ = ("algorithm", "key", "prev_mac", "seq")

    def __init__(self, *, algorithm: Algorithm, key: bytes, seq: int, prev_mac: bytes) -> None:
        self.algorithm: Algorithm = algorithm
        self.key = key  # K_seq
        self.seq = seq  # the seq the next record gets
        self.prev_mac = prev_mac

    def seal(self, payload: dict[str, Any]) -> bytes:
        """Assign the next seq to ``payload`` and return its record line (with newline)."""
        payload["seq"] = self.seq
        body = jsontext.dumps(payload)
        key = self.key
        if self.algorithm == "hmac-sha256":
            # record_mac and next_key inlined for the common algorithm: this runs once per event.
            mac = hmac.digest(key, self.prev_mac + body, "sha256")
            self.key = sha256(b"sqlbastion.chain.next" + key).digest()
        else:
            mac = record_mac(self.algorithm, key, self.prev_mac, body)
            self.key = next_key(self.algorithm, key)
        self.prev_mac = mac
        self.seq += 1
        return b"%b\t%b\n" % (body, mac.hex().encode("ascii"))

    def seal_event(self, event_json: bytes, intake: int | None) -> bytes:
        """``seal({"type": "event"[, "intake": intake], "event": event, "seq": …})`` for an event
        already encoded: the same bytes (compact JSON, keys in this order, and the wrapper is
        ASCII whichever encoder produced the event), without a wrapper dict per event."""
        seq = self.seq
        if intake is None:
            body = b'{"type":"event","event":%b,"seq":%d}' % (event_json, seq)
        else:
            body = b'{"type":"event","intake":%d,"event":%b,"seq":%d}' % (intake, event_json, seq)
        key = self.key
        if self.algorithm == "hmac-sha256":
            mac = hmac.digest(key, self.prev_mac + body, "sha256")
            self.key = sha256(b"sqlbastion.chain.next" + key).digest()
        else:
            mac = record_mac(self.algorithm, key, self.prev_mac, body)
            self.key = next_key(self.algorithm, key)
        self.prev_mac = mac
        self.seq = seq + 1
        return b"%b\t%b\n" % (body, mac.hex().encode("ascii"))


# -- verification ---------------------------------------------------------------------------------

Problem = Literal["modified", "missing", "reordered", "truncated"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ChainProblem:
    """The first bad place in the chain."""

    problem: Problem
    segment: str
    line: int  # 1-based line number in the segment file
    seq: int | None  # the seq the verifier expected there
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    ok: bool
    records: int
    events: int
    segments: int
    first_seq: int | None
    last_seq: int | None
    open_segment: str | None  # the live segment (no end marker yet, writer running)
    problem: ChainProblem | None = None

    def describe(self) -> str:
        if self.problem is None:
            span = "empty" if self.first_seq is None else f"seq {self.first_seq}..{self.last_seq}"
            live = f"; {self.open_segment} is still being written" if self.open_segment else ""
            counts = f"{self.records} records ({self.events} events) in {self.segments} segment(s)"
            return f"chain ok: {counts}, {span}{live}"
        p = self.problem
        where = f"{p.segment} line {p.line}" + (f" (expected seq {p.seq})" if p.seq is not None else "")
        return f"chain broken: {p.problem} at {where}: {p.detail}"


def _read_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without newline, complete?) for each line of a segment."""
    data = path.read_bytes()
    if not data:
        return
    parts = data.split(b"\n")
    complete_tail = parts[-1] == b""
    if complete_tail:
        parts.pop()
    for i, part in enumerate(parts):
        yield i + 1, part, (complete_tail or i < len(parts) - 1)


def verify_spool(
    directory: Path, *, algorithm: Algorithm, key0: bytes, live: bool = False, witness_seq: int | None = None
) -> VerifyReport:
    """Check every segment of a spool. ``live``: the writer is running, so the
    newest segment may lack its end marker. ``witness_seq``: the highest seq something
    outside the spool saw (the writer's checkpoint, a sink's store); a chain that ends
    before it lost its tail, even if what is left verifies."""
    segments = list_segments(directory)
    expected_seq: int | None = None
    key = key0
    key_seq = 0
    prev_mac = ZERO_MAC
    records = events = 0
    first_seq: int | None = None
    open_segment: str | None = None

    def report(problem: ChainProblem | None) -> VerifyReport:
        return VerifyReport(
            ok=problem is None,
            records=records,
            events=events,
            segments=len(segments),
            first_seq=first_seq,
            last_seq=None if expected_seq is None else expected_seq - 1,
            open_segment=open_segment,
            problem=problem,
        )

    for index, (_, path) in enumerate(segments):
        lines = list(_read_lines(path))
        name = path.name
        parsed: list[tuple[int, bytes, bytes, dict[str, Any]] | None] = []
        for lineno, line, complete in lines:
            try:
                if not complete:
                    raise ValueError("partial line")
                payload, mac = split_record(line)
                obj = json.loads(payload)
                if not isinstance(obj, dict) or not isinstance(obj.get("seq"), int):
                    raise ValueError("payload is not a record")
                parsed.append((lineno, payload, mac, obj))
            except (ValueError, UnicodeDecodeError):
                parsed.append(None)
        seqs_after = [p[3]["seq"] if p else -1 for p in parsed]
        saw_end = False
        for pos, (item, (lineno, _line, complete)) in enumerate(zip(parsed, lines, strict=True)):
            if not complete and live and index == len(segments) - 1:
                break  # the writer is in the middle of appending this record right now
            if not complete:
                return report(ChainProblem(
                    problem="truncated", segment=name, line=lineno, seq=expected_seq,
                    detail="the segment ends in the middle of a record",
                ))  # fmt: skip
            if item is None:
                return report(ChainProblem(
                    problem="modified", segment=name, line=lineno, seq=expected_seq,
                    detail="the record cannot be parsed",
                ))  # fmt: skip
            _, payload, mac, obj = item
            seq = obj["seq"]
            rtype = obj.get("type")
            if saw_end:
                return report(ChainProblem(
                    problem="modified", segment=name, line=lineno, seq=expected_seq,
                    detail="a record follows the segment's end marker",
                ))  # fmt: skip
            if expected_seq is None:
                # The first record the spool still holds: earlier segments may have
                # been released after every required sink acknowledged them.
                if pos != 0 or rtype != "start":
                    return report(ChainProblem(
                        problem="truncated", segment=name, line=lineno, seq=None,
                        detail="the oldest segment does not begin with a start marker",
                    ))  # fmt: skip
                try:
                    prev_mac = bytes.fromhex(str(obj.get("prev", "")))
                except ValueError:
                    prev_mac = b""
                if len(prev_mac) != MAC_SIZE:
                    return report(ChainProblem(
                        problem="modified", segment=name, line=lineno, seq=seq,
                        detail="the start marker's prev field is not a MAC",
                    ))  # fmt: skip
                expected_seq = first_seq = seq
            if seq != expected_seq:
                later = expected_seq in seqs_after[pos + 1 :]
                if later or seq < expected_seq:
                    problem: Problem = "reordered"
                    detail = f"found seq {seq} where seq {expected_seq} belongs"
                else:
                    problem = "missing"
                    detail = f"records {expected_seq}..{seq - 1} are missing (found seq {seq})"
                return report(ChainProblem(problem=problem, segment=name, line=lineno, seq=expected_seq, detail=detail))
            if pos == 0 and rtype != "start":
                return report(ChainProblem(
                    problem="missing", segment=name, line=lineno, seq=expected_seq,
                    detail="the segment's start marker is missing",
                ))  # fmt: skip
            if rtype == "start" and obj.get("prev") != prev_mac.hex():
                return report(ChainProblem(
                    problem="missing", segment=name, line=lineno, seq=expected_seq,
                    detail="the start marker does not follow the previous record",
                ))  # fmt: skip
            if key_seq < seq:
                key = key_at(algorithm, key, seq - key_seq)
                key_seq = seq
            if not hmac.compare_digest(record_mac(algorithm, key, prev_mac, payload), mac):
                return report(ChainProblem(
                    problem="modified", segment=name, line=lineno, seq=expected_seq,
                    detail="the MAC does not match the record (changed bytes, or the wrong key)",
                ))  # fmt: skip
            prev_mac = mac
            expected_seq = seq + 1
            records += 1
            if rtype == "event":
                events += 1
            elif rtype == "end":
                saw_end = True
        last = index == len(segments) - 1
        if not saw_end:
            if last and live:
                open_segment = name
            else:
                return report(ChainProblem(
                    problem="truncated", segment=name, line=len(lines) + 1, seq=expected_seq,
                    detail="the segment has no end marker (its tail was cut, or the writer stopped "
                    "without closing it and has not restarted since)",
                ))  # fmt: skip
    if witness_seq is not None and (expected_seq is None or witness_seq >= expected_seq):
        newest = segments[-1][1].name if segments else "(no segment)"
        return report(ChainProblem(
            problem="truncated", segment=newest, line=0, seq=expected_seq,
            detail=f"records up to seq {witness_seq} were written (checkpoint or sink store) but the spool "
            f"ends at seq {None if expected_seq is None else expected_seq - 1}: its newest segments are gone",
        ))  # fmt: skip
    return report(None)
