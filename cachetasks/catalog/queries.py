"""RAGFlow's ongoing query and its parts, as SQLAlchemy statements, and how they are run."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..errors import CatalogError, first_line
from . import schema


def ongoing_query(since_ms: int, *, first_seen: bool = False) -> sa.Select[*tuple[Any, ...]]:
    """RAGFlow's ongoing documents, addressed by its real storage rule.

    A linked file-manager file (a file2document row whose file has source_type '' or
    NULL) lives at (file.parent_id, file.location); everything else, knowledge-base
    uploads included, at (document.kb_id, document.location). With `first_seen`, each
    address also carries the creation time (ms) of its oldest ongoing task.
    """
    t, d = schema.task, schema.document
    bucket, location = address_columns()
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
    bucket, location = address_columns()
    return (
        sa.select(d.c.id, bucket, location)
        .select_from(d)
        .outerjoin(f2d, f2d.c.document_id == d.c.id)
        .outerjoin(schema.file, schema.file.c.id == f2d.c.file_id)
        .where(d.c.id.in_(sa.bindparam("ids", expanding=True)))
    )


def custom_query(sql: str) -> sa.TextClause:
    """A user's own query; it may use the bind parameters :since_ms and :now_ms."""
    return sa.text(sql)


def address_columns() -> tuple[sa.ColumnElement[str], sa.ColumnElement[str]]:
    """RAGFlow's storage address of a document as (bucket, location) expressions."""
    d, f = schema.document, schema.file
    from_file = sa.and_(f.c.id.is_not(None), sa.func.coalesce(f.c.source_type, "") == "")
    return sa.case((from_file, f.c.parent_id), else_=d.c.kb_id), sa.case((from_file, f.c.location), else_=d.c.location)


def _ongoing(since_ms: int) -> tuple[sa.ColumnElement[bool], ...]:
    t, d = schema.task, schema.document
    return (d.c.status == "1", d.c.run == "1", d.c.type != "virtual", t.c.progress < 1, t.c.create_time >= since_ms)


def run(engine: sa.Engine, statement: sa.Executable, params: dict[str, Any], *, width: int) -> list[Any]:
    """All rows of `statement`, which must have `width` columns; CatalogError in one line otherwise."""
    try:
        with engine.connect() as conn:
            result = conn.execute(statement, params)
            columns = len(result.keys())
            if columns != width:
                raise CatalogError(f"CACHETASKS_ONGOING_SQL must return 2 columns (bucket, location), not {columns}")
            return list(result.all())
    except sa.exc.SQLAlchemyError as exc:
        # The driver's message can be long and repeat the statement; its first line says enough.
        raise CatalogError(f"ongoing query failed: {type(exc).__name__}: {first_line(_driver_error(exc))}") from exc


def _driver_error(exc: sa.exc.SQLAlchemyError) -> BaseException:
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
