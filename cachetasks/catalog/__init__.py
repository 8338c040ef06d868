"""Which files are ongoing: one query against the task database -> a set of FileRef."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from ..errors import CatalogError, ConfigError
from ..ref import FileRef
from . import schema

log = logging.getLogger(__name__)


# The drivers the service ships, for URLs that name none (RAGFlow runs on MySQL or PostgreSQL).
DRIVERS = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql", "sqlite": "pysqlite"}


def database_url(url: str) -> URL:
    """Parse `url` and give it a driver the service ships; ConfigError (without the URL) otherwise.

    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which is not installed; the
    common `postgres://` spelling is not a SQLAlchemy dialect at all.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError("CACHETASKS_DATABASE_URL is not a valid database URL") from None
    backend, _, driver = parsed.drivername.partition("+")
    backend = "postgresql" if backend == "postgres" else backend
    if backend not in DRIVERS:
        raise ConfigError(f"CACHETASKS_DATABASE_URL: unsupported database {backend!r} (postgresql, mysql, sqlite)")
    parsed = parsed.set(drivername=f"{backend}+{driver or DRIVERS[backend]}")
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, sa.exc.NoSuchModuleError):
        raise ConfigError(f"CACHETASKS_DATABASE_URL: the driver {parsed.drivername!r} is not installed") from None
    return parsed


def make_engine(url: str, *, connect_timeout: float) -> sa.Engine:
    """An engine for `url` that fails fast when the database is unreachable and bounds every query."""
    parsed = database_url(url)
    statement_ms = int(connect_timeout * 6000)
    connect_args: dict[str, object] = {}
    if parsed.drivername == "postgresql+psycopg2":
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
        connect_args["keepalives_idle"] = 30  # notice a server that vanished
        connect_args["options"] = f"-c statement_timeout={statement_ms}"
    elif parsed.drivername.endswith("+pymysql"):
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
        connect_args["read_timeout"] = max(1, statement_ms // 1000)
    elif parsed.get_backend_name() == "sqlite":
        connect_args["timeout"] = connect_timeout
    return sa.create_engine(
        parsed,
        connect_args=connect_args,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        pool_recycle=3600,
    )


def ongoing_query(since_ms: int, *, first_seen: bool = False) -> sa.Select[*tuple[Any, ...]]:
    """RAGFlow's ongoing documents, addressed by its real storage rule.

    A linked file-manager file (a file2document row whose file has source_type '' or
    NULL) lives at (file.parent_id, file.location); everything else, knowledge-base
    uploads included, at (document.kb_id, document.location). With `first_seen`, each
    address also carries the creation time (ms) of its oldest ongoing task.
    """
    t, d = schema.task, schema.document
    bucket, location = _address()
    query = (
        sa.select(bucket.label("bucket"), location.label("location"))
        .select_from(t)
        .join(d, t.c.doc_id == d.c.id)
        .outerjoin(schema.file2document, schema.file2document.c.document_id == d.c.id)
        .outerjoin(schema.file, schema.file.c.id == schema.file2document.c.file_id)
        .where(*_ongoing(since_ms))
    )
    if first_seen:
        return query.add_columns(sa.func.min(t.c.create_time).label("first_seen")).group_by(bucket, location)
    return query.distinct()


def ongoing_documents_query(since_ms: int) -> sa.Select[tuple[str]]:
    """The ids of the ongoing documents: the ongoing query without the address joins.

    The task filter runs first, materialized on PostgreSQL: without statistics (new or
    unanalyzed tables, a burst of new tasks) the planner otherwise picks a nested loop that
    scans the create_time index once per document, a second for 10,000 new tasks.
    """
    t, d = schema.task, schema.document
    recent = (
        sa.select(t.c.doc_id)
        .where(t.c.progress < 1, t.c.create_time >= since_ms)
        .cte("recent_task")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return (
        sa.select(recent.c.doc_id)
        .select_from(recent)
        .join(d, recent.c.doc_id == d.c.id)
        .where(d.c.status == "1", d.c.run == "1", d.c.type != "virtual")
        .distinct()
    )


def addresses_query() -> sa.Select[tuple[str, str, str]]:
    """(document id, bucket, location) for the documents in the expanding parameter `ids`."""
    d, f2d = schema.document, schema.file2document
    bucket, location = _address()
    return (
        sa.select(d.c.id, bucket, location)
        .select_from(d)
        .outerjoin(f2d, f2d.c.document_id == d.c.id)
        .outerjoin(schema.file, schema.file.c.id == f2d.c.file_id)
        .where(d.c.id.in_(sa.bindparam("ids", expanding=True)))
    )


def _ongoing(since_ms: int) -> tuple[sa.ColumnElement[bool], ...]:
    t, d = schema.task, schema.document
    return (d.c.status == "1", d.c.run == "1", d.c.type != "virtual", t.c.progress < 1, t.c.create_time >= since_ms)


def _address() -> tuple[sa.ColumnElement[str], sa.ColumnElement[str]]:
    d, f = schema.document, schema.file
    from_file = sa.and_(f.c.id.is_not(None), sa.func.coalesce(f.c.source_type, "") == "")
    return sa.case((from_file, f.c.parent_id), else_=d.c.kb_id), sa.case((from_file, f.c.location), else_=d.c.location)


class AddressBook:
    """Storage addresses of ongoing documents, remembered between collects.

    A document's address does not change once it exists, so each collect only asks which
    documents are ongoing (no joins to file2document and file) and looks up the addresses
    of documents it has not seen in the last `ttl` seconds (spread, so they do not all
    come due at once). At 100k ongoing documents this is what keeps a collect near the tick.
    """

    def __init__(self, *, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._known: dict[str, tuple[float, tuple[FileRef, ...]]] = {}

    def ongoing(self, engine: sa.Engine, *, window_seconds: int, now: float | None = None) -> set[FileRef]:
        since_ms = int((time.time() if now is None else now) * 1000) - window_seconds * 1000
        docs = [str(doc_id) for (doc_id,) in _run(engine, ongoing_documents_query(since_ms), {}, width=1)]
        clock = time.monotonic()
        due = [doc for doc in docs if (entry := self._known.get(doc)) is None or entry[0] < clock]
        for start in range(0, len(due), 5000):
            chunk = due[start : start + 5000]
            found: dict[str, list[FileRef]] = {doc: [] for doc in chunk}
            for doc, bucket, location in _run(engine, addresses_query(), {"ids": chunk}, width=3):
                if _usable(bucket, location):
                    found[str(doc)].append(FileRef(str(bucket), str(location)))
            for doc, refs in found.items():
                self._known[doc] = (clock + self.ttl * (0.5 + random.random()), tuple(refs))
        if len(self._known) > 2 * len(docs) + 1000:  # forget documents that stopped being ongoing
            self._known = {doc: self._known[doc] for doc in docs}
        return {ref for doc in docs for ref in self._known[doc][1]}


def custom_query(sql: str) -> sa.TextClause:
    """A user's own query; it may use the bind parameters :since_ms and :now_ms."""
    return sa.text(sql)


def first_seen(engine: sa.Engine, *, window_seconds: int, sql: str | None = None) -> dict[FileRef, int | None]:
    """Ongoing addresses with the creation time (ms) of their oldest task; None for a custom query."""
    if sql is not None:
        return dict.fromkeys(ongoing(engine, window_seconds=window_seconds, sql=sql))
    since_ms = int(time.time() * 1000) - window_seconds * 1000
    rows = _run(engine, ongoing_query(since_ms, first_seen=True), {}, width=3)
    return {FileRef(str(b), str(loc)): int(ms) for b, loc, ms in rows if _usable(b, loc)}


def ongoing(
    engine: sa.Engine,
    *,
    window_seconds: int,
    sql: str | None = None,
    now: float | None = None,
) -> set[FileRef]:
    """Run the ongoing query once and return its distinct, non-empty addresses."""
    now_ms = int((time.time() if now is None else now) * 1000)
    params = {"since_ms": now_ms - window_seconds * 1000, "now_ms": now_ms}
    statement: sa.Executable
    if sql is None:
        statement = ongoing_query(params["since_ms"])
        params = {}
    else:
        text = custom_query(sql)
        statement = text
        params = {name: value for name, value in params.items() if name in text.compile().params}
    return _refs(_run(engine, statement, params, width=2))


def _run(engine: sa.Engine, statement: sa.Executable, params: dict[str, Any], *, width: int) -> list[Any]:
    try:
        with engine.connect() as conn:
            result = conn.execute(statement, params)
            columns = len(result.keys())
            if columns != width:
                raise CatalogError(f"CACHETASKS_ONGOING_SQL must return 2 columns (bucket, location), not {columns}")
            return list(result.all())
    except sa.exc.SQLAlchemyError as exc:
        # The driver's message can be long and repeat the statement; its first line says enough.
        first = str(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc).strip().splitlines()[:1]
        raise CatalogError(f"ongoing query failed: {type(exc).__name__}: {''.join(first)}") from exc


def _usable(bucket: object, location: object) -> bool:
    return bool(bucket) and bool(location) and bool(str(location).strip())


def _refs(rows: Iterable[Sequence[object]]) -> set[FileRef]:
    refs: set[FileRef] = set()
    unusable = 0
    for bucket, location in rows:
        if _usable(bucket, location):
            refs.add(FileRef(str(bucket), str(location)))
        else:
            unusable += 1
    if unusable:
        log.debug("skipped %d ongoing rows without a bucket or location", unusable)
    return refs
