"""One collect, called directly against a private Redis and a SQLite task database."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachetasks import catalog
from cachetasks.cache import Cache, SkipReason, Source
from cachetasks.cache.keys import COLLECT_LOCK, inflight_key
from cachetasks.catalog import schema
from cachetasks.collector import CollectReport, Outages, collect
from cachetasks.errors import CacheUnavailable, CatalogError
from cachetasks.ops.demo import LinkedFile, finish_document, insert_document
from cachetasks.ref import FileRef
from cachetasks.settings import Settings
from testbed.servers import RedisServer, free_port

# Every collect full, as the tests of what a full collect does need; those of the others say so.
SETTINGS = Settings(ttl=720, inflight_ttl=30, reconcile_interval=0)


class Queue:
    """What a collect enqueues, in order; can be made to fail like a broker that is down."""

    def __init__(self, *, fails: bool = False) -> None:
        self.batches: list[list[FileRef]] = []
        self.fails = fails

    def __call__(self, refs: Sequence[FileRef]) -> None:
        if self.fails:
            raise redis.ConnectionError("broker down")
        self.batches.append(list(refs))

    @property
    def refs(self) -> list[FileRef]:
        return [ref for batch in self.batches for ref in batch]


@pytest.fixture
def cache(cache: Cache) -> Cache:
    """The shared fixture's cache, on an emptied database of our private redis-server."""
    cache.client.flushdb()
    return cache


def run(engine: sa.Engine, cache: Cache, queue: Queue, **settings: object) -> CollectReport | None:
    return collect(engine, cache, Settings(**{**SETTINGS.__dict__, **settings}), queue)


def add(engine: sa.Engine, location: str | None, **columns: object) -> str:
    with engine.begin() as conn:
        return insert_document(conn, kb_id="kb1", location=location, **columns)  # type: ignore[arg-type]


def test_each_uncached_ongoing_file_is_enqueued_once_and_found_in_flight_afterwards(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """A document of 20 page-range tasks and another one: two copies queued, then none while they are claimed."""
    # Given
    add(sqlite_engine, "book.pdf", progress=[0.0] * 20)
    add(sqlite_engine, "note.txt")
    queue = Queue()
    # When two collects run
    first, second = run(sqlite_engine, cache, queue), run(sqlite_engine, cache, queue)
    # Expect
    assert sorted(queue.refs) == [FileRef("kb1", "book.pdf"), FileRef("kb1", "note.txt")]
    assert first is not None and (first.ongoing, first.enqueued, first.in_flight) == (2, 2, 0)
    assert second is not None and (second.ongoing, second.enqueued, second.in_flight) == (2, 0, 2)
    assert cache.client.get(inflight_key("kb1/book.pdf")) == b"queued"
    assert cache.last_collected() is not None


def test_a_cached_file_is_not_enqueued_and_its_ttl_is_renewed_only_below_half(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """A key with 500 s of 720 left is left alone; one with 300 s left is renewed to 720; neither is enqueued."""
    # Given
    add(sqlite_engine, "fresh.pdf")
    add(sqlite_engine, "old.pdf")
    cache.client.set("kb1/fresh.pdf", b"f", ex=500)
    cache.client.set("kb1/old.pdf", b"o", ex=300)
    queue = Queue()
    # When
    report = run(sqlite_engine, cache, queue)
    # Expect
    assert queue.refs == []
    assert report is not None and report.cached == 2
    assert 498 <= cache.client.ttl("kb1/fresh.pdf") <= 500
    assert 718 <= cache.client.ttl("kb1/old.pdf") <= 720


def test_a_collect_counts_as_caught_the_uncached_files_it_enqueues_but_not_a_version_check(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """Of two enqueued files, the uncached one is caught; the cached one due for a check of storage is not."""
    # Given a file this service cached whose TTL fell below half, and an uncached one
    add(sqlite_engine, "old.pdf")
    add(sqlite_engine, "new.pdf")
    old = FileRef("kb1", "old.pdf")
    cache.put(old.key, b"o", ttl=300)
    cache.settle(old, "task-1", stored=1, ttl=300, source=Source("", "etag-1"))
    queue = Queue()
    # When
    report = run(sqlite_engine, cache, queue)
    # Expect both enqueued, one of them caught
    assert sorted(queue.refs) == [FileRef("kb1", "new.pdf"), old]
    assert report is not None and (report.enqueued, report.caught) == (2, 1)


def test_a_skipped_file_is_counted_and_not_enqueued(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """A file remembered as missing waits for its negative TTL; the report counts it."""
    add(sqlite_engine, "gone.pdf")
    cache.remember_skip(FileRef("kb1", "gone.pdf"), SkipReason.MISSING, 60)
    queue = Queue()
    report = run(sqlite_engine, cache, queue)
    assert queue.refs == []
    assert report is not None and (report.skipped, report.enqueued) == (1, 0)


def test_a_file_someone_deleted_is_enqueued_again_at_the_next_collect(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """A key this service wrote that vanished while Redis evicted nothing was deleted: it is copied again at once."""
    # Given a file this service cached, and a first collect
    add(sqlite_engine, "doc.pdf")
    ref = FileRef("kb1", "doc.pdf")
    cache.put(ref.key, b"cached", ttl=720)
    cache.settle(ref, "task-1", stored=6, ttl=720)
    queue = Queue()
    assert run(sqlite_engine, cache, queue) is not None and queue.refs == []
    # When someone deletes it
    cache.client.delete(ref.key)
    # Expect the next collect to enqueue it, and the ledger to forget the deleted bytes
    report = run(sqlite_engine, cache, queue)
    assert queue.refs == [ref]
    assert report is not None and (report.enqueued, report.evicted) == (1, 0)
    assert cache.held_bytes() == 0


def test_a_file_redis_evicted_waits_for_its_ttl_period(
    sqlite_engine: sa.Engine, redis_server_with: Callable[..., RedisServer]
) -> None:
    """A key that vanished while Redis was evicting is counted evicted and not copied again before its TTL ends."""
    # Given a cached file on a small Redis that evicts keys with a TTL, and a first collect
    server = redis_server_with("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru")
    cache = Cache(server.client(1))
    add(sqlite_engine, "doc.pdf")
    ref = FileRef("kb1", "doc.pdf")
    cache.put(ref.key, b"x" * 100_000, ttl=720)
    cache.settle(ref, "task-1", stored=100_000, ttl=720)
    queue = Queue()
    run(sqlite_engine, cache, queue)
    # When others' keys fill Redis and it evicts the file
    filler = server.client(2)
    for i in range(60):
        filler.set(f"filler-{i}", b"f" * 100_000, ex=600)
    assert not cache.client.exists(ref.key) and filler.info("stats")["evicted_keys"] > 0
    # Expect two collects to hold it back
    reports = [run(sqlite_engine, cache, queue) for _ in range(2)]
    assert queue.refs == []
    assert [(r.evicted, r.enqueued) for r in reports if r is not None] == [(1, 0), (1, 0)]


def test_unusable_addresses_are_dropped_counted_and_warned_about_once(
    sqlite_engine: sa.Engine, cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    """A '..' location and a service-key bucket are never enqueued, counted invalid, and warned about once."""
    # Given
    add(sqlite_engine, "../kb2/secret.pdf")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="cachetasks:inflight:kb1", location="x.pdf")
    add(sqlite_engine, "fine.pdf")
    queue = Queue()
    # When three collects run
    with caplog.at_level(logging.WARNING, logger="cachetasks"):
        reports = [run(sqlite_engine, cache, queue) for _ in range(3)]
    # Expect
    assert queue.refs == [FileRef("kb1", "fine.pdf")]
    assert [r.invalid for r in reports if r is not None] == [2, 2, 2]
    assert len([r for r in caplog.records if "ignoring ongoing file" in r.getMessage()]) == 2


def test_claims_are_released_when_the_copies_cannot_be_enqueued(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """A broker failing mid-collect leaves no claim behind: the next collect enqueues the file."""
    # Given
    add(sqlite_engine, "doc.pdf")
    # When the first collect cannot publish
    with pytest.raises(CacheUnavailable):
        run(sqlite_engine, cache, Queue(fails=True))
    # Expect the claim gone, and the next collect to enqueue it
    assert not cache.client.exists(inflight_key("kb1/doc.pdf"))
    queue = Queue()
    run(sqlite_engine, cache, queue)
    assert queue.refs == [FileRef("kb1", "doc.pdf")]


def test_claims_of_copies_waiting_in_the_queue_outlive_their_ttl_and_lapse_once_their_messages_left(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """1 s claims, a queue nobody consumes for 2.5 s: nothing queued twice; then two messages taken by a worker
    that died: those two lapse and are queued again, the third still waits, claimed."""
    # Given three new files, and a queue that holds what collects put in it until told it was consumed
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        add(sqlite_engine, name)
    queue, consumed = Queue(), [0]

    def waiting() -> int:
        return len(queue.refs) - consumed[0]

    def collect_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            collect(sqlite_engine, cache, Settings(**{**SETTINGS.__dict__, "inflight_ttl": 1}), queue, waiting=waiting)
            time.sleep(0.2)

    # When collects run every 0.2 s for 2.5 s while the three copies wait
    collect_for(2.5)
    # Expect each queued once, still claimed
    assert sorted(queue.refs) == [FileRef("kb1", n) for n in ("a.pdf", "b.pdf", "c.pdf")]
    assert cache.client.exists(*(inflight_key(f"kb1/{n}") for n in ("a.pdf", "b.pdf", "c.pdf"))) == 3
    # When a worker takes the first two messages and dies before starting them
    first_two, third = queue.refs[:2], queue.refs[2]
    consumed[0] = 2
    collect_for(2.0)
    # Expect those two queued again, once each, and the third still waiting, claimed
    assert sorted(queue.refs[3:]) == sorted(first_two)
    assert cache.client.exists(inflight_key(third.key))


def test_a_collect_while_another_holds_the_lock_does_nothing(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """Collects never overlap: with the lock taken, collect returns None, claims and enqueues nothing."""
    add(sqlite_engine, "doc.pdf")
    cache.client.set(COLLECT_LOCK, "another", px=10_000)
    queue = Queue()
    assert run(sqlite_engine, cache, queue) is None
    assert queue.refs == []
    assert not cache.client.exists(inflight_key("kb1/doc.pdf"))


def test_with_evict_on_done_only_keys_the_service_wrote_for_finished_documents_go(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """CACHETASKS_EVICT_ON_DONE: the service's key of a finished document is deleted; others' keys stay."""
    # Given the service's copy of a document that then finished, and a key someone else set for another
    doc = add(sqlite_engine, "ours.pdf")
    add(sqlite_engine, "theirs.pdf", run="3")
    cache.put("kb1/ours.pdf", b"ours", ttl=720)
    cache.settle(FileRef("kb1", "ours.pdf"), "task-1", stored=4, ttl=720)
    cache.client.set("kb1/theirs.pdf", b"theirs", ex=600)
    with sqlite_engine.begin() as conn:
        finish_document(conn, doc)
    # When
    run(sqlite_engine, cache, Queue(), evict_on_done=True)
    # Expect
    assert cache.client.mget("kb1/ours.pdf", "kb1/theirs.pdf") == [None, b"theirs"]
    assert cache.held_bytes() == 0


def test_with_an_address_book_files_are_addressed_by_ragflows_rule(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """Through the worker's address book: an upload from its kb bucket, a file-manager file from its folder."""
    # Given
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="up.pdf", file=LinkedFile("folder9", "ignored.pdf"))
        insert_document(conn, kb_id="kb1", location="doc.pdf", file=LinkedFile("folder9", "mine.pdf", ""))
    queue = Queue()
    # When
    collect(sqlite_engine, cache, SETTINGS, queue, addresses=catalog.AddressBook())
    # Expect
    assert sorted(queue.refs) == [FileRef("folder9", "mine.pdf"), FileRef("kb1", "up.pdf")]


def test_a_custom_query_decides_which_files_are_ongoing(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """CACHETASKS_ONGOING_SQL replaces RAGFlow's query, with :since_ms bound to the window's start."""
    add(sqlite_engine, "ragflow.pdf")
    sql = "SELECT 'custom', 'file-' || :since_ms"
    queue = Queue()
    before = int(time.time() * 1000) - 600_000
    run(sqlite_engine, cache, queue, ongoing_sql=sql)
    [ref] = queue.refs
    assert ref.bucket == "custom" and before <= int(ref.location.removeprefix("file-")) <= before + 5000


def test_a_failing_database_is_a_catalog_error_and_leaves_no_lock(cache: Cache, tmp_path: Path) -> None:
    """A query that fails (no tables) is one CatalogError; the collect lock is released for the next collect."""
    engine = catalog.make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}", connect_timeout=1)
    with pytest.raises(CatalogError):
        run(engine, cache, Queue())
    assert not cache.client.exists(COLLECT_LOCK)


def test_a_database_outage_is_warned_about_once_per_interval_and_its_end_once(
    sqlite_engine: sa.Engine, cache: Cache, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three failing collects make one WARNING naming the failure; the first good one after, one line saying so."""
    # Given a database that cannot be opened, and one that works
    down = catalog.make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.sqlite3'}", connect_timeout=1)
    outages = Outages()
    # When three collects fail, then one succeeds
    with caplog.at_level(logging.INFO, logger="cachetasks"):
        for _ in range(3):
            with pytest.raises(CatalogError):
                collect(down, cache, SETTINGS, Queue(), outages=outages)
        collect(sqlite_engine, cache, SETTINGS, Queue(), outages=outages)
    # Expect
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "database" in r.getMessage()]
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert "CatalogError" in lines[0][1] and "unable to open database file" in lines[0][1]
    assert lines[1][1] == "collects reach the task database again (2 more failures since the last report)"


def test_an_unreachable_redis_is_cache_unavailable(sqlite_engine: sa.Engine) -> None:
    """Redis refusing connections is CacheUnavailable, not a raw redis-py error."""
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))  # fails at once
    with pytest.raises(CacheUnavailable):
        run(sqlite_engine, Cache(client), Queue())


def test_a_collect_that_outlasts_its_lock_keeps_it_and_a_concurrent_collect_skips(
    sqlite_engine: sa.Engine, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one collect is slow to enqueue, a second one finds the lock taken and does nothing."""
    # Given a collect whose enqueue takes a while
    add(sqlite_engine, "doc.pdf")
    started, release = threading.Event(), threading.Event()

    def slow(refs: Sequence[FileRef]) -> None:
        started.set()
        release.wait(5)

    thread = threading.Thread(target=lambda: collect(sqlite_engine, cache, SETTINGS, slow))
    thread.start()
    try:
        assert started.wait(5)
        # When another collect runs meanwhile
        assert run(sqlite_engine, cache, Queue()) is None
    finally:
        release.set()
        thread.join()
    # Expect the lock released after the first
    assert not cache.client.exists(COLLECT_LOCK)


# -- collects between full ones: only what changed --------------------------------------------------------------


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """RAGFlow's tables, empty, in each database the service supports."""
    fixture = {"postgresql": "pg_engine", "mysql": "mysql_engine", "sqlite": "sqlite_engine"}[request.param]
    made: sa.Engine = request.getfixturevalue(fixture)
    return made


def follow(
    engine: sa.Engine, cache: Cache, queue: Queue, book: catalog.AddressBook, **settings: object
) -> CollectReport:
    """A collect as the worker runs it, with its address book; full ones every 300 s unless told otherwise."""
    merged = Settings(**{**SETTINGS.__dict__, "reconcile_interval": 300.0, **settings})
    report = collect(engine, cache, merged, queue, addresses=book)
    assert report is not None
    return report


class Statements:
    """The SQL statements an engine runs."""

    def __init__(self, engine: sa.Engine) -> None:
        self.seen: list[str] = []
        self.engine = engine
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        self.seen.append(statement)

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)


def test_a_collect_between_full_ones_checks_only_the_documents_new_since_the_last_look(
    engine: sa.Engine, cache: Cache
) -> None:
    """With 30 ongoing files cached, a collect after the first full one reads and checks only the 2 new ones."""
    # Given 30 ongoing files, cached, and a first (full) collect
    bucket = "kb" + uuid.uuid4().hex[:12]
    with engine.begin() as conn:
        for i in range(30):
            insert_document(conn, kb_id=bucket, location=f"old-{i}.pdf")
    for i in range(30):
        cache.client.set(f"{bucket}/old-{i}.pdf", b"x", ex=700)
    book, queue = catalog.AddressBook(), Queue()
    first = follow(engine, cache, queue, book)
    assert (first.full, first.ongoing, first.checked, first.cached) == (True, 30, 30, 30)
    # When two documents start, and the next collect runs
    with engine.begin() as conn:
        for name in ("new-1.pdf", "new-2.pdf"):
            insert_document(conn, kb_id=bucket, location=name)
    statements = Statements(engine)
    try:
        report = follow(engine, cache, queue, book)
    finally:
        statements.close()
    # Expect only the two new files checked and enqueued, without the query of every ongoing document
    assert sorted(queue.refs) == [FileRef(bucket, "new-1.pdf"), FileRef(bucket, "new-2.pdf")]
    assert (report.full, report.checked, report.enqueued, report.cached) == (False, 2, 2, 0)
    assert report.ongoing == 32
    assert not any("recent_task" in s for s in statements.seen), statements.seen


def test_a_task_committed_after_a_newer_one_with_an_older_create_time_is_still_seen(
    engine: sa.Engine, cache: Cache
) -> None:
    """A task whose create_time (set by RAGFlow before its commit) is 1.5 s older than the newest seen is claimed."""
    # Given a full collect, then a collect that saw a new task, and one that saw nothing new
    book, queue = catalog.AddressBook(), Queue()
    follow(engine, cache, queue, book)
    with engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="quick.pdf")
    follow(engine, cache, queue, book)
    newest = int(time.time() * 1000)
    follow(engine, cache, queue, book)
    # When a task stamped before the newest one is committed only now, its rows all stamped then
    with engine.begin() as conn:
        late = insert_document(conn, kb_id="kb1", location="late.pdf", created_ms=newest - 1500)
        for table in (schema.document, schema.task):
            column = table.c.id if table is schema.document else table.c.doc_id
            conn.execute(table.update().where(column == late).values(update_time=newest - 1500))
    report = follow(engine, cache, queue, book)
    # Expect it claimed by the next collect
    assert queue.refs == [FileRef("kb1", "quick.pdf"), FileRef("kb1", "late.pdf")]
    assert (report.full, report.enqueued) == (False, 1)


def test_a_re_upload_under_the_same_name_is_replaced_by_the_next_collect_between_full_ones(
    engine: sa.Engine, cache: Cache
) -> None:
    """A document deleted and uploaded again at its address: the value copied for the old one is claimed again."""
    # Given a file cached for its document, and a full collect
    with engine.begin() as conn:
        old = insert_document(conn, kb_id="kb1", location="guide.pdf", created_ms=int(time.time() * 1000) - 5000)
    ref = FileRef("kb1", "guide.pdf")
    cache.put(ref.key, b"v1", ttl=720)
    cache.settle(ref, "task-1", stored=2, ttl=720, source=Source(old, "etag-1"))
    book, queue = catalog.AddressBook(), Queue()
    assert follow(engine, cache, queue, book).full and queue.refs == []
    # When the user deletes it and uploads a corrected file under the same name
    with engine.begin() as conn:
        for table, column in ((schema.task, schema.task.c.doc_id), (schema.document, schema.document.c.id)):
            conn.execute(table.delete().where(column == old))
        insert_document(conn, kb_id="kb1", location="guide.pdf")
    report = follow(engine, cache, queue, book)
    # Expect the next collect, not a full one, to claim it for the new document
    assert (report.full, queue.refs) == (False, [ref])


def test_a_key_someone_deleted_is_claimed_again_at_the_next_full_collect_not_before(
    engine: sa.Engine, cache: Cache
) -> None:
    """Collects between full ones look only at what changed in the database: a DEL waits for the next full one."""
    # Given a cached file, and a full collect
    add(engine, "doc.pdf")
    ref = FileRef("kb1", "doc.pdf")
    cache.put(ref.key, b"cached", ttl=720)
    cache.settle(ref, "task-1", stored=6, ttl=720)
    book, queue = catalog.AddressBook(), Queue()
    follow(engine, cache, queue, book)
    # When someone deletes the key
    cache.client.delete(ref.key)
    # Expect collects between full ones to leave it, and the next full one to claim it
    assert [follow(engine, cache, queue, book).full for _ in range(3)] == [False] * 3
    assert queue.refs == []
    assert follow(engine, cache, queue, book, reconcile_interval=0).full
    assert queue.refs == [ref]


def test_a_document_that_stopped_being_ongoing_is_noticed_at_the_next_full_collect(
    engine: sa.Engine, cache: Cache
) -> None:
    """With CACHETASKS_EVICT_ON_DONE, the key of a document finished without a change of stamps goes at the full one."""
    # Given the service's copy of an ongoing document, and a full collect
    doc = add(engine, "ours.pdf")
    ref = FileRef("kb1", "ours.pdf")
    cache.put(ref.key, b"ours", ttl=720)
    cache.settle(ref, "task-1", stored=4, ttl=720)
    book, queue = catalog.AddressBook(), Queue()
    follow(engine, cache, queue, book, evict_on_done=True)
    # When it finishes
    with engine.begin() as conn:
        finish_document(conn, doc)
    # Expect the key kept by a collect between full ones, deleted by the next full one
    assert not follow(engine, cache, queue, book, evict_on_done=True).full
    assert cache.client.exists(ref.key)
    full = follow(engine, cache, queue, book, evict_on_done=True, reconcile_interval=0)
    assert (full.full, full.ongoing, cache.client.exists(ref.key)) == (True, 0, 0)


def test_after_a_collect_that_failed_the_next_one_is_full(engine: sa.Engine, cache: Cache) -> None:
    """The changes a failed collect read are not lost: a broker down while one enqueues makes the next one full."""
    # Given a full collect, then a new document whose copy cannot be enqueued
    book = catalog.AddressBook()
    follow(engine, cache, Queue(), book)
    add(engine, "doc.pdf")
    with pytest.raises(CacheUnavailable):
        follow(engine, cache, Queue(fails=True), book)
    # When the next collect runs
    queue = Queue()
    report = follow(engine, cache, queue, book)
    # Expect a full one, which enqueues the file
    assert (report.full, queue.refs) == (True, [FileRef("kb1", "doc.pdf")])


def test_full_collects_come_once_per_reconcile_interval(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """Collects every 0.25 s with a 1.5 s reconcile interval: the first is full, then one about every 1.5 s."""
    book, queue = catalog.AddressBook(), Queue()
    started, fulls = time.monotonic(), []
    while time.monotonic() - started < 3.6:
        if follow(sqlite_engine, cache, queue, book, collect_interval=0.25, reconcile_interval=1.5).full:
            fulls.append(time.monotonic() - started)
        time.sleep(0.25)
    assert len(fulls) == 3 and fulls[0] < 0.1, fulls
    assert all(1.2 <= b - a <= 1.9 for a, b in itertools.pairwise(fulls)), fulls


def test_with_a_custom_query_every_collect_is_full(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """CACHETASKS_ONGOING_SQL's rows name no task to follow: every collect reads them all."""
    book, queue = catalog.AddressBook(), Queue()
    reports = [follow(sqlite_engine, cache, queue, book, ongoing_sql="SELECT 'custom', 'a.pdf'") for _ in range(3)]
    assert [(r.full, r.ongoing) for r in reports] == [(True, 1)] * 3
