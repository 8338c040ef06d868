"""The ongoing query against real databases: one body per behaviour, run on PostgreSQL, MySQL (MariaDB) and SQLite."""

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


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """RAGFlow's tables, empty, in each database the service supports."""
    fixture = {"postgresql": "pg_engine", "mysql": "mysql_engine", "sqlite": "sqlite_engine"}[request.param]
    made: sa.Engine = request.getfixturevalue(fixture)
    return made


def kb() -> str:
    return "kb" + uuid.uuid4().hex[:16]


def ongoing(engine: sa.Engine, **kwargs: Any) -> set[FileRef]:
    found = catalog.ongoing(engine, window_seconds=WINDOW, **kwargs).refs
    if "sql" not in kwargs:  # a collect's path (a kept address book) agrees
        book = catalog.AddressBook()
        book.ongoing(engine, window_seconds=WINDOW)
        assert book.ongoing(engine, window_seconds=WINDOW).refs == found
        # and so does the listener's path, asked about every document there is
        with engine.connect() as conn:
            every = [str(doc) for doc in conn.execute(sa.select(schema.document.c.id)).scalars()]
        assert set(catalog.addresses_of_ongoing(engine, every, window_seconds=WINDOW)) == found
    return found


def now_ms() -> int:
    return int(time.time() * 1000)


class Statements:
    """The SQL statements an engine runs, to tell which lookups a collect made."""

    def __init__(self, engine: sa.Engine) -> None:
        self.seen: list[str] = []
        sa.event.listen(engine, "before_cursor_execute", self._seen)
        self.engine = engine

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.seen.append(statement)

    def lookups(self) -> int:
        """How many address lookups (joins to file2document) ran."""
        return sum("file2document" in s and "JOIN" in s and "update_time" not in s for s in self.seen)

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)


def test_the_address_book_looks_up_a_known_unchanged_document_only_once(engine: sa.Engine) -> None:
    """Collects after the first ask which documents are ongoing and what changed, not every address again."""
    # Given a book that has seen a document whose rows last changed a minute ago
    with engine.begin() as conn:
        insert_document(conn, kb_id=kb(), location="doc.pdf")
        for table in (schema.document, schema.file, schema.file2document):
            conn.execute(table.update().values(update_time=now_ms() - 60_000))
    book = catalog.AddressBook()
    statements = Statements(engine)
    try:
        book.ongoing(engine, window_seconds=WINDOW)
        first = statements.lookups()
        # When three more collects run with nothing changed
        for _ in range(3):
            book.ongoing(engine, window_seconds=WINDOW)
        # Expect no more address lookups
        assert (first, statements.lookups()) == (1, 1)
    finally:
        statements.close()


@pytest.mark.parametrize("row", ["document", "file", "file2document"])
def test_the_address_book_follows_a_document_whose_rows_change(engine: sa.Engine, row: str) -> None:
    """A document moved to another address (its own row, its file moved to another folder, or relinked to
    another file) is found there at the next look: RAGFlow sets update_time on every write."""
    # Given a file-manager document the book has seen at folder1/a.pdf
    with engine.begin() as conn:
        doc = insert_document(conn, kb_id="kb1", location="a.pdf", file=LinkedFile("folder1", "a.pdf", ""))
    book = catalog.AddressBook()
    assert book.ongoing(engine, window_seconds=WINDOW).refs == {FileRef("folder1", "a.pdf")}
    # When its address changes in one of its rows, as RAGFlow writes them
    f, f2d, d = schema.file, schema.file2document, schema.document
    with engine.begin() as conn:
        file_id = conn.execute(sa.select(f2d.c.file_id).where(f2d.c.document_id == doc)).scalar_one()
        if row == "file":  # moved to another folder: RAGFlow's move_files
            conn.execute(f.update().where(f.c.id == file_id).values(parent_id="folder2", update_time=now_ms()))
        elif row == "file2document":  # linked to another file
            conn.execute(
                f.insert().values(id="f" + uuid.uuid4().hex[:31], parent_id="folder2", location="a.pdf", source_type="")
            )
            new_file = conn.execute(sa.select(f.c.id).where(f.c.parent_id == "folder2")).scalar_one()
            conn.execute(f2d.update().where(f2d.c.document_id == doc).values(file_id=new_file, update_time=now_ms()))
        else:  # the document's own row: no longer a file-manager file
            conn.execute(f2d.delete().where(f2d.c.document_id == doc))
            conn.execute(d.update().where(d.c.id == doc).values(kb_id="folder2", update_time=now_ms()))
    # Expect the new address, marked as fresh, and the old one gone
    after = book.ongoing(engine, window_seconds=WINDOW)
    assert after.refs == after.fresh == {FileRef("folder2", "a.pdf")}
    assert after.documents == {FileRef("folder2", "a.pdf"): doc}


def test_a_look_at_changes_follows_a_moved_file_and_names_only_what_changed(engine: sa.Engine) -> None:
    """Between full looks, a file moved to another folder is found there, alone; the book forgets its old address."""
    # Given a book that has seen two file-manager documents
    with engine.begin() as conn:
        doc = insert_document(conn, kb_id="kb1", location="a.pdf", file=LinkedFile("folder1", "a.pdf", ""))
        insert_document(conn, kb_id="kb1", location="b.pdf", file=LinkedFile("folder1", "b.pdf", ""))
    book = catalog.AddressBook()
    assert len(book.ongoing(engine, window_seconds=WINDOW).refs) == 2
    assert book.changes(engine, window_seconds=WINDOW).documents == {}
    # When one is moved to another folder
    f, f2d = schema.file, schema.file2document
    with engine.begin() as conn:
        file_id = conn.execute(sa.select(f2d.c.file_id).where(f2d.c.document_id == doc)).scalar_one()
        conn.execute(f.update().where(f.c.id == file_id).values(parent_id="folder2", update_time=now_ms()))
    # Expect the next look at changes to name it at its new address, as fresh, and nothing else
    after = book.changes(engine, window_seconds=WINDOW)
    assert after.documents == {FileRef("folder2", "a.pdf"): doc}
    assert after.fresh == {FileRef("folder2", "a.pdf")}
    assert book.files == 2
    assert book.ongoing(engine, window_seconds=WINDOW).refs == {
        FileRef("folder1", "b.pdf"),
        FileRef("folder2", "a.pdf"),
    }


def test_a_newer_document_at_the_same_address_owns_it(engine: sa.Engine) -> None:
    """A re-upload under the same name reuses the address: the newer document is the one ongoing there."""
    # Given a document, seen by the book
    with engine.begin() as conn:
        old = insert_document(conn, kb_id="kb1", location="guide.pdf", created_ms=now_ms() - 5000)
    book = catalog.AddressBook()
    assert book.ongoing(engine, window_seconds=WINDOW).documents == {FileRef("kb1", "guide.pdf"): old}
    # When a corrected file is uploaded under the same name while the first still shows as ongoing
    with engine.begin() as conn:
        new = insert_document(conn, kb_id="kb1", location="guide.pdf")
    # Expect the new document at that address, as a change
    after = book.ongoing(engine, window_seconds=WINDOW)
    assert after.documents == {FileRef("kb1", "guide.pdf"): new}
    assert after.fresh == {FileRef("kb1", "guide.pdf")}
    assert book.ongoing(engine, window_seconds=WINDOW).fresh == set()


def test_addresses_that_differ_only_in_case_are_two_files(engine: sa.Engine) -> None:
    """'Guide.pdf' and 'guide.pdf' are two files on every database, whatever its collation merges."""
    with engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="Guide.pdf")
        insert_document(conn, kb_id="kb1", location="guide.pdf")
    assert ongoing(engine) == {FileRef("kb1", "Guide.pdf"), FileRef("kb1", "guide.pdf")}
    seen = catalog.first_seen(engine, window_seconds=WINDOW)
    assert set(seen) == {FileRef("kb1", "Guide.pdf"), FileRef("kb1", "guide.pdf")}


def test_announced_documents_are_looked_up_in_batches_and_only_the_ongoing_ones_returned(engine: sa.Engine) -> None:
    """The listener's lookup: 6,000 announced ids (one unknown, one finished) are two queries, and only
    the ongoing documents among them come back, each with its document; others' documents are not asked about."""
    # Given 5,998 ongoing documents, a finished one, and an ongoing one nobody announces
    bucket = kb()
    docs = [uuid.uuid4().hex for _ in range(5998)]
    created = now_ms()
    with engine.begin() as conn:  # in bulk: one row at a time would take seconds
        conn.execute(
            schema.document.insert(),
            [
                {"id": d, "kb_id": bucket, "type": "pdf", "location": f"d/{i}.pdf", "run": "1", "create_time": created}
                for i, d in enumerate(docs)
            ],
        )
        conn.execute(
            schema.task.insert(),
            [{"id": uuid.uuid4().hex, "doc_id": d, "progress": 0, "create_time": created} for d in docs],
        )
        done = insert_document(conn, kb_id=bucket, location="done.pdf", run="3")
        insert_document(conn, kb_id=bucket, location="unannounced.pdf")
    announced = [*docs, done, "graph_raptor_x"]
    statements = Statements(engine)
    try:
        # When
        found = catalog.addresses_of_ongoing(engine, announced, window_seconds=WINDOW)
        queries = len(statements.seen)
    finally:
        statements.close()
    # Expect
    assert queries == 2
    assert found == {FileRef(bucket, f"d/{i}.pdf"): doc for i, doc in enumerate(docs)}


def test_first_seen_gives_each_address_its_oldest_ongoing_task(engine: sa.Engine) -> None:
    """`status`'s query groups by document in SQL (MySQL 8's ONLY_FULL_GROUP_BY accepts it) and by address here."""
    # Given two documents at one address, and one elsewhere, with tasks of different ages
    start = now_ms()
    with engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="a.pdf", created_ms=start - 40_000, progress=[0.0, 0.5])
        insert_document(conn, kb_id="kb1", location="a.pdf", created_ms=start - 10_000)
        insert_document(conn, kb_id="kb1", location="b.pdf", created_ms=start - 20_000)
    # When
    seen = catalog.first_seen(engine, window_seconds=WINDOW)
    # Expect
    assert seen == {FileRef("kb1", "a.pdf"): start - 40_000, FileRef("kb1", "b.pdf"): start - 20_000}


def test_the_address_book_forgets_documents_that_stopped_being_ongoing(engine: sa.Engine) -> None:
    """A document that is no longer ongoing leaves the result at once."""
    # Given
    bucket = kb()
    with engine.begin() as conn:
        doc = insert_document(conn, kb_id=bucket, location="a.pdf")
        insert_document(conn, kb_id=bucket, location="b.pdf")
    book = catalog.AddressBook()
    assert len(book.ongoing(engine, window_seconds=WINDOW).refs) == 2
    # When
    with engine.begin() as conn:
        conn.execute(schema.document.update().where(schema.document.c.id == doc).values(run="3"))
    # Expect
    assert book.ongoing(engine, window_seconds=WINDOW).refs == {FileRef(bucket, "b.pdf")}


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
