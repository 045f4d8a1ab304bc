"""Networks, time windows and expiry: at login (admit) and on every statement."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from sqlbastion.policies.engine import PolicyEngine, _local_day_minute, admission_refusal
from sqlbastion.policies.loader import loads_policy
from tests.unit.policies.support import context

POLICY = """
[[persons]]
name = "office"
roles = ["r"]
networks = ["10.1.0.0/16", "2001:db8::/32"]
time_windows = [
  { days = "mon-fri", start = "09:00", end = "18:00", tz = "Asia/Shanghai" },
  { days = "sat", start = "22:00", end = "02:00", tz = "Asia/Shanghai" },
]

[[persons]]
name = "temp"
roles = ["r"]
expires = "2026-06-01T00:00:00+08:00"

[[persons]]
name = "off"
roles = ["r"]
disabled = true

[[roles]]
name = "r"
grants = [{ actions = ["select"], objects = ["core:*"] }]
"""

ENGINE = PolicyEngine(loads_policy(POLICY).policy)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("address", "when", "refusal"),
    [
        ("10.1.2.3", "2026-11-25T10:00:00+08:00", None),  # Wednesday morning
        ("10.1.2.3", "2026-11-25T08:59:00+08:00", "time_window"),
        ("10.1.2.3", "2026-11-25T18:00:00+08:00", "time_window"),
        ("10.1.2.3", "2026-11-25T02:00:00+00:00", None),  # 10:00 in Shanghai
        ("10.1.2.3", "2026-11-29T10:00:00+08:00", "time_window"),  # Sunday
        ("10.1.2.3", "2026-11-28T23:30:00+08:00", None),  # Saturday night window
        ("10.1.2.3", "2026-11-29T01:30:00+08:00", None),  # after midnight, still Saturday's window
        ("10.1.2.3", "2026-11-29T02:30:00+08:00", "time_window"),
        ("10.2.0.1", "2026-11-25T10:00:00+08:00", "network"),
        ("::ffff:10.1.0.9", "2026-11-25T10:00:00+08:00", None),  # IPv4-mapped
        ("2001:db8::1", "2026-11-25T10:00:00+08:00", None),
        ("2001:db9::1", "2026-11-25T10:00:00+08:00", "network"),
        ("not-an-address", "2026-11-25T10:00:00+08:00", "network"),
        ("", "2026-11-25T10:00:00+08:00", "network"),
    ],
)
def test_windows_and_networks(address: str, when: str, refusal: str | None) -> None:
    assert admission_refusal(ENGINE.person("office"), address, at(when)) == refusal


def test_expiry_and_disabled_and_unknown() -> None:
    assert admission_refusal(ENGINE.person("temp"), "1.2.3.4", at("2026-05-31T23:59:00+08:00")) is None
    assert admission_refusal(ENGINE.person("temp"), "1.2.3.4", at("2026-06-01T00:00:00+08:00")) == "expired"
    assert admission_refusal(ENGINE.person("off"), "1.2.3.4", at("2026-01-01T00:00:00+00:00")) == "disabled"
    assert admission_refusal(None, "1.2.3.4", at("2026-01-01T00:00:00+00:00")) == "unknown_person"
    assert ENGINE.admit("nobody", "127.0.0.1", "core") == "unknown_person"


def test_statements_are_checked_at_their_own_time_and_address() -> None:
    ok = context("office", client_address="10.1.0.1", now=at("2026-11-25T10:00:00+08:00"))
    late = context("office", client_address="10.1.0.1", now=at("2026-11-25T19:00:00+08:00"))
    sql = "SELECT 1"
    assert ENGINE.decide(sql, ok).allowed
    d = ENGINE.decide(sql, late)
    assert d.rule_ids == ("SB-ADMISSION",)
    assert "time windows" in d.reason
    assert ENGINE.decide(sql, ok).allowed


def test_admit_uses_the_current_time() -> None:
    assert ENGINE.admit("temp", "1.2.3.4", "core") == (
        "expired" if datetime.now(UTC) >= at("2026-06-01T00:00:00+08:00") else None
    )


@pytest.mark.parametrize(
    "tz", ["Asia/Shanghai", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "Europe/London", "UTC"]
)
def test_cached_local_time_agrees_with_the_time_zone_conversion(tz: str) -> None:
    """The per-second cache of (weekday, minute) gives what a conversion gives, DST changes included."""
    rng = random.Random(tz)
    zone = ZoneInfo(tz)
    instants = [rng.uniform(1.6e9, 1.95e9) for _ in range(3000)]
    # Within an hour of each of this zone's offset changes in 2026, every 7 seconds.
    start = 1767225600  # 2026-01-01T00:00:00Z
    hours = [start + 3600 * h for h in range(366 * 24)]
    changes = [b for a, b in itertools.pairwise(hours) if _offset(a, zone) != _offset(b, zone)]
    instants += [float(t + s) for t in changes for s in range(-3700, 3700, 7)]
    for ts in instants:
        now = datetime.fromtimestamp(ts, UTC)
        local = now.astimezone(zone)
        assert _local_day_minute(tz, math.floor(now.timestamp())) == (local.weekday(), local.hour * 60 + local.minute)


def _offset(ts: int, zone: ZoneInfo) -> object:
    return datetime.fromtimestamp(ts, zone).utcoffset()
