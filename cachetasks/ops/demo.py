"""Demo data: a few ongoing RAGFlow documents and their files, for a first run."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from ..catalog import schema

log = logging.getLogger(__name__)
Put = Callable[[str, str, bytes], None]


@dataclass(frozen=True)
class LinkedFile:
    """A `file` row linked to a document through `file2document`."""

    parent_id: str
    location: str | None
    source_type: str | None = "knowledgebase"


def insert_document(
    conn: sa.Connection,
    *,
    kb_id: str,
    location: str | None,
    doc_type: str = "pdf",
    run: str = "1",
    status: str = "1",
    progress: Sequence[float] = (0.0,),
    created_ms: int | None = None,
    file: LinkedFile | None = None,
    doc_id: str | None = None,
) -> str:
    """Insert a RAGFlow document (with the id `doc_id`, else a new one) and one task per entry of `progress`;
    return its id."""
    doc_id = doc_id or uuid.uuid1().hex
    now_ms = int(time.time() * 1000)
    stamps = {"create_time": created_ms or now_ms, "create_date": datetime.now(), "update_time": now_ms}
    name = (location or "unnamed").rsplit("/", 1)[-1]
    conn.execute(
        schema.document.insert().values(
            id=doc_id,
            kb_id=kb_id,
            type=doc_type,
            name=name,
            location=location,
            suffix=name.rsplit(".", 1)[-1],
            run=run,
            status=status,
            **stamps,
        )
    )
    if file is not None:
        file_id = uuid.uuid1().hex
        conn.execute(
            schema.file.insert().values(
                id=file_id,
                parent_id=file.parent_id,
                name=name,
                location=file.location,
                type=doc_type,
                source_type=file.source_type,
                **stamps,
            )
        )
        conn.execute(schema.file2document.insert().values(id=uuid.uuid1().hex, file_id=file_id, document_id=doc_id))
    if progress:
        conn.execute(
            schema.task.insert(),
            [
                {
                    "id": uuid.uuid1().hex,
                    "doc_id": doc_id,
                    "from_page": i * 12,
                    "to_page": i * 12 + 12,
                    "progress": p,
                    "task_type": "",
                    **stamps,
                }
                for i, p in enumerate(progress)
            ],
        )
    return doc_id


def add_document(conn: sa.Connection, put: Put, *, kb_id: str, name: str, data: bytes, pages: int = 3) -> str:
    """An ongoing knowledge-base upload, as RAGFlow records one, with its file in storage."""
    put(kb_id, name, data)
    upload = LinkedFile(parent_id=uuid.uuid1().hex, location=name, source_type="knowledgebase")
    return insert_document(conn, kb_id=kb_id, location=name, doc_type="doc", progress=[0.1] * pages, file=upload)


def finish_document(conn: sa.Connection, doc_id: str) -> None:
    """Mark a document's processing as done, as RAGFlow does when its tasks complete."""
    conn.execute(schema.task.update().where(schema.task.c.doc_id == doc_id).values(progress=1.0))
    conn.execute(schema.document.update().where(schema.document.c.id == doc_id).values(run="3"))


def seed(engine: sa.Engine, put: Put, *, documents: int = 5) -> list[str]:
    schema.create_missing(engine)
    kb_id = "demo" + uuid.uuid1().hex[:28]
    with engine.begin() as conn:
        return [
            add_document(conn, put, kb_id=kb_id, name=f"reports/2026/Q3 résumé {i}.txt", data=_text(i))
            for i in range(documents)
        ]


def follow(engine: sa.Engine, put: Put, *, every: float, keep: int = 5, stop: Callable[[], bool]) -> None:
    """Keep `keep` documents ongoing, starting a new one and finishing the oldest every `every` s."""
    live = seed(engine, put, documents=keep)
    n = keep
    while not stop():
        time.sleep(every)
        with engine.begin() as conn:
            live.append(add_document(conn, put, kb_id="demo-live", name=f"live/doc-{n}.txt", data=_text(n)))
            finish_document(conn, live.pop(0))
        log.info("demo: document %d started, the oldest one finished", n)
        n += 1


def _text(i: int) -> bytes:
    return (f"Demo document {i}\n" + "Lorem ipsum dolor sit amet. " * 400).encode()
