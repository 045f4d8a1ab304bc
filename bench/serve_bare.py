"""sqlbastion's proxy with no policy, masking or audit: the protocol relay alone.

The benchmark can run this beside the real ``sqlbastion serve`` (``--bare``) to
split sqlbastion's cost between the protocol handling (this path) and the
policy, masking and audit work (the difference to the full path). It is a
measuring instrument, never a way to deploy: every statement is allowed.

Usage: ``python bench/serve_bare.py --config sqlbastion.toml``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    import uvloop

    from sqlbastion import logs
    from sqlbastion.config import load
    from sqlbastion.proxy.server import serve
    from sqlbastion.proxy.services import ProxyServices
    from sqlbastion.proxy.session import Runtime
    from sqlbastion.users import UsersFile

    parser = argparse.ArgumentParser(description="sqlbastion's relay with an allow-all runtime (benchmarks only).")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    settings = load(args.config)
    logs.configure(settings.logging)
    services = ProxyServices(
        settings=settings,
        users=UsersFile.load(settings.resolve_path(settings.users_file)),
        runtime=Runtime(),  # allow everything, mask nothing, audit nothing
    )
    uvloop.run(serve(settings, services=services))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
