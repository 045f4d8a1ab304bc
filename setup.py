"""Builds the one C extension, ``sqlbastion._rowfast`` (masked result rows at wire speed).

The package's metadata lives in pyproject.toml; this file only declares the
extension, which setuptools builds on ``pip install`` (editable or not). When
it is missing (no compiler: the build is optional), sqlbastion uses the pure-Python
reference (``masking.rowref``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sqlbastion._rowfast",
            sources=[
                "src/sqlbastion/_rowfast.c",
                "src/sqlbastion/_rowfast_pg.c",
                "src/sqlbastion/_rowfast_mysql.c",
            ],
            depends=["src/sqlbastion/_rowfast.h"],
            # Without a compiler the package still installs and uses the pure-Python reference;
            # CI fails on it (tests/unit/masking/test_rowfast.py, test_extension_loaded_in_ci).
            optional=True,
            extra_compile_args=[
                "-O2",
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Wno-missing-field-initializers",
                "-fvisibility=hidden",  # only PyInit__rowfast is exported
            ],
        )
    ]
)
