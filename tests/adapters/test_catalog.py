"""The ongoing query against real databases: one body per behaviour, run on PostgreSQL and SQLite."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cachetasks import catalog
from cachetasks.catalog import schema
from cachetasks.errors import CatalogError
from cachetasks.ops.demo import LinkedFile, insert_document
from cachetasks.ref import FileRef

WINDOW = 600


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """RAGFlow's tables, empty, in each database the service supports."""
    fixture = {"postgresql": "pg_engine", "sqlite": "sqlite_engine"}[request.param]
    made: sa.Engine = request.getfixturevalue(fixture)
    return made


def kb() -> str:
    return "kb" + uuid.uuid4().hex[:16]


def ongoing(engine: sa.Engine, **kwargs: Any) -> set[FileRef]:
    found = catalog.ongoing(engine, window_seconds=WINDOW, **kwargs)
    if "sql" not in kwargs:  # the collector's path (document ids, then remembered addresses) agrees
        assert catalog.AddressBook().ongoing(engine, window_seconds=WINDOW) == found
    return found


def test_the_address_book_remembers_addresses_and_looks_them_up_again_after_its_ttl(engine: sa.Engine) -> None:
    """Known documents cost no address lookup until their entry is due; then the current address is read."""
    # Given a document the book has seen
    bucket = kb()
    with engine.begin() as conn:
        doc = insert_document(conn, kb_id=bucket, location="first.pdf")
    book = catalog.AddressBook(ttl=3600)
    assert book.ongoing(engine, window_seconds=WINDOW) == {FileRef(bucket, "first.pdf")}
    # When its address changes in the database
    with engine.begin() as conn:
        conn.execute(schema.document.update().where(schema.document.c.id == doc).values(location="second.pdf"))
    # Expect the remembered address, and the new one from a book whose entries are due
    assert book.ongoing(engine, window_seconds=WINDOW) == {FileRef(bucket, "first.pdf")}
    assert catalog.AddressBook(ttl=0).ongoing(engine, window_seconds=WINDOW) == {FileRef(bucket, "second.pdf")}


def test_the_address_book_forgets_documents_that_stopped_being_ongoing(engine: sa.Engine) -> None:
    """A document that is no longer ongoing leaves the result at once."""
    # Given
    bucket = kb()
    with engine.begin() as conn:
        doc = insert_document(conn, kb_id=bucket, location="a.pdf")
        insert_document(conn, kb_id=bucket, location="b.pdf")
    book = catalog.AddressBook()
    assert len(book.ongoing(engine, window_seconds=WINDOW)) == 2
    # When
    with engine.begin() as conn:
        conn.execute(schema.document.update().where(schema.document.c.id == doc).values(run="3"))
    # Expect
    assert book.ongoing(engine, window_seconds=WINDOW) == {FileRef(bucket, "b.pdf")}


def test_an_ongoing_document_is_returned_with_its_address(engine: sa.Engine) -> None:
    """A running document with an unfinished task is ongoing, at (kb_id, location)."""
    # Given
    bucket = kb()
    with engine.begin() as conn:
        insert_document(conn, kb_id=bucket, location="reports/Q3 résumé.pdf")
    # Expect
    assert ongoing(engine) == {FileRef(bucket, "reports/Q3 résumé.pdf")}


NOT_ONGOING: dict[str, dict[str, Any]] = {
    "run done": {"run": "3"},
    "run cancelled": {"run": "2"},
    "run failed": {"run": "4"},
    "run not started": {"run": "0"},
    "invalid document": {"status": "0"},
    "virtual document": {"doc_type": "virtual"},
    "task finished": {"progress": [1.0]},
    "task older than the window": {"created_ms": int((time.time() - WINDOW - 60) * 1000)},
    "no task": {"progress": []},
}


@pytest.mark.parametrize("variant", NOT_ONGOING.values(), ids=NOT_ONGOING.keys())
def test_a_document_that_is_not_ongoing_is_not_returned(engine: sa.Engine, variant: dict[str, Any]) -> None:
    """Finished, cancelled, failed, unstarted, invalid, virtual, stale or task-less documents are left out."""
    # Given one ongoing document and one that differs from it in a single respect
    bucket = kb()
    with engine.begin() as conn:
        insert_document(conn, kb_id=bucket, location="ongoing.pdf")
        insert_document(conn, kb_id=bucket, location="other.pdf", **variant)
    # Expect
    assert ongoing(engine) == {FileRef(bucket, "ongoing.pdf")}


def test_a_failed_task_still_counts_as_ongoing(engine: sa.Engine) -> None:
    """A task with progress -1 (failed) matches `progress < 1`, as in RAGFlow, while the document runs."""
    # Given
    bucket = kb()
    with engine.begin() as conn:
        insert_document(conn, kb_id=bucket, location="failed.pdf", progress=[1.0, -1.0])
    # Expect
    assert ongoing(engine) == {FileRef(bucket, "failed.pdf")}


ADDRESSES: dict[str, tuple[LinkedFile | None, str]] = {
    # linked file, and which address the document is read from
    "knowledge-base upload": (LinkedFile(parent_id="folder1", location="f.pdf", source_type="knowledgebase"), "doc"),
    "file-manager file": (LinkedFile(parent_id="folder1", location="fm/f.pdf", source_type=""), "file"),
    "no file2document row": (None, "doc"),
}


@pytest.mark.parametrize(("linked", "source"), ADDRESSES.values(), ids=ADDRESSES.keys())
def test_the_address_follows_ragflows_storage_rule(engine: sa.Engine, linked: LinkedFile | None, source: str) -> None:
    """File-manager files live at (file.parent_id, file.location); everything else at (kb_id, document.location)."""
    # Given
    bucket = kb()
    with engine.begin() as conn:
        insert_document(conn, kb_id=bucket, location="doc/d.pdf", file=linked)
    # When
    refs = ongoing(engine)
    # Expect
    if source == "file":
        assert linked is not None and linked.location is not None
        assert refs == {FileRef(linked.parent_id, linked.location)}
    else:
        assert refs == {FileRef(bucket, "doc/d.pdf")}


def test_a_null_source_type_is_read_like_a_file_manager_file(engine: sa.Engine) -> None:
    """A linked file whose source_type is NULL lives at (file.parent_id, file.location), like ''."""
    if not schema.file.c.source_type.nullable:
        pytest.skip("file.source_type is NOT NULL in RAGFlow's schema: a NULL cannot be stored")
    # Given
    with engine.begin() as conn:
        insert_document(conn, kb_id=kb(), location="d.pdf", file=LinkedFile("folder1", "fm.pdf", source_type=None))
    # Expect
    assert ongoing(engine) == {FileRef("folder1", "fm.pdf")}


def test_many_page_range_tasks_give_one_pair(engine: sa.Engine) -> None:
    """A document split into 20 tasks is one row of the query, not 20."""
    # Given
    bucket = kb()
    with engine.begin() as conn:
        insert_document(conn, kb_id=bucket, location="big.pdf", progress=[0.1] * 20)
    # When
    with engine.connect() as conn:
        rows = conn.execute(catalog.ongoing_query(int((time.time() - WINDOW) * 1000))).all()
    # Expect
    assert [tuple(row) for row in rows] == [(bucket, "big.pdf")]
    assert ongoing(engine) == {FileRef(bucket, "big.pdf")}


def test_rows_without_a_location_are_skipped(engine: sa.Engine) -> None:
    """NULL, empty or blank locations, of documents or of file-manager files, give no address."""
    # Given
    bucket = kb()
    with engine.begin() as conn:
        insert_document(conn, kb_id=bucket, location=None)
        insert_document(conn, kb_id=bucket, location="")
        insert_document(conn, kb_id=bucket, location="   ")
        insert_document(conn, kb_id=bucket, location="x.pdf", file=LinkedFile("folder1", None, source_type=""))
        insert_document(conn, kb_id=bucket, location="kept.pdf")
    # Expect
    assert ongoing(engine) == {FileRef(bucket, "kept.pdf")}


def test_custom_sql_replaces_the_query(engine: sa.Engine) -> None:
    """CACHETASKS_ONGOING_SQL without parameters is run as written, % literals and final semicolon included."""
    # Given
    with engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="done.pdf", run="3", progress=[1.0])
        insert_document(conn, kb_id="kb1", location="done.txt", run="3", progress=[1.0])
        insert_document(conn, kb_id="kb1", location="ongoing.pdf")
    # When
    refs = ongoing(engine, sql="SELECT kb_id, location FROM document WHERE run = '3' AND location LIKE '%.pdf';")
    # Expect
    assert refs == {FileRef("kb1", "done.pdf")}


def test_custom_sql_gets_the_window_start_as_since_ms(engine: sa.Engine) -> None:
    """:since_ms is bound to now minus the window, in milliseconds."""
    # Given
    now = time.time()
    with engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="fresh.pdf", created_ms=int((now - WINDOW + 30) * 1000))
        insert_document(conn, kb_id="kb1", location="stale.pdf", created_ms=int((now - WINDOW - 30) * 1000))
    sql = (
        "SELECT DISTINCT d.kb_id, d.location FROM task t JOIN document d ON t.doc_id = d.id "
        "WHERE t.create_time >= :since_ms AND t.create_time <= :now_ms"
    )
    # When
    refs = ongoing(engine, sql=sql, now=now)
    # Expect
    assert refs == {FileRef("kb1", "fresh.pdf")}


@pytest.mark.parametrize(
    ("sql", "width"),
    [("SELECT kb_id FROM document", 1), ("SELECT kb_id, location, name FROM document", 3)],
    ids=["1 column", "3 columns"],
)
def test_custom_sql_of_the_wrong_width_is_a_catalog_error(engine: sa.Engine, sql: str, width: int) -> None:
    """A query that does not return (bucket, location) is refused with the column count it returned."""
    # Given
    with engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="a.pdf")
    # When
    with pytest.raises(CatalogError) as caught:
        ongoing(engine, sql=sql)
    # Expect
    assert "2 columns" in str(caught.value)
    assert f"not {width}" in str(caught.value)


@pytest.mark.parametrize(
    "sql",
    ["SELEC kb_id, location FROM document", "SELECT bucket, location FROM no_such_table"],
    ids=["syntax error", "missing table"],
)
def test_broken_custom_sql_is_a_catalog_error(engine: sa.Engine, sql: str) -> None:
    """The database's complaint arrives as a CatalogError, not as an SQLAlchemy exception."""
    # When
    with pytest.raises(CatalogError) as caught:
        ongoing(engine, sql=sql)
    # Expect
    assert "ongoing query failed" in str(caught.value)
    assert not isinstance(caught.value, sa.exc.SQLAlchemyError)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1:1/x", "sqlite:////nonexistent-dir/cachetasks/x.sqlite3", "silent"],
    ids=["postgres closed port", "sqlite missing folder", "postgres silent server"],
)
def test_an_unreachable_database_is_a_quick_catalog_error(url: str, request: pytest.FixtureRequest) -> None:
    """A database that refuses, is missing or never answers gives a CatalogError within seconds."""
    # Given
    if url == "silent":
        url = f"postgresql://postgres@127.0.0.1:{request.getfixturevalue('silent_server')}/x"
    engine = catalog.make_engine(url, connect_timeout=1)
    started = time.monotonic()
    # When
    try:
        with pytest.raises(CatalogError):
            ongoing(engine)
    finally:
        engine.dispose()
    # Expect
    assert time.monotonic() - started < 10
