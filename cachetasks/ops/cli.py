"""Operator commands for cachetasks.

Exit codes: 0 success, 1 a dependency or operation failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

import redis
import sqlalchemy as sa

from ..catalog import schema
from ..errors import CachetasksError, ConfigError, first_line
from ..resources import Resources
from ..settings import Settings
from . import demo, health, status, warm

log = logging.getLogger("cachetasks")
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"  # Celery's, for long-running commands


def _settings() -> Settings:
    """The settings the worker sees: celeryconfig's, read once from the environment."""
    settings: Settings = importlib.import_module("celeryconfig").cachetasks_settings
    return settings


def cmd_initdb(args: argparse.Namespace) -> int:
    created = schema.create_missing(Resources(_settings()).engine)
    print(f"created tables: {', '.join(created)}" if created else "all tables already exist")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    s = _settings()
    res = Resources(s)
    engine, put = res.engine, res.storage.put
    if args.every:
        print(f"demo: keeping {args.documents} documents ongoing, a new one every {args.every:g}s (Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            demo.follow(engine, put, every=args.every, keep=args.documents, stop=lambda: False)
        return 0
    ids = demo.seed(engine, put, documents=args.documents)
    print(f"demo: {len(ids)} ongoing documents in the {engine.dialect.name} database, files in {s.storage} storage")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    res = Resources(_settings())
    try:
        report = status.gather(res.engine, res.cache, res.broker, res.settings)
    finally:
        res.close()
    print(json.dumps(report.as_dict(), indent=2) if args.json else status.render(report))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings()
    checks = health.check_all(settings)
    if args.json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for c in checks:
            print(f"{c.name:<9} {'OK    ' if c.ok else 'FAILED'} {c.detail}")
        print("\nsettings set, and where from (secrets masked; the rest are defaults):")
        for source in settings.sources:
            print(f"  {source.variable}={source.shown}  [{source.origin}]")
    return 0 if all(c.ok for c in checks) else 1


def cmd_warm(args: argparse.Namespace) -> int:
    s = _settings()
    res = Resources(s)
    show = sys.stderr.isatty() and not args.quiet

    def progress(done: int, total: int) -> None:
        if show:
            print(f"\r{warm.bar(done, total)}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    while True:
        outcomes = warm.warm_once(res.engine, res.cache, res.storage, s, progress=progress)
        print(", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()) if n) or "nothing ongoing")
        if args.once:
            return 1 if any(o.startswith("error:") for o in outcomes) else 0
        time.sleep(s.collect_interval)


def cmd_metrics(args: argparse.Namespace) -> int:
    from . import metrics

    s = _settings()
    port, host = args.port or s.metrics_port or 9808, args.host or s.metrics_host
    s = dataclasses.replace(s, metrics_port=port, metrics_host=host)
    server, thread = metrics.serve(s)
    print(f"serving http://{s.metrics_host}:{s.metrics_port}/metrics (Ctrl-C stops)")
    with contextlib.suppress(KeyboardInterrupt):
        thread.join()
    server.shutdown()
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    from ..listener import Listener, running

    s = _settings()
    res = Resources(s)
    if args.ping:
        try:
            seen = {p.node: p for p in running(res.redis)}
        finally:
            res.close()
        if args.node not in seen:
            print(f"no listener on {args.node} said what it does lately", file=sys.stderr)
            return 1
        print(f"{args.node}: {seen[args.node].role}")
        return 0
    from ..celery.tasks import enqueue_copies  # the Celery app publishes the copies

    logging.basicConfig(force=True, level=args.loglevel.upper(), format=LOG_FORMAT)
    listener = Listener(res.engine, res.cache, s, enqueue_copies, node=args.node)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        listener.run(stop)
    finally:
        res.close()
    return 0


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cachetasks",
        description="Operate cachetasks. Settings come from the environment (see the README).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _command(sub, "initdb", "create RAGFlow's task tables where they are missing").set_defaults(func=cmd_initdb)

    d = _command(sub, "demo", "create the tables and a few ongoing documents with their files")
    d.add_argument("--documents", type=int, default=5, metavar="N", help="how many ongoing documents (default 5)")
    d.add_argument(
        "--every",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep running: start a new document and finish the oldest every SECONDS",
    )
    d.set_defaults(func=cmd_demo)

    st = _command(sub, "status", "ongoing, cached, in-flight and skipped files; queues; beat")
    st.add_argument("--json", action="store_true", help="print JSON for scripts")
    st.set_defaults(func=cmd_status)

    c = _command(sub, "check", "connect to broker, cache, database and storage; exit 1 if any fails")
    c.add_argument("--json", action="store_true", help="print JSON for scripts")
    c.set_defaults(func=cmd_check)

    w = _command(sub, "warm", "collect and copy in this process, without a broker or workers")
    w.add_argument("--once", action="store_true", help="run one cycle and exit (1 if a copy failed)")
    w.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=cmd_warm)

    li = _command(sub, "listen", "claim the file of each task RAGFlow queues the moment it is queued")
    li.add_argument(
        "-n", "--node", default=socket.gethostname(), help="this listener's name in `status` (default: the host name)"
    )
    li.add_argument(
        "-l", "--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING"], type=str.upper, help="default INFO"
    )
    li.add_argument(
        "--ping", action="store_true", help="exit 0 if this node's listener runs, 1 if not (a health check)"
    )
    li.set_defaults(func=cmd_listen)

    m = _command(sub, "metrics", "serve the Prometheus metrics endpoint")
    m.add_argument("--port", type=int, default=0, help="port (default CACHETASKS_METRICS_PORT, else 9808)")
    m.add_argument("--host", help="address to listen on (default CACHETASKS_METRICS_HOST, else 127.0.0.1)")
    m.set_defaults(func=cmd_metrics)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"cachetasks: configuration error: {exc}", file=sys.stderr)
        return 2
    except CachetasksError as exc:
        print(f"cachetasks: {exc}", file=sys.stderr)
        return 1
    except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:
        print(f"cachetasks: {type(exc).__name__}: {first_line(getattr(exc, 'orig', None) or exc)}", file=sys.stderr)
        return 1
    return code
