"""The component benchmarks that live beside the runner: bench/policy_bench.py and bench/audit_bench.py.

They are separate scripts, owned with the code they measure, and print their
figures. The runner starts each as a subprocess (bounded in time) and reads
the figures back from its output: JSON objects on a line of their own are
preferred (``{"hit_us": 12.3, "miss_us": 840.0}``); otherwise lines of the
form ``name: value unit`` (``cache hit: 12.3 µs/decision``) are read.
Parsing is pure and unit-tested.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExternalFigure", "named", "parse_figures", "pick", "run_script"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ExternalFigure:
    name: str  # lower case, as printed
    value: float
    unit: str  # as printed ("µs", "ms", "events/s", …) or "" when none


_LINE = re.compile(
    r"^\s*[-*]?\s*(?P<name>[A-Za-z][^:=]{0,80}?)\s*[:=]\s*(?P<value>[0-9][0-9,_]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)"
    r"\s*(?P<unit>[^\s,;()]*)",
    re.I,
)


def _flatten(prefix: str, data: object, out: list[ExternalFigure]) -> None:
    if isinstance(data, Mapping):
        for k, v in data.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out.append(ExternalFigure(name=prefix.lower(), value=float(data), unit=_unit_from_key(prefix)))


def _unit_from_key(key: str) -> str:
    k = key.lower()
    for suffix, unit in (("_us", "µs"), ("_ms", "ms"), ("_per_s", "/s"), ("per_second", "/s"), ("_s", "s")):
        if k.endswith(suffix):
            return unit
    return ""


def parse_figures(output: str) -> list[ExternalFigure]:
    """Every figure the script printed, JSON lines first, then ``name: value unit`` lines."""
    found: list[ExternalFigure] = []
    # ``--json`` output, possibly over several lines, possibly after log lines the script's
    # components wrote to the same stream: the document starts at the first line that is "{".
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "{"][:1] or [0]
    with contextlib.suppress(json.JSONDecodeError):
        whole = json.loads("\n".join(lines[starts[0] :]))
        if isinstance(whole, Mapping):
            _flatten("", whole, found)
            return found
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("{") and text.endswith("}"):
            with contextlib.suppress(json.JSONDecodeError):
                _flatten("", json.loads(text), found)
            continue
        m = _LINE.match(text)
        if m:
            value = float(m.group("value").replace(",", "").replace("_", ""))
            found.append(ExternalFigure(name=m.group("name").strip().lower(), value=value, unit=m.group("unit")))
    return found


_TO_US = {"µs": 1.0, "us": 1.0, "μs": 1.0, "ms": 1000.0, "s": 1e6, "ns": 1e-3}


def named(figures: list[ExternalFigure], name: str) -> float | None:
    """The figure called exactly ``name`` (a dotted JSON path such as ``hit.median_us``), or None."""
    for f in figures:
        if f.name == name:
            return f.value
    return None


def pick(figures: list[ExternalFigure], *, words: tuple[str, ...], kind: str) -> float | None:
    """The first figure whose name holds all ``words`` and whose unit fits ``kind``.

    ``kind`` "latency" converts to microseconds (a "/decision" or "/op" suffix
    on the unit is allowed); "rate" takes a per-second figure.
    """
    for f in figures:
        if not all(w in f.name for w in words):
            continue
        unit = f.unit.split("/")[0] if kind == "latency" else f.unit
        if kind == "latency" and unit.lower() in _TO_US:
            return f.value * _TO_US[unit.lower()]
        if kind == "latency" and unit == "" and f.name.endswith(("_us", " us", "(µs)")):
            return f.value
        if kind == "rate" and ("/s" in unit or "per_s" in f.name or "/s" in f.name or "per second" in f.name):
            return f.value
    return None


def run_script(script: Path, *, timeout: float, args: tuple[str, ...] = ()) -> str:
    """Run a benchmark script with this interpreter; its output, or RuntimeError with the reason."""
    if not script.exists():
        raise RuntimeError(f"{script.name} is not written yet")
    try:
        r = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=script.parent.parent,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{script.name} did not finish within {timeout:.0f}s") from None
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-1:])[:160]
        raise RuntimeError(f"{script.name} exited {r.returncode}: {tail}")
    return r.stdout
