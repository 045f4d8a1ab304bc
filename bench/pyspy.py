"""Profiling the sqlbastion serve process while a workload runs, with py-spy.

``py-spy record --format raw`` writes "collapsed stacks": one line per distinct
stack, frames joined by ``;`` from the outermost to the innermost, then a
space and the number of samples. :func:`summarize_collapsed` turns that into
the share of samples spent *in* each function (self time) and *under* each
function (inclusive time), with line numbers dropped so that one function is
one entry. It is pure and unit-tested; :func:`record` runs py-spy.

(Not called ``profile.py``: scripts in bench/ run with bench/ first on
``sys.path``, where that name would shadow the standard library module
cProfile imports.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProfileSummary", "record", "summarize_collapsed"]

# "name (path/to/file.py:123)" → "name (path/to/file.py)"; py-spy's frame format.
_LINE_NUMBER = re.compile(r":\d+\)$")
# Site-packages prefixes make frames long without saying more.
_PREFIX = re.compile(r"\(/.*?/(?:site-packages|dist-packages|lib/python3\.\d+|src)/")


def _frame_key(frame: str) -> str:
    frame = _LINE_NUMBER.sub(")", frame.strip())
    return _PREFIX.sub("(", frame)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileSummary:
    samples: int
    self_share: tuple[tuple[str, float], ...]  # (function, share of all samples), largest first
    inclusive_share: tuple[tuple[str, float], ...]

    def lines(self, top: int = 8) -> list[str]:
        out = [f"{self.samples} samples"]
        out += [f"self {share * 100:.1f}%: {name}" for name, share in self.self_share[:top]]
        out += [f"inclusive {share * 100:.1f}%: {name}" for name, share in self.inclusive_share[:top]]
        return out

    def brief(self, top: int = 8) -> str:
        """One line: the largest self and inclusive shares, without the start-up frames every sample has."""
        inclusive = [(n, s) for n, s in self.inclusive_share if not n.startswith(_WRAPPERS)]

        def join(items: Sequence[tuple[str, float]]) -> str:
            return ", ".join(f"`{_short(name)}` {share * 100:.0f}%" for name, share in items[:top])

        return f"{self.samples} samples. Self: {join(self.self_share)}. Inclusive: {join(inclusive)}."


# Frames that wrap every sample of the serve process (start-up and the event loop's entry).
_WRAPPERS = (
    "<module> (",
    "main (",
    "cmd_serve (",
    "run (sqlbastion/proxy/server.py)",
    "_run_code (",
    "_run_module_as_main (",
)


def _short(frame: str) -> str:
    """``QueryRelay._data_row (sqlbastion/proxy/postgres/relay.py)`` → ``QueryRelay._data_row (postgres/relay.py)``."""
    if frame.startswith("thread ("):
        return frame
    name, _, where = frame.partition(" (")
    parts = where.rstrip(")").split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def summarize_collapsed(text: str, *, only_under: str | tuple[str, ...] | None = None) -> ProfileSummary:
    """Self and inclusive shares per function from py-spy's raw (collapsed) output.

    ``only_under``: keep inclusive entries whose name contains this text, or one
    of these texts (for example ``"sqlbastion"``), so event-loop plumbing does not
    crowd them out. With ``py-spy --threads`` each stack starts with a
    ``thread (…)`` frame, whose inclusive share is that thread's share.
    Malformed lines are skipped: a profile is advice, never a reason to fail.
    """
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_key(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):  # a recursive function counts once per sample
            under[name] += count
    if total == 0:
        return ProfileSummary(samples=0, self_share=(), inclusive_share=())
    self_share = tuple((k, v / total) for k, v in own.most_common())
    wanted = (only_under,) if isinstance(only_under, str) else only_under
    inclusive = [(k, v / total) for k, v in under.most_common() if wanted is None or any(w in k for w in wanted)]
    return ProfileSummary(samples=total, self_share=self_share, inclusive_share=tuple(inclusive))


def py_spy() -> str | None:
    """The py-spy executable (installed into the virtualenv by the dev extra), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def record(pid: int, seconds: int, output: Path, *, rate: int = 200) -> subprocess.Popen[bytes] | None:
    """Start py-spy sampling ``pid`` for ``seconds`` into ``output`` (raw format); None if unavailable.

    The caller runs the workload meanwhile, then waits for the returned process.
    ``--nonblocking`` keeps py-spy from pausing the proxy at each sample, so the
    workload's figures stay close to an unprofiled run. ``--gil`` samples only
    the thread holding the GIL: Python work that the event loop and the audit
    threads compete for, without idle threads waiting on locks. ``--threads``
    puts each sample under its thread.
    """
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--gil",
            "--threads",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
