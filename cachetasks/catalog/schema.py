"""RAGFlow's task tables, as far as cachetasks reads them.

Names, types and indexes follow RAGFlow's `api/db/db_models.py` so that `initdb` builds a
database RAGFlow itself could use and the ongoing query runs against a real deployment.
Only columns the service or its demo touch are declared beyond RAGFlow's keys; the service
never writes to these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("create_time", sa.BigInteger, index=True),
        sa.Column("create_date", sa.DateTime, index=True),
        sa.Column("update_time", sa.BigInteger, index=True),
        sa.Column("update_date", sa.DateTime, index=True),
    ]


task = sa.Table(
    "task",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("doc_id", sa.String(32), nullable=False, index=True),
    sa.Column("from_page", sa.Integer, default=0),
    sa.Column("to_page", sa.Integer, default=100000000),
    sa.Column("task_type", sa.String(32), nullable=False, default=""),
    sa.Column("priority", sa.Integer, default=0),
    sa.Column("begin_at", sa.DateTime, nullable=True, index=True),
    sa.Column("process_duration", sa.Float, default=0),
    sa.Column("progress", sa.Float, nullable=False, default=0, index=True),
    sa.Column("progress_msg", sa.Text, nullable=True, default=""),
    sa.Column("retry_count", sa.Integer, default=0),
    sa.Column("digest", sa.Text, nullable=True, default=""),
    sa.Column("chunk_ids", sa.Text, nullable=True, default=""),
    *_timestamps(),
)

document = sa.Table(
    "document",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("thumbnail", sa.Text, nullable=True),
    sa.Column("kb_id", sa.String(256), nullable=False, index=True),
    sa.Column("parser_id", sa.String(32), nullable=False, index=True, default="naive"),
    sa.Column("parser_config", sa.Text, nullable=False, default="{}"),
    sa.Column("source_type", sa.String(128), nullable=False, default="local", index=True),
    sa.Column("type", sa.String(32), nullable=False, index=True),
    sa.Column("created_by", sa.String(32), nullable=False, index=True, default=""),
    sa.Column("name", sa.String(255), nullable=True, index=True),
    sa.Column("location", sa.String(255), nullable=True, index=True),
    sa.Column("size", sa.BigInteger, default=0, index=True),
    sa.Column("token_num", sa.Integer, default=0, index=True),
    sa.Column("chunk_num", sa.Integer, default=0, index=True),
    sa.Column("progress", sa.Float, default=0, index=True),
    sa.Column("progress_msg", sa.Text, nullable=True, default=""),
    sa.Column("process_begin_at", sa.DateTime, nullable=True, index=True),
    sa.Column("process_duration", sa.Float, default=0),
    sa.Column("meta_fields", sa.Text, nullable=True, default="{}"),
    sa.Column("suffix", sa.String(32), nullable=False, index=True, default=""),
    sa.Column("run", sa.String(1), nullable=True, index=True, default="0"),
    sa.Column("status", sa.String(1), nullable=True, index=True, default="1"),
    *_timestamps(),
)

file = sa.Table(
    "file",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("parent_id", sa.String(32), nullable=False, index=True),
    sa.Column("tenant_id", sa.String(32), nullable=False, index=True, default=""),
    sa.Column("created_by", sa.String(32), nullable=False, index=True, default=""),
    sa.Column("name", sa.String(255), nullable=False, index=True, default=""),
    sa.Column("location", sa.String(255), nullable=True, index=True),
    sa.Column("size", sa.BigInteger, default=0, index=True),
    sa.Column("type", sa.String(32), nullable=False, index=True, default=""),
    sa.Column("source_type", sa.String(128), nullable=False, default="", index=True),
    *_timestamps(),
)

file2document = sa.Table(
    "file2document",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("file_id", sa.String(32), nullable=True, index=True),
    sa.Column("document_id", sa.String(32), nullable=True, index=True),
    *_timestamps(),
)


def create_missing(engine: sa.Engine) -> list[str]:
    """Create the tables that do not exist yet; return their names."""
    existing = set(sa.inspect(engine).get_table_names())
    missing = [t for t in metadata.sorted_tables if t.name not in existing]
    metadata.create_all(engine, tables=missing)
    return [t.name for t in missing]
