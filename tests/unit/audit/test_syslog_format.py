"""RFC 5424 message layout and RFC 6587 octet-counting framing."""

from __future__ import annotations

import json
import re

from sqlbastion.audit.sinks.syslog import format_message, frame

RFC5424 = re.compile(
    rb"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) "
    rb"(\[sqlbastion@32473 event_id=\"(?:[^\"\\\]]|\\.)*\" seq=\"\d+\"\]) (.*)$",
    re.S,
)


def _event(**extra: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "0191e7c0-0000-7000-8000-000000000001",
        "ts": "2026-11-25T01:02:03.456789Z",
        "kind": "statement",
        "decision": "allow",
        "statement_text": "SELECT ?",
        "chain": {"seq": 12},
    }
    event.update(extra)
    return event


def test_message_fields() -> None:
    msg = format_message(_event(), hostname="bastion-1", app_name="sqlbastion", procid="4242")
    m = RFC5424.match(msg)
    assert m is not None, msg
    pri, ts, host, app, procid, msgid, sd, body = m.groups()
    assert int(pri) == 13 * 8 + 6
    assert ts == b"2026-11-25T01:02:03.456789Z"
    assert (host, app, procid, msgid) == (b"bastion-1", b"sqlbastion", b"4242", b"statement")
    assert b'event_id="0191e7c0-0000-7000-8000-000000000001"' in sd
    assert json.loads(body)["statement_text"] == "SELECT ?"


def test_severity_follows_the_event() -> None:
    def pri(**extra: object) -> int:
        msg = format_message(_event(**extra), hostname="h", app_name="a", procid="1")
        return int(msg[1 : msg.index(b">")])

    assert pri() % 8 == 6
    assert pri(decision="block") % 8 == 4
    assert pri(kind="auth_failed", decision=None) % 8 == 4
    assert pri(kind="alert", decision=None) % 8 == 1


def test_header_fields_are_printable_ascii_and_sd_values_escaped() -> None:
    msg = format_message(
        _event(event_id='a"b]c\\d', kind="statement"), hostname="host with spaces", app_name="x" * 100, procid="1"
    )
    m = RFC5424.match(msg)
    assert m is not None, msg
    assert m.group(3) == b"host_with_spaces"
    assert len(m.group(4)) == 48
    assert b'event_id="a\\"b\\]c\\\\d"' in m.group(7)


def test_octet_counting_counts_bytes_not_characters() -> None:
    msg = format_message(_event(statement_text="SELECT '名字'"), hostname="h", app_name="a", procid="1")
    framed = frame(msg)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(msg)
    assert len(msg) > len(msg.decode("utf-8"))
