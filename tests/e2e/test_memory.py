"""Memory discipline: the worker streams instead of buffering, and the cache keeps to its share of Redis.

Worker memory is read from /proc (VmHWM: the peak resident set); the worker is one process
(the threads pool), the `celery worker` process the tests start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.cache.keys import HELD, TMP, skip_key
from cachetasks.ops.demo import finish_document, insert_document
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE
from testbed.observe import OpenCounter, Poller, cpu_seconds, keys_matching, log_lines, status_kib
from testbed.processes import Processes
from testbed.proxy import S3Proxy
from testbed.servers import RedisServer, wait_until
from tests.support.e2e import local_root, put_local, put_s3, start_service, wait_for_collects, warnings_in

Start = Callable[[dict[str, str]], Processes]
MiB = 1024 * 1024
KiB = 1024


def _big(size: int) -> bytes:
    """`size` bytes whose every MiB differs, so that a value missing or repeating a chunk shows."""
    return b"".join(i.to_bytes(4, "big") * (MiB // 4) for i in range(size // MiB))


@pytest.fixture
def clients() -> Iterator[Callable[[RedisServer, int], redis.Redis]]:
    """Redis clients for servers of the test's own, closed after the test."""
    opened: list[redis.Redis] = []

    def make(server: RedisServer, db: int) -> redis.Redis:
        client = server.client(db)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def test_caching_a_128_mib_file_raises_the_worker_peak_memory_by_far_less_than_the_file(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A 128 MiB file (the default size limit) streams through in 1 MiB chunks: the worker's peak RSS grows < 64 MiB."""
    # Given a running, idle service and a 128 MiB file
    procs = processes(env)
    start_service(procs, cache.client)
    wait_for_collects(cache.client, 1)
    pid = procs.procs["worker"].pid
    idle_peak = status_kib(pid, "VmHWM")
    data = _big(128 * MiB)
    put_local(env, "kb1", "huge.bin", data)
    # When its document becomes ongoing
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="huge.bin")
    wait_until(lambda: cache.client.exists("kb1/huge.bin"), timeout=30, interval=0.1, what="the 128 MiB file")
    # Expect it cached whole, and the worker's peak memory to have grown by much less than the file
    growth = status_kib(pid, "VmHWM") - idle_peak
    (local_root(env) / "kb1" / "huge.bin").unlink()  # 128 MiB less in the kept temporary folders
    assert cache.client.get("kb1/huge.bin") == data
    assert growth < 64 * KiB, f"the worker's peak RSS grew by {growth / KiB:.0f} MiB"


def test_files_beyond_the_cache_byte_budget_are_skipped_and_cached_once_room_frees_up(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """CACHETASKS_MAX_CACHE_BYTES=2500: two 1000-byte files of five fit; when two expire, two others get their room."""
    # Given a running service with a 2500-byte budget, 3 s TTLs and 2 s negative TTLs, and five 1000-byte files
    procs = processes(
        {**env, "CACHETASKS_MAX_CACHE_BYTES": "2500", "CACHETASKS_TTL": "3", "CACHETASKS_NEGATIVE_TTL": "2"}
    )
    start_service(procs, cache.client)
    keys: dict[str, str] = {}  # cache key -> document id
    for i in range(5):
        put_local(env, "kb1", f"doc-{i}.bin", bytes([i]) * 1000)
    names = [f"kb1/doc-{i}.bin" for i in range(5)]  # the poller's own list: `keys` fills while it polls
    # When their five documents become ongoing together
    with Poller(lambda: sum(int(cache.client.strlen(key)) for key in names), interval=0.02) as held:
        with sqlite_engine.begin() as conn:
            for i in range(5):
                keys[f"kb1/doc-{i}.bin"] = insert_document(conn, kb_id="kb1", location=f"doc-{i}.bin")
        # Expect two cached and the others skipped, each logged
        wait_until(lambda: cache.client.exists(*keys) == 2, timeout=5, what="two files")
        wait_until(
            lambda: (
                len({k for k in keys for x in procs.log("worker").splitlines() if k in x and ": cache-full: " in x})
                == 3
            ),
            timeout=5,
            what="a line for each of the other three",
        )
        # When the two cached documents finish and their keys expire
        first = [key for key in keys if cache.client.exists(key)]
        with sqlite_engine.begin() as conn:
            for key in first:
                finish_document(conn, keys[key])
        rest = [key for key in keys if key not in first]
        # Expect two of the other three cached once the room is free, and the budget kept all along
        wait_until(lambda: cache.client.exists(*rest) == 2, timeout=12, what="two of the skipped files")
        wait_for_collects(cache.client, 1)
    assert max(n for n in held.seen if isinstance(n, int)) <= 2500
    assert cache.client.exists(*first) == 0
    assert int(cache.client.get(HELD) or 0) == sum(cache.client.strlen(key) for key in keys) == 2000


def test_a_key_is_renewed_while_its_document_is_ongoing_and_expires_on_its_ttl_once_it_is_done(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """CACHETASKS_TTL=4: the key outlives 6 s of an ongoing document with one read, then expires within 4 s of done."""
    # Given a running service with a 4 s TTL and an ongoing document, cached
    ttl = 4
    procs = processes({**s3_env, "CACHETASKS_TTL": str(ttl)})
    start_service(procs, cache.client)
    put_s3(s3, "kb1", "doc.pdf", b"document")
    with sqlite_engine.begin() as conn:
        doc_id = insert_document(conn, kb_id="kb1", location="doc.pdf")
    wait_until(lambda: cache.client.exists("kb1/doc.pdf"), timeout=5, what="the document")
    # When it stays ongoing for one and a half TTLs
    with Poller(lambda: cache.client.exists("kb1/doc.pdf"), interval=0.05) as present:
        time.sleep(1.5 * ttl)
    # Expect the key there all along, read from storage once
    assert present.seen and all(present.seen), f"the key was missing in {present.seen.count(0)} samples"
    assert s3_proxy.gets["/kb1/doc.pdf"] == 1
    # When the document is done
    with sqlite_engine.begin() as conn:
        finish_document(conn, doc_id)
    done = time.monotonic()
    # Expect the key gone within its TTL, and not fetched again
    wait_until(lambda: not cache.client.exists("kb1/doc.pdf"), timeout=ttl + 1.5, what="the key to expire")
    assert time.monotonic() - done <= ttl + 1
    wait_for_collects(cache.client, 2)
    assert not cache.client.exists("kb1/doc.pdf")
    assert s3_proxy.gets["/kb1/doc.pdf"] == 1


def test_evict_on_done_deletes_only_the_keys_the_service_wrote_at_the_next_full_collect(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """CACHETASKS_EVICT_ON_DONE=true: a done document's key goes at the next full collect (every collect here);
    keys set by others stay."""
    # Given a running service that evicts on done, a file it will cache, and two keys set by someone else:
    # one for a document that is ongoing (so the service never writes it), one for a document that is done
    procs = processes({**env, "CACHETASKS_EVICT_ON_DONE": "true", "CACHETASKS_RECONCILE_INTERVAL": "0"})
    start_service(procs, cache.client)
    put_local(env, "kb1", "ours.pdf", b"written by cachetasks")
    for name in ("theirs-ongoing.pdf", "theirs-done.pdf"):
        put_local(env, "kb1", name, b"from storage")
    cache.client.set("kb1/theirs-ongoing.pdf", b"set by hand")  # no TTL
    cache.client.set("kb1/theirs-done.pdf", b"set by hand", ex=600)
    with sqlite_engine.begin() as conn:
        ours = insert_document(conn, kb_id="kb1", location="ours.pdf")
        theirs = insert_document(conn, kb_id="kb1", location="theirs-ongoing.pdf")
        insert_document(conn, kb_id="kb1", location="theirs-done.pdf", run="3")
    wait_until(lambda: cache.client.exists("kb1/ours.pdf"), timeout=5, what="the service's copy")
    wait_for_collects(cache.client, 1)
    # When both ongoing documents are done
    with sqlite_engine.begin() as conn:
        finish_document(conn, ours)
        finish_document(conn, theirs)
    done = time.monotonic()
    # Expect the service's key deleted at the next collect, and the others untouched
    wait_until(lambda: not cache.client.exists("kb1/ours.pdf"), timeout=3, interval=0.02, what="the eviction")
    assert time.monotonic() - done <= 2.5
    wait_for_collects(cache.client, 2)
    assert cache.client.mget("kb1/theirs-ongoing.pdf", "kb1/theirs-done.pdf") == [b"set by hand", b"set by hand"]
    assert cache.client.ttl("kb1/theirs-ongoing.pdf") == -1
    assert [line for line in log_lines(procs.log("worker")) if "evicted 1 files" in line.message]


# The spec watches two minutes; 25 s with a 7 s negative TTL shows the same: three rounds of re-checks.
THRASH_FILES, THRASH_SIZE, THRASH_WATCH, THRASH_NEGATIVE_TTL = 2000, 256 * KiB, 25.0, 7


@pytest.mark.slow
def test_a_redis_smaller_than_the_ongoing_set_is_filled_once_without_thrashing(
    env: dict[str, str],
    redis_server_with: Callable[..., RedisServer],
    clients: Callable[[RedisServer, int], redis.Redis],
    sqlite_engine: sa.Engine,
    processes: Start,
) -> None:
    """RAGFlow's 128 MB volatile-lru Redis, 2,000 ongoing files of 256 KiB (512 MiB): each file is read once at most."""
    # Given a service on a Redis like RAGFlow's (broker and cache), re-checking skipped files every 7 s,
    # and 2,000 files of 256 KiB in local storage
    server = redis_server_with("--maxmemory", "128mb", "--maxmemory-policy", "volatile-lru")
    cache, broker = clients(server, 1), clients(server, 0)
    settings = {**env, "CELERY_BROKER_URL": server.url(0), "CACHETASKS_REDIS_URL": server.url(1)}
    procs = processes({**settings, "CACHETASKS_NEGATIVE_TTL": str(THRASH_NEGATIVE_TTL)})
    start_service(procs, cache)
    folder = local_root(env) / "kb1"
    folder.mkdir(parents=True)
    block = os.urandom(THRASH_SIZE)
    names = [f"file-{i:04d}.bin" for i in range(THRASH_FILES)]
    for name in names:
        (folder / name).write_bytes(block)
    # When their documents are all ongoing for 25 s (three rounds of re-checks of the skipped ones)
    try:
        with OpenCounter(folder) as reads:
            with sqlite_engine.begin() as conn:
                for name in names:
                    insert_document(conn, kb_id="kb1", location=name)
            time.sleep(THRASH_WATCH)
    finally:
        shutil.rmtree(folder)  # 512 MiB less in the kept temporary folders
    # Expect what fits cached once, each file read from storage at most once, and nothing evicted
    cached = cache.exists(*(f"kb1/{name}" for name in names))
    info = cache.info()
    assert max(reads.opens.values()) == 1, f"files read more than once: {reads.opens.most_common(5)}"
    assert cached >= 300, f"only {cached} files cached"
    assert sum(reads.opens.values()) <= cached + 16, f"{sum(reads.opens.values())} reads for {cached} files cached"
    assert info["evicted_keys"] == 0, f"Redis evicted {info['evicted_keys']} keys"
    assert int(info["used_memory"]) <= 128 * MiB
    assert broker.llen("cachetasks.files") <= 16  # no backlog of copies
    assert "raised unexpected" not in procs.log("worker")


@pytest.mark.parametrize("when", ["known-full", "fills-mid-write"])
def test_a_refused_64_mib_write_costs_little_warns_once_and_is_remembered(
    when: str,
    s3_env: dict[str, str],
    s3: Any,
    s3_proxy: S3Proxy,
    redis_server_with: Callable[..., RedisServer],
    clients: Callable[[RedisServer, int], redis.Redis],
    sqlite_engine: sa.Engine,
    processes: Start,
) -> None:
    """A 64 MiB file Redis cannot take (noeviction), whether full before or during the write: cheap, one warning."""
    # Given a cache on a noeviction Redis: of 32 MB (too small from the start), or of 100 MB that something
    # else fills past its maxmemory while the file streams in (into a value allocated whole at the start);
    # the broker on another server
    maxmemory = "32mb" if when == "known-full" else "100mb"
    server = redis_server_with("--maxmemory", maxmemory, "--maxmemory-policy", "noeviction")
    small = clients(server, 1)
    procs = processes({**s3_env, "CACHETASKS_REDIS_URL": server.url(1)})
    start_service(procs, small)
    put_s3(s3, "kb1", "big.bin", _big(64 * MiB))
    for name in ("before.bin", "after.bin"):
        put_s3(s3, "kb1", name, name.encode())
    with sqlite_engine.begin() as conn:  # a first copy: the worker builds its S3 client
        insert_document(conn, kb_id="kb1", location="before.bin")
    wait_until(lambda: small.exists("kb1/before.bin"), timeout=5, what="a first file")
    pid = procs.procs["worker"].pid
    peak, cpu = status_kib(pid, "VmHWM"), cpu_seconds(pid)
    s3_proxy.bandwidth = 32 * MiB
    # When its document becomes ongoing
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="big.bin")
    if when == "fills-mid-write":
        wait_until(
            lambda: any(small.strlen(t) >= 8 * MiB for t in keys_matching(small, TMP + "*")),
            timeout=10,
            interval=0.01,
            what="the write to be under way",
        )
        filler = clients(server, 2)
        with contextlib.suppress(redis.OutOfMemoryError):  # refused once past maxmemory: the copy's next write too
            for i in range(40):
                filler.set(f"filler-{i}", b"f" * MiB)
    # Expect it remembered as not cacheable, after one warning, without a temporary key left
    wait_until(lambda: small.exists(skip_key("kb1/big.bin")), timeout=15, what="the file remembered as skipped")
    s3_proxy.bandwidth = 0
    warned = [line for line in warnings_in(procs.log("worker")) if "kb1/big.bin" in line]
    expected = {"known-full": "redis-full", "fills-mid-write": "refused"}[when]
    assert len(warned) == 1 and f": {expected}: " in warned[0], warned
    assert not small.exists("kb1/big.bin")
    assert keys_matching(small, TMP + "*") == []
    assert 0 < small.ttl(skip_key("kb1/big.bin")) <= 60
    # and the worker spent little memory and CPU on it
    growth, spent = status_kib(pid, "VmHWM") - peak, cpu_seconds(pid) - cpu
    assert growth < 16 * KiB, f"the worker's peak RSS grew by {growth / KiB:.0f} MiB"
    assert spent < 2, f"the worker spent {spent:.1f}s of CPU"
    # and the rest still cached
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="after.bin")
    wait_until(lambda: small.exists("kb1/after.bin"), timeout=5, what="a file after it")
    wait_for_collects(small, 2)
    assert len([line for line in warnings_in(procs.log("worker")) if "kb1/big.bin" in line]) == 1
    assert s3_proxy.gets["/kb1/big.bin"] == 1


ONGOING_BIG, BIG_SIZE, BIG_WATCH, BIG_NEGATIVE_TTL = 24, 12 * MiB, 40.0, 10


@pytest.mark.slow
def test_copies_in_flight_in_two_workers_never_push_a_small_redis_into_evicting(
    s3_env: dict[str, str],
    s3: Any,
    s3_proxy: S3Proxy,
    redis_server_with: Callable[..., RedisServer],
    clients: Callable[[RedisServer, int], redis.Redis],
    sqlite_engine: sa.Engine,
    processes: Start,
) -> None:
    """64 MiB volatile-lru Redis, 24 files of 12 MiB at once, two workers: nothing evicted, no file read thrice."""
    # Given a service of two files workers on a 64 MiB volatile-lru Redis (broker and cache), re-checking skipped
    # files every 10 s, with five small files cached, and 24 files of 12 MiB that storage streams at 24 MiB/s each
    server = redis_server_with("--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru")
    cache = clients(server, 1)
    settings = {
        **s3_env,
        "CELERY_BROKER_URL": server.url(0),
        "CACHETASKS_REDIS_URL": server.url(1),
        "CACHETASKS_NEGATIVE_TTL": str(BIG_NEGATIVE_TTL),
        "CACHETASKS_CONCURRENCY": "8",
    }
    procs = processes(settings)
    procs.worker("worker", "-Q", FILES_QUEUE)
    procs.worker("worker2", "-Q", FILES_QUEUE)
    procs.worker("collector", "-Q", COLLECT_QUEUE, "--pool", "solo")
    procs.beat()
    small = [f"kb1/small-{i}.pdf" for i in range(5)]
    for key in small:
        put_s3(s3, "kb1", key.split("/", 1)[1], key.encode() * 100)
    with sqlite_engine.begin() as conn:
        for key in small:
            insert_document(conn, kb_id="kb1", location=key.split("/", 1)[1])
    wait_until(lambda: cache.exists(*small) == len(small), timeout=30, what="the small files")
    big = [f"big-{i:02d}.bin" for i in range(ONGOING_BIG)]
    block = os.urandom(BIG_SIZE)
    for name in big:
        put_s3(s3, "kb2", name, block)
    s3_proxy.bandwidth = 24 * MiB
    # When the 24 documents become ongoing at once, and stay so for 40 s
    with sqlite_engine.begin() as conn:
        for name in big:
            insert_document(conn, kb_id="kb2", location=name)
    time.sleep(BIG_WATCH)
    # Expect nothing evicted, the small files still there, some large ones cached, none read more than twice
    info = cache.info()
    cached = cache.exists(*(f"kb2/{name}" for name in big))
    reads = {name: s3_proxy.gets[f"/kb2/{name}"] for name in big}
    assert info["evicted_keys"] == 0, f"Redis evicted {info['evicted_keys']} keys; {cached} large files cached"
    assert cache.exists(*small) == len(small)
    assert cached >= 2, f"only {cached} large files cached"
    assert max(reads.values()) <= 2, f"reads per file: {sorted(reads.values())}"
    assert "raised unexpected" not in procs.log("worker") + procs.log("worker2")
