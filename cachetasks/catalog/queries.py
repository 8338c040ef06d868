"""RAGFlow's ongoing query and its parts, as SQLAlchemy statements, and how they are run."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..errors import CatalogError, first_line
from . import schema


def ongoing_query(since_ms: int) -> sa.Select[str, str]:
    """RAGFlow's ongoing documents, addressed by its real storage rule, in one statement.

    A linked file-manager file (a file2document row whose file has source_type '' or
    NULL) lives at (file.parent_id, file.location); everything else, knowledge-base
    uploads included, at (document.kb_id, document.location). The service runs it in two
    parts (`ongoing_documents_query`, then `addresses_query`) and deduplicates addresses
    itself: a MySQL collation would merge 'Guide.pdf' and 'guide.pdf' in a DISTINCT.
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


def first_tasks_query(since_ms: int) -> sa.Select[tuple[str, int]]:
    """(document id, creation time in ms of its oldest ongoing task) for each ongoing document."""
    t, d = schema.task, schema.document
    return (
        sa.select(t.c.doc_id, sa.func.min(t.c.create_time))
        .select_from(t)
        .join(d, t.c.doc_id == d.c.id)
        .where(*_ongoing(since_ms))
        .group_by(t.c.doc_id)
    )


def addresses_query() -> sa.Select[tuple[str, str, str, int]]:
    """(document id, bucket, location, document creation time) for the documents in the expanding parameter `ids`."""
    d, f2d = schema.document, schema.file2document
    bucket, location = address_columns()
    return (
        sa.select(d.c.id, bucket, location, d.c.create_time)
        .select_from(d)
        .outerjoin(f2d, f2d.c.document_id == d.c.id)
        .outerjoin(schema.file, schema.file.c.id == f2d.c.file_id)
        .where(d.c.id.in_(sa.bindparam("ids", expanding=True)))
    )


def ongoing_addresses_query(since_ms: int) -> sa.Select[tuple[str, str, str, int]]:
    """(document id, bucket, location, document creation time) of those documents in the expanding
    parameter `ids` that are ongoing by RAGFlow's rule: one lookup for a batch of announced documents."""
    t, d, f2d = schema.task, schema.document, schema.file2document
    bucket, location = address_columns()
    ongoing_task = sa.exists().where(t.c.doc_id == d.c.id, t.c.progress < 1, t.c.create_time >= since_ms)
    return (
        sa.select(d.c.id, bucket, location, d.c.create_time)
        .select_from(d)
        .outerjoin(f2d, f2d.c.document_id == d.c.id)
        .outerjoin(schema.file, schema.file.c.id == f2d.c.file_id)
        .where(
            d.c.id.in_(sa.bindparam("ids", expanding=True)),
            d.c.status == "1",
            d.c.run == "1",
            d.c.type != "virtual",
            ongoing_task,
        )
    )


def changed_documents_query(since_ms: int) -> sa.Select[tuple[str, int]]:
    """(document id, update time) of the documents whose address may have changed since `since_ms`.

    RAGFlow sets update_time on every insert and update (an indexed column of every table):
    a file moved to another folder changes its `file` row, a relinked file its
    `file2document` row, and a document's own row holds kb_id and location.
    """
    d, f, f2d = schema.document, schema.file, schema.file2document
    return sa.union_all(
        sa.select(d.c.id, d.c.update_time).where(d.c.update_time >= since_ms),
        sa.select(f2d.c.document_id, f2d.c.update_time).where(f2d.c.update_time >= since_ms),
        sa.select(f2d.c.document_id, f.c.update_time)
        .select_from(f2d)
        .join(f, f.c.id == f2d.c.file_id)
        .where(f.c.update_time >= since_ms),
    )  # type: ignore[return-value]  # a union of selects of the same columns


def new_tasks_query(since_ms: int) -> sa.Select[tuple[str, str, int, int]]:
    """(task id, document id, create time, update time) of the tasks created or updated since `since_ms`:
    two index range scans, one per column, rather than an OR that some planners read as a table scan."""
    t = schema.task
    columns = (t.c.id, t.c.doc_id, t.c.create_time, t.c.update_time)
    return sa.union_all(
        sa.select(*columns).where(t.c.create_time >= since_ms),
        sa.select(*columns).where(t.c.update_time >= since_ms),
    )  # type: ignore[return-value]  # a union of selects of the same columns


def newest_task_query() -> sa.Select[tuple[int, int]]:
    """The newest create and update times of any task."""
    t = schema.task
    return sa.select(sa.func.max(t.c.create_time), sa.func.max(t.c.update_time))


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
