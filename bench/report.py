"""Benchmark results as values, and their Markdown table: absolute figures and ratios.

Strategy: every workload is measured on several *paths* (direct to the server,
through PgBouncer, through the bare relay, through sqlbastion) in alternating
rounds; each round's figure is one sample. A path's figure is the median of
its samples, and the ratio that a target judges is the subject path's median
over the baseline path's median, both from the same run. A path that could not
be measured carries the reason instead of samples and is shown as
``n/a (reason)``; a ratio that depends on it is ``n/a`` too, never a guess.

Nothing here does I/O except :func:`append_run`, which adds one run's section
to docs/performance.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

__all__ = [
    "PATHS",
    "Figure",
    "RunInfo",
    "Target",
    "WorkloadResult",
    "append_run",
    "format_value",
    "markdown_machine",
    "markdown_table",
    "render_run",
    "results_data",
]

# Column order of the table, and the label each path has in it.
PATHS: dict[str, str] = {
    "direct": "direct",
    "pgbouncer": "PgBouncer",
    "relay": "bare relay",
    "sqlbastion_bare": "sqlbastion, no policy/audit",
    "sqlbastion": "sqlbastion",
}

TargetKind = Literal["ratio_at_least", "ratio_at_most", "at_most", "at_least"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """What a workload should reach.

    ``ratio_*`` targets compare the subject path with ``against`` (another path
    of the same workload); ``at_*`` targets judge the subject's own figure.
    ``first_bar`` is an easier intermediate goal, shown when the target is missed.
    """

    kind: TargetKind
    value: float
    against: str | None = None
    first_bar: float | None = None

    def __post_init__(self) -> None:
        if self.kind.startswith("ratio") and self.against is None:
            raise ValueError("a ratio target needs the path it is measured against")

    def describe(self, unit: str = "") -> str:
        op = "≥" if self.kind.endswith("at_least") else "≤"
        if self.against is not None:
            text = f"{op} {_ratio_text(self.value)}× {PATHS.get(self.against, self.against)}"
            if self.first_bar is not None:
                text += f" (first bar {_ratio_text(self.first_bar)}×)"
            return text
        return f"{op} {format_value(self.value, unit)} {unit}".rstrip()

    def met(self, figure: float, bar: float | None = None) -> bool:
        limit = self.value if bar is None else bar
        return figure >= limit if self.kind.endswith("at_least") else figure <= limit


@dataclass(frozen=True, kw_only=True, slots=True)
class Figure:
    """One path's samples on one workload, or why it has none."""

    path: str
    samples: tuple[float, ...] = ()
    reason: str | None = None

    @property
    def value(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def spread(self) -> float | None:
        """Half the range of the samples relative to their median (0.03 = ±3 %)."""
        v = self.value
        if v is None or len(self.samples) < 2 or v == 0:
            return None
        return (max(self.samples) - min(self.samples)) / 2 / abs(v)


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkloadResult:
    """One row of the table."""

    name: str
    unit: str
    figures: tuple[Figure, ...]
    target: Target | None = None
    subject: str = "sqlbastion"
    baseline: str | None = None  # the path the ratio column compares with; the target's path when None
    note: str | None = None

    @property
    def compared_with(self) -> str | None:
        if self.baseline is not None:
            return self.baseline
        return self.target.against if self.target is not None else None

    def figure(self, path: str) -> Figure | None:
        for f in self.figures:
            if f.path == path:
                return f
        return None

    def ratio(self) -> float | None:
        """Subject over the baseline (medians), or None when either is missing."""
        if self.compared_with is None:
            return None
        subject, base = self.figure(self.subject), self.figure(self.compared_with)
        if subject is None or base is None or subject.value is None or base.value is None or base.value == 0:
            return None
        return subject.value / base.value

    def status(self) -> str:
        """``met``, ``first bar met``, ``missed`` or ``n/a``."""
        if self.target is None:
            return "—"
        if self.target.against is not None:
            judged = self.ratio()
        else:
            subject = self.figure(self.subject)
            judged = subject.value if subject is not None else None
        if judged is None:
            return "n/a"
        if self.target.met(judged):
            return "met"
        if self.target.first_bar is not None and self.target.met(judged, self.target.first_bar):
            return "first bar met"
        return "missed"


def _ratio_text(value: float) -> str:
    """1.0 → "1.0", 0.85 → "0.85": ratios keep one decimal at least, so "1×" never reads as a count."""
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def format_value(value: float, unit: str) -> str:
    """A figure with the precision its unit deserves: 12,345 tps, 1.23 s, 12.5 µs."""
    if unit in ("tps", "qps", "events/s", "decisions/s", "rows/s", "connections"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.2f}"
    if unit in ("µs", "MiB", "KiB", "ms"):
        return f"{value:,.1f}"
    return f"{value:,.3g}"


def _cell(figure: Figure | None, unit: str) -> str:
    if figure is None:
        return "—"
    if figure.value is None:
        return f"n/a ({_escape(figure.reason or 'not measured')})"
    text = format_value(figure.value, unit)
    spread = figure.spread
    if spread is not None and spread >= 0.005:
        text += f" ±{spread * 100:.0f}%"
    return text


def _escape(text: str) -> str:
    """Keep a free-text reason from breaking the Markdown table."""
    return " ".join(text.replace("|", "/").split())[:160]


def markdown_table(results: Sequence[WorkloadResult]) -> str:
    """The run's table: one row per workload, one column per path, then ratio, target and status."""
    used = [p for p in PATHS if any(r.figure(p) is not None for r in results)]
    header = ["Workload", "Unit", *(PATHS[p] for p in used), "Ratio", "Target", "Status"]
    align = ["---"] * 2 + ["---:"] * (len(used) + 1) + ["---"] * 2
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in results:
        ratio, base = r.ratio(), r.compared_with
        if base is None:
            ratio_text = "—"
        elif ratio is None:
            ratio_text = "n/a"
        else:
            ratio_text = f"{ratio:.2f}× {PATHS.get(base, base)}"
        cells = [
            _escape(r.name),
            r.unit,
            *(_cell(r.figure(p), r.unit) for p in used),
            ratio_text,
            r.target.describe(r.unit) if r.target is not None else "—",
            r.status(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {_escape(r.name)}: {r.note}" for r in results if r.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunInfo:
    """When and where a run happened, and how it was set up."""

    started: datetime
    machine: Mapping[str, str]
    settings: Mapping[str, str] = field(default_factory=dict)
    findings: Sequence[str] = ()


def markdown_machine(machine: Mapping[str, str]) -> str:
    return "\n".join(f"- {k}: {_escape(v)}" for k, v in machine.items()) + "\n"


def render_run(info: RunInfo, results: Sequence[WorkloadResult]) -> str:
    """One run's section of docs/performance.md."""
    parts = [
        f"### Run of {info.started:%Y-%m-%d %H:%M} UTC\n",
        markdown_table(results),
        "Machine:\n",
        markdown_machine(info.machine),
    ]
    if info.settings:
        parts += ["Settings:\n", markdown_machine(info.settings)]
    if info.findings:
        parts += ["Profile (sqlbastion serve process, py-spy, share of GIL-holding samples):\n"]
        parts += ["\n".join(f"- {' '.join(f.split())}" for f in info.findings) + "\n"]
    return "\n".join(parts)


def results_data(results: Sequence[WorkloadResult]) -> list[dict[str, object]]:
    """The run as plain data (for ``var/bench/results-*.json``): every sample, reason, ratio and status."""
    return [
        {
            "workload": r.name,
            "unit": r.unit,
            "figures": {f.path: {"value": f.value, "samples": list(f.samples), "reason": f.reason} for f in r.figures},
            "ratio": r.ratio(),
            "compared_with": r.compared_with,
            "target": r.target.describe(r.unit) if r.target is not None else None,
            "status": r.status(),
            "note": r.note,
        }
        for r in results
    ]


RESULTS_HEADING = "## Results"


def append_run(document: Path, section: str) -> None:
    """Append a run's section under the document's results heading (created if missing)."""
    text = document.read_text(encoding="utf-8") if document.exists() else "# Performance\n"
    if RESULTS_HEADING not in text.splitlines():
        text = text.rstrip("\n") + f"\n\n{RESULTS_HEADING}\n"
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n", encoding="utf-8")
