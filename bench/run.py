"""Run sqlbastion's benchmarks: ``python bench/run.py`` (``make bench``); ``--help`` for the options.

It starts its own MariaDB, PostgreSQL, PgBouncer, bare relay and sqlbastion on
loopback ports, measures them in alternating rounds, prints a Markdown table
and appends it with the machine's description to docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, this file's directory is on sys.path, not the repository.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.runner import main

    raise SystemExit(main())
