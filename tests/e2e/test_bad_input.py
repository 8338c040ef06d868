"""Bad input reaches the service from the database and the queue: each gets a clear outcome, nothing else suffers.

In every test a control document is cached in the same cycles as the bad input.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.cache.keys import COLLECT_LOCK, LAST_COLLECT, LAST_REPORT
from cachetasks.ops.demo import insert_document
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE
from testbed.observe import hash_of, log_lines
from testbed.processes import Processes
from testbed.servers import RedisServer, wait_until
from tests.support.e2e import put_local, start_service, wait_for_collects
from tests.support.messages import publish_raw, send_tasks, task_headers

Start = Callable[[dict[str, str]], Processes]


def _wait_for_queue_without_overlapping_collects(
    cache: redis.Redis, broker: redis.Redis, length: int, *, timeout: float
) -> None:
    """Wait until the files queue holds `length` messages; fail at once if a collect starts while another runs.

    A collect takes the collect lock, writes LAST_COLLECT when done, then releases the lock: a new lock
    token while LAST_COLLECT is unchanged since the previous token appeared means two collects at once.
    """
    holder, finished_before = None, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        token, last = cache.get(COLLECT_LOCK), cache.get(LAST_COLLECT)
        if token is not None and token != holder:
            assert holder is None or last != finished_before, "a collect started while the previous one still ran"
            holder, finished_before = token, last
        queued = int(broker.llen(FILES_QUEUE))
        if queued >= length:
            assert queued == length, f"{queued} copies enqueued for {length} files"
            return
        time.sleep(0.05)
    raise AssertionError(f"{broker.llen(FILES_QUEUE)} of {length} copies enqueued after {timeout}s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hundred_thousand_ongoing_rows_are_enqueued_once_by_collects_that_never_overlap(
    env: dict[str, str], pg_engine: sa.Engine, pg_url: str, redis_server: RedisServer, cache: Cache, processes: Start
) -> None:
    """100,000 ongoing documents at once: each enqueued once, collects never overlap, later cycles stay quick."""
    # Given beat and a worker for collects only (no copies: their queue is only counted), claims lasting 10 min
    broker = redis_server.client(0)
    settings = {**env, "CACHETASKS_DATABASE_URL": pg_url, "CACHETASKS_INFLIGHT_TTL": "600"}
    procs = processes(settings)
    procs.worker("collector", "-Q", COLLECT_QUEUE)
    procs.beat()
    wait_until(lambda: cache.client.get(LAST_COLLECT), timeout=30, what="the first collect")
    # When 100,000 documents become ongoing in one transaction
    now_ms = int(time.time() * 1000)
    with pg_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO document (id, kb_id, parser_id, parser_config, source_type, type, created_by, name,"
                " location, suffix, run, status, create_time)"
                " SELECT md5('d' || i), 'kbmany', 'naive', '{}', 'local', 'pdf', '', 'f' || i || '.pdf',"
                " 'f' || i || '.pdf', 'pdf', '1', '1', :now FROM generate_series(1, 100000) AS i"
            ),
            {"now": now_ms},
        )
        conn.execute(
            sa.text(
                "INSERT INTO task (id, doc_id, task_type, progress, create_time)"
                " SELECT md5('t' || i), md5('d' || i), '', 0, :now FROM generate_series(1, 100000) AS i"
            ),
            {"now": now_ms},
        )
        # What autovacuum would do after such an insert (the test server runs without it): with the statistics
        # of empty tables the planner picks a nested loop that takes minutes for 100,000 rows.
        conn.execute(sa.text("ANALYZE document, task"))

    def report() -> dict[str, float]:
        return {k: float(v) for k, v in hash_of(cache.client, LAST_REPORT).items()}

    try:
        # Expect the collects to claim and enqueue a copy of each, once, one collect at a time
        _wait_for_queue_without_overlapping_collects(cache.client, broker, 100_000, timeout=100)
        # (the queue can fill before that collect, pruning the ledger after its enqueue, has written its report)
        wait_until(lambda: report().get("ongoing") == 100_000, timeout=30, interval=0.1, what="that collect's report")
        # and the next cycles to see them in flight, quickly, enqueueing nothing more
        wait_until(lambda: report().get("in_flight") == 100_000, timeout=60, interval=0.5, what="a later collect")
        later = report()
        assert later["enqueued"] == 0 and later["seconds"] < 10, later
        # When the copies nobody runs here are dropped, and a new document starts next to the 100,000
        broker.delete(FILES_QUEUE)
        put_local(env, "kbcontrol", "control.pdf", b"control")
        with pg_engine.begin() as conn:
            insert_document(conn, kb_id="kbcontrol", location="control.pdf")
        procs.worker("files", "-Q", FILES_QUEUE)
        # Expect it cached by the next cycle
        wait_until(lambda: cache.client.exists("kbcontrol/control.pdf"), timeout=30, what="the control document")
        assert broker.llen(FILES_QUEUE) == 0
        assert all(proc.poll() is None for proc in procs.procs.values())
    finally:
        broker.close()
        collector = procs.procs.get("collector")
        if collector is not None:  # it may be deep in a long enqueue: no need to wait for a warm shutdown
            collector.kill()


@pytest.mark.parametrize(
    "sql",
    ["SELECT bucket, location FROM no_such_table", "SELECT 'kb1', 'a.pdf', 'one column too many'"],
    ids=["fails", "wrong-width"],
)
def test_a_broken_custom_query_fails_each_collect_in_one_line_and_the_worker_keeps_serving(
    sql: str, env: dict[str, str], cache: Cache, processes: Start
) -> None:
    """A custom query that fails or returns three columns: one clear line per collect, no crash, copies still run."""
    # Given a running service with a broken CACHETASKS_ONGOING_SQL
    settings = {**env, "CACHETASKS_ONGOING_SQL": sql}
    procs = processes(settings)
    procs.worker()
    procs.beat()

    def failures() -> list[str]:
        return [x.message for x in log_lines(procs.log("worker")) if "raised expected: CatalogError" in x.message]

    # When it has tried a few collects
    wait_until(lambda: len(failures()) >= 3, timeout=30, what="three failed collects")
    # Expect one line each, saying why, no traceback, and both processes up
    sent = procs.log("beat").count("Sending due task")
    assert len(failures()) <= sent
    assert all("CACHETASKS_ONGOING_SQL" in line or "ongoing query failed" in line for line in failures())
    assert "Traceback" not in procs.log("worker")
    assert all(proc.poll() is None for proc in procs.procs.values())
    # and a copy asked for by hand still done
    put_local(env, "kb1", "control.pdf", b"control")
    send_tasks(settings, [("cachetasks.cache_file", ["kb1", "control.pdf"], {}, str(uuid.uuid4()))])
    wait_until(lambda: cache.client.exists("kb1/control.pdf"), timeout=10, what="the copy asked for by hand")


def test_cache_file_messages_with_wrong_arguments_are_rejected_and_logged_and_nothing_else_is_disturbed(
    env: dict[str, str], redis_server: RedisServer, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """Wrong types, counts or an undecodable body, put on the queue by hand: each logged, none kills the worker."""
    # Given a running service and an ongoing control document whose file appears later
    procs = processes(env)
    start_service(procs, cache.client)
    bad = {
        "wrong-types": ([123, None], {}),
        "too-few": (["kb1"], {}),
        "too-many": (["kb1", "a.pdf", "extra"], {}),
        "unknown-keyword": (["kb1", "a.pdf"], {"bogus": 1}),
        "nested": ([["kb1"], {"location": "a.pdf"}], {}),
    }
    ids = {name: str(uuid.uuid4()) for name in bad}
    # When messages with wrong arguments, and one that is not JSON at all, are put on the files queue
    send_tasks(env, [("cachetasks.cache_file", args, kwargs, ids[name]) for name, (args, kwargs) in bad.items()])
    broken_id = str(uuid.uuid4())
    publish_raw(
        env["CELERY_BROKER_URL"],
        FILES_QUEUE,
        b"{this is not json",
        content_type="application/json",
        headers=task_headers("cachetasks.cache_file", broken_id),
    )
    put_local(env, "kb1", "control.pdf", b"control")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="control.pdf")
    # Expect the control cached, every bad message logged as refused or failed, and the queue empty
    wait_until(lambda: cache.client.exists("kb1/control.pdf"), timeout=5, what="the control document")
    log = procs.log("worker")

    def outcome(task_id: str) -> list[str]:
        return [x.message for x in log_lines(log) if task_id in x.message and "received" not in x.message]

    wait_until(lambda: all(outcome(i) for i in ids.values()), timeout=5, what="an outcome for every message")
    log = procs.log("worker")
    assert "invalid" in outcome(ids["wrong-types"])[0] and "refused 123 / None" in log
    for name in ("too-few", "too-many", "unknown-keyword"):
        assert "TypeError" in outcome(ids[name])[0], (name, outcome(ids[name]))
    assert "invalid" in outcome(ids["nested"])[0]
    assert "decode" in log.lower() or "undecodable" in log.lower(), "the message that is not JSON was not logged"
    broker = redis_server.client(0)
    try:
        assert broker.llen(FILES_QUEUE) == 0
    finally:
        broker.close()
    assert procs.procs["worker"].poll() is None
    wait_for_collects(cache.client, 1)
