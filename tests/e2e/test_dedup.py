"""Each ongoing file is fetched from storage once, however often collect sees it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.cache.keys import LAST_COLLECT
from cachetasks.ops.demo import insert_document
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE
from testbed.observe import Poller, log_lines
from testbed.processes import Processes
from testbed.proxy import S3Proxy
from testbed.servers import RedisServer, wait_until
from tests.support.e2e import put_s3, start_service, wait_for_collects

Start = Callable[[dict[str, str]], Processes]


def test_slow_storage_is_read_once_per_file_while_collects_keep_running(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """While a 3 s read is in flight, the collects that see the file again do not start another read."""
    # Given a running service and storage that takes 3 s to answer each read
    start_service(processes(s3_env), cache.client)
    names = [f"slow-{i}.pdf" for i in range(4)]
    for name in names:
        put_s3(s3, "kb1", name, name.encode())
    s3_proxy.get_latency = 3.0
    # When their documents become ongoing
    with sqlite_engine.begin() as conn:
        for name in names:
            insert_document(conn, kb_id="kb1", location=name)
    collects: set[bytes] = set()

    def all_cached() -> bool:
        collects.add(cache.client.get(LAST_COLLECT) or b"")
        return bool(cache.client.exists(*(f"kb1/{name}" for name in names)) == len(names))

    started = time.monotonic()
    wait_until(all_cached, timeout=10, interval=0.1, what="every slow file")
    wait_for_collects(cache.client, 1)
    # Expect several collects during the reads, and one read per file
    assert time.monotonic() - started >= 3
    assert len(collects) >= 3, "collect did not run while the files were being read"
    assert {f"/kb1/{name}": s3_proxy.gets[f"/kb1/{name}"] for name in names} == {f"/kb1/{n}": 1 for n in names}
    assert [cache.client.get(f"kb1/{name}") for name in names] == [name.encode() for name in names]


def test_read_waiting_longer_than_the_inflight_ttl_for_its_first_byte_keeps_its_claim(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A copy still waiting for storage to answer holds its claim, so no second read starts when it is slow."""
    # Given a service with 1 s claims, and storage that takes 3 s to answer a read
    start_service(processes({**s3_env, "CACHETASKS_INFLIGHT_TTL": "1"}), cache.client)
    put_s3(s3, "kb1", "slow.pdf", b"slow")
    s3_proxy.get_latency = 3.0
    # When its document becomes ongoing
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="slow.pdf")
    # Expect it cached after one read
    wait_until(lambda: cache.client.exists("kb1/slow.pdf"), timeout=10, interval=0.1, what="the slow file")
    wait_for_collects(cache.client, 1)
    assert s3_proxy.gets["/kb1/slow.pdf"] == 1


BACKLOG_FILES, BACKLOG_LATENCY, BACKLOG_THREADS, BACKLOG_WATCH = 400, 2.0, 8, 60.0


@pytest.mark.slow
@pytest.mark.timeout(BACKLOG_WATCH + 90)
def test_a_backlog_longer_than_a_claim_lives_queues_each_missing_file_once_and_reads_it_once(
    s3_env: dict[str, str],
    s3: Any,
    s3_proxy: S3Proxy,
    redis_server: RedisServer,
    sqlite_engine: sa.Engine,
    cache: Cache,
    processes: Start,
) -> None:
    """400 new files, storage answering in 2 s, 8 threads: 100 s of work; in 60 s, one message and one read per file."""
    # Given a files worker of 8 threads, a collector and beat, with the default 30 s claims, and storage
    # that answers each read after 2 s
    procs = processes({**s3_env, "CACHETASKS_CONCURRENCY": str(BACKLOG_THREADS)})
    procs.worker("worker", "-Q", FILES_QUEUE)
    procs.worker("collector", "-Q", COLLECT_QUEUE, "--pool", "solo")
    procs.beat()
    wait_until(lambda: cache.client.get(LAST_COLLECT), timeout=30, what="the first collect")
    names = [f"doc-{i:03d}.pdf" for i in range(BACKLOG_FILES)]
    for name in names:
        put_s3(s3, "kb1", name, name.encode())
    s3_proxy.get_latency = BACKLOG_LATENCY
    broker = redis_server.client(0)
    # When their 400 documents become ongoing at once, and stay so for 60 s (twice the claims' life)
    with sqlite_engine.begin() as conn:
        for name in names:
            insert_document(conn, kb_id="kb1", location=name)
    with Poller(lambda: int(broker.llen(FILES_QUEUE)), interval=0.25) as queued:
        time.sleep(BACKLOG_WATCH)
    broker.close()
    # Expect at most one message ever queued per file, the queue never longer than the files missing,
    # and no file read twice
    enqueued = sum(
        int(line.message.split(" enqueued")[0].rsplit(", ", 1)[1])
        for line in log_lines(procs.log("collector"))
        if line.message.startswith("collect: ")
    )
    cached = cache.client.exists(*(f"kb1/{name}" for name in names))
    assert enqueued <= BACKLOG_FILES, f"{enqueued} copies enqueued for {BACKLOG_FILES} files"
    assert max(n for n in queued.seen if isinstance(n, int)) <= BACKLOG_FILES
    assert max(s3_proxy.gets.values()) == 1, f"files read twice: {[p for p, n in s3_proxy.gets.items() if n > 1][:5]}"
    assert cached >= BACKLOG_WATCH / BACKLOG_LATENCY * BACKLOG_THREADS / 2, f"only {cached} files cached"
