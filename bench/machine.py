"""What a run's figures came from: hardware, kernel, Python, server and tool versions, commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["describe_machine", "tool_version"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def tool_version(cmd: list[str]) -> str:
    """The first line a tool prints for its version, or "not installed"."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = (r.stdout or r.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    head = tool_version(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head + (" (src/ has uncommitted changes)" if dirty else "")


def describe_machine(servers: dict[str, str]) -> dict[str, str]:
    """Machine facts plus the ``servers`` versions the runner queried from the running servers."""
    info = {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count() or "unknown"),
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
    }
    info.update(servers)
    info["pgbench"] = tool_version(["pgbench", "--version"])
    info["sysbench"] = tool_version(["sysbench", "--version"])
    info["PgBouncer"] = tool_version(["pgbouncer", "--version"])
    info["sqlbastion commit"] = _commit()
    return info
