"""Property tests: the verifier never crashes and flags any change; redaction never leaks a literal."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlbastion.audit.chain import list_segments
from sqlbastion.audit.redact import redact_literals, statement_text
from sqlbastion.audit.spool import SpoolReader

from .conftest import verify, write_spool

_TEMPLATE = Path(tempfile.mkdtemp(prefix="sqlbastion-fuzz-")) / "spool"
write_spool(_TEMPLATE, 12)
_SEGMENT = list_segments(_TEMPLATE)[0][1].read_bytes()


def _with_segment(data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="sqlbastion-fuzz-")) / "spool"
    shutil.copytree(_TEMPLATE, d)
    list_segments(d)[0][1].write_bytes(data)
    return d


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(_SEGMENT) - 1), st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_reported(offset: int, xor: int) -> None:
    data = bytearray(_SEGMENT)
    data[offset] ^= xor
    d = _with_segment(bytes(data))
    try:
        report = verify(d)
        assert not report.ok
        assert report.problem is not None
        assert report.problem.problem in ("modified", "missing", "reordered", "truncated")
    finally:
        shutil.rmtree(d.parent)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(_SEGMENT)), st.binary(max_size=80))
def test_inserted_or_cut_bytes_never_crash_the_verifier_or_the_reader(offset: int, junk: bytes) -> None:
    data = _SEGMENT[:offset] + junk + _SEGMENT[offset + len(junk) // 2 :]
    d = _with_segment(data)
    try:
        report = verify(d)
        if data != _SEGMENT:
            assert not report.ok
        reader = SpoolReader(d, -1)
        try:
            reader.read(10**9, 1000)
        except ValueError:
            pass  # a reader refuses a record it cannot frame; it never hangs or reads past it silently
        finally:
            reader.close()
    finally:
        shutil.rmtree(d.parent)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=1, max_value=12), st.binary(min_size=64, max_size=64))
def test_whatever_stands_in_a_mac_field_sinks_get_valid_json_or_nothing(line: int, mac: bytes) -> None:
    """The reader copies a lowercase-hex MAC into the event's JSON as it is: any other 64 bytes in
    that field (quotes, backslashes, upper case, binary) are refused or normalised, never spliced
    into the JSON a sink stores."""
    import json
    import re

    lines = _SEGMENT.split(b"\n")
    lines[line] = lines[line][:-64] + mac
    d = _with_segment(b"\n".join(lines))
    reader = SpoolReader(d, -1)
    try:
        records, _ = reader.read(10**9, 1000)
    except ValueError:
        return  # refused: not hex at all
    finally:
        reader.close()
        shutil.rmtree(d.parent)
    for r in records:
        chain = json.loads(r.json)["chain"]
        assert re.fullmatch("[0-9a-f]{64}", chain["mac"])
        assert chain["seq"] == r.seq


_MARK = "zq"  # values carry this marker so a leak is recognisable in the output


@st.composite
def _statement(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    dialect = draw(st.sampled_from(["mysql", "postgres"]))
    secrets: list[str] = []
    parts = ["SELECT a FROM t WHERE"]
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        value = _MARK + draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=3, max_size=10))
        secrets.append(value)
        quoted = draw(
            st.sampled_from(
                ["'{v}'", "N'{v}'", "_utf8mb4'{v}'", '"{v}"'] if dialect == "mysql" else ["'{v}'", "E'{v}'", "$${v}$$"]
            )
        ).format(v=value)
        parts.append(("AND " if i else "") + f"c{i} = {quoted}")
    noise = draw(st.sampled_from(["", " /* comment */", " -- trailing\n", " LIMIT 5"]))
    return dialect, " ".join(parts) + noise, secrets


@settings(max_examples=300, deadline=None)
@given(_statement())
def test_redaction_never_leaks_a_literal(case: tuple[str, str, list[str]]) -> None:
    dialect, sql, secrets = case
    for raw_allowed, sensitive in ((False, False), (True, True)):
        text = statement_text(sql, dialect=dialect, raw_allowed=raw_allowed, sensitive=sensitive).text or ""
        for s in secrets:
            assert s not in text, (sql, text)
    assert "?" in redact_literals(sql, dialect)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["mysql", "postgres"]))
def test_redaction_of_arbitrary_text_never_raises(sql: str, dialect: str) -> None:
    result = statement_text(sql, dialect=dialect, raw_allowed=False, sensitive=True)
    assert result.mode in ("redacted", "withheld", "none")
    if result.text is not None:
        # Whatever survives is made of the input's own non-literal tokens.
        assert len(result.text) <= len(sql) + len(sql) // 2 + 4
