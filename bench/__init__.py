"""sqlbastion's benchmark harness: ``python bench/run.py`` (or ``make bench``).

See docs/performance.md for what is measured, the targets and past results.
"""
