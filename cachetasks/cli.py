"""Operator commands: `python -m cachetasks COMMAND`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from . import catalog, demo, schema
from .errors import CachetasksError
from .settings import Settings

log = logging.getLogger("cachetasks")


def _settings() -> Settings:
    from .app import settings  # loads celeryconfig: the same configuration the worker sees

    return settings()


def cmd_initdb(args: argparse.Namespace) -> int:
    s = _settings()
    engine = catalog.make_engine(s.sqlalchemy_url, connect_timeout=s.db_connect_timeout)
    created = schema.create_missing(engine)
    print(f"created tables: {', '.join(created)}" if created else "all tables already exist")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    s = _settings()
    engine = catalog.make_engine(s.sqlalchemy_url, connect_timeout=s.db_connect_timeout)
    put = demo.writer(s)
    if args.every:
        print(f"demo: keeping {args.documents} documents ongoing, a new one every {args.every:g}s (Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            demo.follow(engine, put, every=args.every, keep=args.documents, stop=lambda: False)
        return 0
    ids = demo.seed(engine, put, documents=args.documents)
    print(f"demo: {len(ids)} ongoing documents in {s.sqlalchemy_url.split('://')[0]} database, files in {s.storage}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cachetasks", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    initdb = sub.add_parser("initdb", help="create RAGFlow's task tables where they are missing")
    initdb.set_defaults(func=cmd_initdb)

    d = sub.add_parser("demo", help="create the tables and a few ongoing documents with their files")
    d.add_argument("--documents", type=int, default=5, metavar="N", help="how many ongoing documents (5)")
    d.add_argument(
        "--every",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep running: start a new document and finish the oldest every SECONDS",
    )
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        code: int = args.func(args)
    except CachetasksError as exc:
        print(f"cachetasks: {exc}", file=sys.stderr)
        return 1
    return code
