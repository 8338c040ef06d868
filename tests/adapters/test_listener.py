"""The listener, called directly: a private Redis whose stream is written the way RAGFlow writes it,
a RAGFlow executor reading it through its consumer group alongside, and a SQLite task database."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.cache.counters import record_collect
from cachetasks.cache.keys import LISTENER_LOCK, METRICS, WANTED, inflight_key
from cachetasks.catalog import schema
from cachetasks.collector import collect
from cachetasks.listener import Listener, Role, running
from cachetasks.ops import metrics, status
from cachetasks.ops.demo import insert_document
from cachetasks.ref import FileRef
from cachetasks.settings import Settings
from testbed.ragflow import Executor, queue_task, stream_name, task
from testbed.servers import RedisServer
from tests.adapters.test_catalog import Statements
from tests.support.clocks import Clock

SETTINGS = Settings(ttl=720, inflight_ttl=30)


class Queue:
    """The copies enqueued, in order; fails like a broker that is down while `fails` is set."""

    def __init__(self) -> None:
        self.refs: list[FileRef] = []
        self.fails = False

    def __call__(self, refs: Sequence[FileRef]) -> None:
        if self.fails:
            raise redis.ConnectionError("broker down")
        self.refs.extend(refs)


@pytest.fixture
def cache(cache: Cache) -> Cache:
    """The shared fixture's cache, on an emptied database of our private redis-server."""
    cache.client.flushdb()
    return cache


@pytest.fixture
def executor(cache: Cache) -> Executor:
    """A RAGFlow task executor that has joined the consumer group of te.0.common, as RAGFlow does at start."""
    executor = Executor(cache.client)
    executor.join()
    return executor


def listener(
    engine: sa.Engine, cache: Cache, queue: Queue, *, node: str = "l1", clock: Clock | None = None, **settings: Any
) -> Listener:
    return Listener(
        engine,
        cache,
        Settings(**{**SETTINGS.__dict__, **settings}),
        queue,
        node=node,
        block=0.05,
        clock=clock or time.monotonic,
        **({"lease_seconds": 0.5} if node.startswith("short") else {}),
    )


def turns(listening: Listener, n: int = 2) -> None:
    """Take `n` turns: the first takes the lease and reads what is there, the next finds nothing more."""
    for _ in range(n):
        listening.step()


def add(engine: sa.Engine, location: str, **columns: Any) -> str:
    with engine.begin() as conn:
        return insert_document(conn, kb_id="kb1", location=location, **columns)


def counters(cache: Cache) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in cache.client.hgetall(METRICS).items()}


def test_a_queued_task_is_claimed_and_enqueued_and_ragflows_consumer_group_sees_nothing_of_it(
    sqlite_engine: sa.Engine, cache: Cache, executor: Executor
) -> None:
    """The file of a task queued the RAGFlow way is claimed for its document and enqueued once; the group's
    pending entries, last delivered id and reads are what the executor made them, and it still gets every task."""
    # Given two documents queued, the first one already taken (not yet acknowledged) by an executor
    first, second = add(sqlite_engine, "a.pdf"), add(sqlite_engine, "b.pdf")
    queue_task(cache.client, task(first))
    queue_task(cache.client, task(second))
    taken = executor.take()
    assert taken is not None and taken[1]["doc_id"] == first
    group_before = executor.group()
    queue = Queue()
    # When the listener takes its turns
    turns(listener(sqlite_engine, cache, queue))
    # Expect both files enqueued once, each claimed for its document
    assert queue.refs == [FileRef("kb1", "a.pdf"), FileRef("kb1", "b.pdf")]
    assert cache.client.get(inflight_key("kb1/a.pdf")) == b"queued"
    assert cache.client.hget(WANTED, "kb1/b.pdf") == second.encode()
    # and the consumer group as the executor left it: one pending, one delivered, the second still to read
    assert executor.group() == group_before
    assert group_before["pending"] == 1 and group_before["lag"] == 1
    following = executor.take()
    assert following is not None and following[1]["doc_id"] == second


def test_messages_that_name_no_ongoing_document_enqueue_nothing_and_are_counted(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """A finished document, an unknown one, GraphRAG's made-up document and a memory task (no doc_id) are
    read, counted by outcome and enqueue nothing; an ongoing document's task is counted as a file."""
    # Given
    done = add(sqlite_engine, "done.pdf", run="3")
    ongoing = add(sqlite_engine, "ongoing.pdf")
    for message in (
        task(done),
        task(uuid.uuid1().hex),
        task("graph_raptor_x", task_type="graphrag", doc_ids=[done]),
        {"id": uuid.uuid1().hex, "task_type": "memory", "memory_id": "m1", "source_id": 7},
        task(ongoing),
    ):
        queue_task(cache.client, message)
    queue = Queue()
    # When
    turns(listener(sqlite_engine, cache, queue))
    # Expect
    assert queue.refs == [FileRef("kb1", "ongoing.pdf")]
    assert counters(cache) == {
        "listener:file": 1,
        "listener:not-ongoing": 3,
        "listener:no-document": 1,
        "listener:files": 1,
    }


def test_a_burst_of_10000_messages_is_two_lookups_and_each_file_enqueued_once(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """10,000 tasks queued at once (two page ranges of 5,000 documents) are read in batches of 5,000 a
    stream: a few queries, never one per message, and 5,000 copies."""
    # Given 5,000 ongoing documents, each queued twice (two page-range tasks), in bulk
    docs = [uuid.uuid1().hex for _ in range(5000)]
    created = int(time.time() * 1000)
    with sqlite_engine.begin() as conn:
        conn.execute(
            schema.document.insert(),
            [
                {"id": d, "kb_id": "kb1", "type": "pdf", "location": f"d/{i}.pdf", "run": "1"}
                for i, d in enumerate(docs)
            ],
        )
        conn.execute(
            schema.task.insert(),
            [{"id": uuid.uuid1().hex, "doc_id": d, "progress": 0, "create_time": created} for d in docs],
        )
    with cache.client.pipeline(transaction=False) as pipe:
        for page in (0, 12):
            for d in docs:
                pipe.xadd(stream_name(0), {"message": json.dumps(task(d, from_page=page))})
        pipe.execute()
    queue = Queue()
    statements = Statements(sqlite_engine)
    try:
        # When
        turns(listener(sqlite_engine, cache, queue), 3)
        queries = len(statements.seen)
    finally:
        statements.close()
    # Expect
    assert queries == 2
    assert len(queue.refs) == len(set(queue.refs)) == 5000
    assert counters(cache)["listener:file"] == 10_000


def test_collect_and_the_listener_never_enqueue_one_file_twice(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """A file the listener claimed is in flight for the next collect, and one collect claimed first is in
    flight for the listener: each is enqueued once, and counted where it was enqueued."""
    # Given a document the listener is told of first, and one collect finds first
    heard, found = add(sqlite_engine, "heard.pdf"), add(sqlite_engine, "found.pdf")
    queue = Queue()
    listening = listener(sqlite_engine, cache, queue)
    queue_task(cache.client, task(heard))
    turns(listening)
    # When a collect runs, then the second document's task is queued
    report = collect(sqlite_engine, cache, SETTINGS, queue)
    queue_task(cache.client, task(found))
    turns(listening)
    # Expect
    assert queue.refs == [FileRef("kb1", "heard.pdf"), FileRef("kb1", "found.pdf")]
    assert report is not None and (report.enqueued, report.caught, report.in_flight) == (1, 1, 1)
    assert counters(cache)["listener:files"] == 1
    assert counters(cache)["listener:file"] == 2


def test_a_listener_started_again_continues_after_the_last_message_handled(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """The cursor lives in Redis: a new listener process reads only what came after the last handled message."""
    # Given a listener that handled one message and stopped
    queue = Queue()
    first = listener(sqlite_engine, cache, queue)
    queue_task(cache.client, task(add(sqlite_engine, "one.pdf")))
    turns(first)
    first.close()
    # When another message comes, and a new listener starts
    queue_task(cache.client, task(add(sqlite_engine, "two.pdf")))
    turns(listener(sqlite_engine, cache, queue))
    # Expect the first message not read again
    assert queue.refs == [FileRef("kb1", "one.pdf"), FileRef("kb1", "two.pdf")]
    assert counters(cache)["listener:file"] == 2


def test_a_stream_whose_ids_went_back_is_read_again_from_the_start_of_the_window(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """A stream recreated with ids before the cursor (its Redis restarted, its clock went back) is noticed when it
    is idle, and read again from the start of the window: the message written after the reset is not lost."""
    # Given a message written by a server whose clock ran an hour ahead, handled
    clock, queue = Clock(), Queue()
    listening = listener(sqlite_engine, cache, queue, clock=clock)
    ahead = f"{int(time.time() * 1000) + 3_600_000}-0"
    cache.client.xadd(stream_name(0), {"message": json.dumps(task(add(sqlite_engine, "before.pdf")))}, id=ahead)
    turns(listening)
    assert queue.refs == [FileRef("kb1", "before.pdf")]
    # When the stream is made again, and RAGFlow queues a task in it (with an id of the right time: earlier)
    cache.client.delete(stream_name(0))
    queue_task(cache.client, task(add(sqlite_engine, "after.pdf")))
    turns(listening)
    assert queue.refs == [FileRef("kb1", "before.pdf")], "read from the cursor, the new message is not there"
    clock.now += 2  # the idle check for resets is due
    turns(listening, 3)
    # Expect
    assert queue.refs == [FileRef("kb1", "before.pdf"), FileRef("kb1", "after.pdf")]


def test_a_stream_whose_entries_are_all_older_than_the_window_is_not_taken_for_one_that_went_back(
    sqlite_engine: sa.Engine, cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener starting on a stream idle for an hour reads from the start of the window, finds nothing, says
    nothing of a reset however often it checks, and handles the next task."""
    # Given a stream whose last entry is two hours old
    clock, queue = Clock(), Queue()
    old = f"{int(time.time() * 1000) - 7_200_000}-0"
    cache.client.xadd(stream_name(0), {"message": json.dumps(task(add(sqlite_engine, "old.pdf")))}, id=old)
    listening = listener(sqlite_engine, cache, queue, clock=clock)
    # When the listener takes turns, checking for resets each time
    with caplog.at_level(logging.INFO, logger="cachetasks"):
        for _ in range(3):
            clock.now += 2
            turns(listening)
    queue_task(cache.client, task(add(sqlite_engine, "new.pdf")))
    turns(listening)
    # Expect
    assert not [r for r in caplog.records if "went back" in r.getMessage()]
    assert queue.refs == [FileRef("kb1", "new.pdf")]


def test_one_listener_reads_the_other_stands_by_and_takes_over_when_it_stops(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """Two listeners: one holds the lease and reads; once it stops, the standby takes the lease at its next turn
    and continues from the first one's cursor."""
    # Given two listeners, the first one active
    queue = Queue()
    first, second = (listener(sqlite_engine, cache, queue, node=n) for n in ("l1", "l2"))
    turns(first, 1)
    turns(second, 1)
    assert (first.active, second.active) == (True, False)
    assert {(p.node, p.role) for p in running(cache.client)} == {("l1", Role.ACTIVE), ("l2", Role.STANDBY)}
    # When a task is queued, both take turns, and the first one stops
    queue_task(cache.client, task(add(sqlite_engine, "one.pdf")))
    turns(second)
    assert queue.refs == [], "the standby read nothing"
    turns(first)
    first.close()
    queue_task(cache.client, task(add(sqlite_engine, "two.pdf")))
    turns(second)
    # Expect
    assert second.active
    assert queue.refs == [FileRef("kb1", "one.pdf"), FileRef("kb1", "two.pdf")]
    assert [(p.node, p.role) for p in running(cache.client)] == [("l2", Role.ACTIVE)]


def test_a_listener_that_stopped_renewing_its_lease_loses_it_to_the_standby(
    sqlite_engine: sa.Engine, cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    """A holder that takes no turn for longer than its lease (stuck, or killed) loses it; when it comes back, it
    stands by."""
    # Given an active listener with a half-second lease, and a standby
    queue = Queue()
    stuck, standby = (listener(sqlite_engine, cache, queue, node=n) for n in ("short-1", "short-2"))
    turns(stuck, 1)
    turns(standby, 1)
    assert (stuck.active, standby.active) == (True, False)
    # When the holder takes no turn for longer than its lease
    time.sleep(0.7)
    turns(standby, 1)
    with caplog.at_level(logging.INFO, logger="cachetasks"):
        turns(stuck, 1)
    # Expect
    assert (stuck.active, standby.active) == (False, True)
    assert cache.client.get(LISTENER_LOCK) == standby.lease.token.encode()
    assert any("lost its lease" in r.getMessage() for r in caplog.records)


def test_malformed_messages_are_skipped_and_logged_once_each_with_control_characters_escaped(
    sqlite_engine: sa.Engine, cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    """Entries without `message`, with text that is not JSON, JSON that is not an object, or a doc_id that cannot
    be an id are skipped with one warning each, even when their batch is read twice; the good one is handled."""
    # Given four malformed entries and a good one
    good = add(sqlite_engine, "good.pdf")
    stream = stream_name(0)
    cache.client.xadd(stream, {"msg": "wrong field"})
    cache.client.xadd(stream, {"message": b"\x1b[2Jnot json"})
    cache.client.xadd(stream, {"message": "[1, 2]"})
    cache.client.xadd(stream, {"message": json.dumps(task("\x1b]0;owned\x07"))})
    queue_task(cache.client, task(good))
    queue = Queue()
    listening = listener(sqlite_engine, cache, queue)
    # When the first read of the batch fails (the broker is down) and the next one succeeds
    queue.fails = True
    with caplog.at_level(logging.WARNING, logger="cachetasks"), pytest.raises(redis.ConnectionError):
        turns(listening, 1)
    queue.fails = False
    with caplog.at_level(logging.WARNING, logger="cachetasks"):
        turns(listening)
    # Expect the good file enqueued, and one warning per malformed entry, escaped
    assert queue.refs == [FileRef("kb1", "good.pdf")]
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 4, lines
    assert not any("\x1b" in line or "\x07" in line for line in lines)
    assert any("\\x1b[2Jnot json" in line for line in lines)
    assert counters(cache)["listener:malformed"] == 4


def test_streams_are_found_or_named_and_none_turns_the_listener_off(sqlite_engine: sa.Engine, cache: Cache) -> None:
    """Unset: RAGFlow's streams found in Redis are read; named: only those; `none`: nothing, and it says so."""
    # Given a task in RAGFlow's priority-1 stream and one in a stream of another name
    one, other = add(sqlite_engine, "one.pdf"), add(sqlite_engine, "other.pdf")
    queue_task(cache.client, task(one), priority=1)
    cache.client.xadd("my.tasks", {"message": json.dumps(task(other))})
    found, named, off = Queue(), Queue(), Queue()
    # When three listeners with each setting take turns, one after the other
    for queue, streams, node in ((found, None, "a"), (named, ("my.tasks",), "b"), (off, (), "c")):
        listening = listener(sqlite_engine, cache, queue, node=node, task_streams=streams)
        turns(listening)
        listening.close()
        cache.client.delete("cachetasks:listener-cursors")
    # Expect
    assert found.refs == [FileRef("kb1", "one.pdf")]
    assert named.refs == [FileRef("kb1", "other.pdf")]
    assert off.refs == []


def test_status_and_metrics_say_what_the_listener_enqueued_and_what_collect_caught(
    sqlite_engine: sa.Engine, cache: Cache, redis_server: RedisServer
) -> None:
    """After the listener enqueued one file and collect caught another, `status` and the exporter say so,
    with the active listener and its stream."""
    # Given one file from the listener, and one whose message came before its rows, caught by collect
    queue = Queue()
    listening = listener(sqlite_engine, cache, queue)
    queue_task(cache.client, task(add(sqlite_engine, "heard.pdf")))
    early = uuid.uuid1().hex
    queue_task(cache.client, task(early))
    turns(listening)
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="late.pdf", doc_id=early)
    report = collect(sqlite_engine, cache, SETTINGS, queue)
    assert report is not None and report.caught == 1
    record_collect(cache.client, report.as_dict())  # as the collect task does
    # When
    broker = redis_server.client(0)
    said = status.gather(sqlite_engine, cache, broker, SETTINGS)
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in metrics.registry(cache.client, broker).collect()
        for s in family.samples
    }
    # Expect
    assert (said.listener_files, said.collect_caught) == (1, 1)
    assert said.listeners == [{"node": "l1", "role": "active", "streams": ["te.0.common"]}]
    assert "active on l1 (te.0.common)" in status.render(said)
    assert samples[("cachetasks_listener_files_total", ())] == 1
    assert samples[("cachetasks_collect_caught_total", ())] == 1
    assert samples[("cachetasks_listener_messages_total", (("outcome", "not-ongoing"),))] == 1
    assert samples[("cachetasks_listeners", (("role", "active"),))] == 1


def test_a_file_redis_evicted_is_not_copied_again_by_the_listener_nor_by_collect_after_it(
    sqlite_engine: sa.Engine, redis_server_with: Callable[..., RedisServer]
) -> None:
    """The listener judges a vanished file by the evictions since the last collect, and leaves that count to
    collect: a file Redis evicted waits for its TTL period, whoever looks at it first."""
    # Given a cached file on a small Redis that evicts keys with a TTL, and a first collect
    server = redis_server_with("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru")
    cache = Cache(server.client(1))
    doc = add(sqlite_engine, "doc.pdf")
    ref = FileRef("kb1", "doc.pdf")
    cache.put(ref.key, b"x" * 100_000, ttl=720)
    cache.settle(ref, "task-1", stored=100_000, ttl=720)
    queue = Queue()
    collect(sqlite_engine, cache, SETTINGS, queue)
    # When others' keys fill Redis and it evicts the file; then tasks are queued for its document again and
    # for another one, and the listener handles them before the next collect
    filler = server.client(2)
    for i in range(60):
        filler.set(f"filler-{i}", b"f" * 100_000, ex=600)
    assert not cache.client.exists(ref.key) and filler.info("stats")["evicted_keys"] > 0
    filler.flushdb()  # room again: nothing more is evicted from here on
    other = add(sqlite_engine, "other.pdf")
    listening = listener(sqlite_engine, cache, queue)
    queue_task(cache.client, task(other))
    turns(listening)
    queue_task(cache.client, task(doc))
    turns(listening)
    report = collect(sqlite_engine, cache, SETTINGS, queue)
    # Expect only the other file copied
    assert queue.refs == [FileRef("kb1", "other.pdf")]
    assert report is not None and (report.evicted, report.enqueued) == (1, 0)
