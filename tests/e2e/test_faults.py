"""The service under faults: killed workers, Redis and PostgreSQL outages, failing storage, stray beats.

Each test runs the real worker and beat processes and breaks one thing: it degrades, recovers
by itself, and never serves a partial file.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.cache.keys import TMP, inflight_key
from cachetasks.ops.demo import insert_document
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE
from testbed.observe import LogLine, Poller, between, keys_matching, log_lines, problems
from testbed.processes import Processes
from testbed.proxy import Fault, S3Proxy
from testbed.servers import RedisServer, wait_until
from testbed.tcpproxy import TcpProxy
from tests.support.e2e import put_local, put_s3, start_service, wait_for_collects, warnings_in

Start = Callable[[dict[str, str]], Processes]
Sample = tuple[float, list[tuple[int, int]]]  # when, and (cached, claimed) for each file
MiB = 1024 * 1024


def _big(size: int) -> bytes:
    """`size` bytes whose every MiB differs, so that a value missing or repeating a chunk shows."""
    return b"".join(i.to_bytes(4, "big") * (MiB // 4) for i in range(size // MiB))


def _watch_value(client: redis.Redis, key: str) -> Poller:
    """Poll `key`: record None while it is absent, else the length of what a reader gets."""

    def sample() -> int | None:
        value = client.get(key)
        return None if value is None else len(value)

    return Poller(sample, interval=0.005)


# -- the worker dies or is stopped in the middle of a copy ---------------------------------------------------


def test_worker_killed_mid_write_leaves_no_partial_value_and_a_restart_caches_the_file(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """SIGKILL while a 24 MiB file streams into Redis: readers see nothing, then all of it, after a restart."""
    # Given a running service whose claims expire after 5 s, and a large file that storage serves slowly
    inflight_ttl = 5
    procs = processes({**s3_env, "CACHETASKS_INFLIGHT_TTL": str(inflight_ttl)})
    start_service(procs, cache.client)
    data = _big(24 * MiB)
    put_s3(s3, "kb1", "big.bin", data)
    s3_proxy.bandwidth = 6 * MiB
    key = "kb1/big.bin"
    with _watch_value(cache.client, key) as poller:
        with sqlite_engine.begin() as conn:
            insert_document(conn, kb_id="kb1", location="big.bin")

        def half_written() -> bool:
            return any(cache.client.strlen(tmp) >= 4 * MiB for tmp in keys_matching(cache.client, TMP + "*"))

        wait_until(half_written, timeout=10, interval=0.02, what="the copy to be under way")
        # When the worker is killed in the middle of the write
        procs.procs["worker"].kill()
        procs.procs["worker"].wait(5)
        killed = time.monotonic()
        s3_proxy.bandwidth = 0
        # Expect the partial value to vanish with its TTL (the in-flight TTL), never readable meanwhile
        wait_until(lambda: not keys_matching(cache.client, TMP + "*"), timeout=inflight_ttl + 2, what="no tmp key")
        assert set(poller.seen) <= {None}, f"a reader saw {set(poller.seen) - {None}} bytes"
        assert len(poller.seen) > 100, "the poller did not watch the write"
        # When a worker starts again
        procs.worker()
        # Expect the whole file cached within the claim's expiry, plus a worker's start and a copy
        wait_until(lambda: cache.client.exists(key), timeout=inflight_ttl + 10, what="the file after the restart")
        cached_after = time.monotonic() - killed
    assert set(poller.seen) <= {None, len(data)}, f"a reader saw {set(poller.seen) - {None, len(data)}} bytes"
    assert cache.client.get(key) == data
    assert cached_after <= inflight_ttl + 10, f"cached {cached_after:.1f}s after the kill"
    assert s3_proxy.gets["/kb1/big.bin"] == 2


# -- Redis (broker and cache) goes away ------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and start."""
    server = RedisServer(tmp_path / "own-redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_cache(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = own_redis.client(1)
    yield client
    client.close()


OUTAGE = 130.0  # Redis: longer than Celery's default budget of 100 reconnection attempts, a second apart
OUTAGE_LOG_EVERY = 10.0  # what the README promises: one line per process per 10 s of outage
RESUME = 2.0  # seconds from Redis's return to each process working again
DB_OUTAGE = 8.0  # PostgreSQL: the spec's 20 s shortened; every collect fails alike after the first


def _first_after(lines: list[LogLine], at: float, text: str) -> float:
    """Seconds from `at` to the first line at or after it that contains `text` (inf if none)."""
    return min((line.at - at for line in lines if line.at >= at - 0.001 and text in line.message), default=math.inf)


@pytest.mark.slow
@pytest.mark.timeout(OUTAGE + 120)
def test_a_redis_outage_longer_than_celerys_retry_budget_is_waited_out_logged_sparingly_and_resumed_within_2s(
    env: dict[str, str],
    own_redis: RedisServer,
    own_cache: redis.Redis,
    sqlite_engine: sa.Engine,
    processes: Start,
) -> None:
    """Redis (broker and cache) down 130 s, back empty: files worker, collector and beat stay up and resume in 2 s."""
    # Given the Procfile's layout (a files worker, a collector, beat) on a Redis of its own, with a file cached
    settings = {**env, "CELERY_BROKER_URL": own_redis.url(0), "CACHETASKS_REDIS_URL": own_redis.url(1)}
    procs = processes(settings)
    procs.worker("files", "-Q", FILES_QUEUE)
    procs.worker("collector", "-Q", COLLECT_QUEUE, "--pool", "solo")
    procs.beat()
    put_local(env, "kb1", "before.pdf", b"before")
    put_local(env, "kb1", "during.pdf", b"during")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="before.pdf")
    wait_until(lambda: own_cache.exists("kb1/before.pdf"), timeout=30, what="the file before the outage")
    # When Redis stops for 130 s, a document starts meanwhile, and Redis comes back empty
    down_at = time.time()
    own_redis.stop()
    time.sleep(OUTAGE / 2)
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="during.pdf")
    time.sleep(OUTAGE / 2)
    alive_during = {name: proc.poll() is None for name, proc in procs.procs.items()}
    # From the moment Redis starts again: a worker may reach it before `start()` has seen it answer.
    up_at = time.time()
    own_redis.start()
    # Expect both files cached again soon, by the same processes
    everyone = {"files": True, "collector": True, "beat": True}
    assert alive_during == everyone
    keys = ["kb1/before.pdf", "kb1/during.pdf"]
    wait_until(lambda: own_cache.exists(*keys) == 2, timeout=15, interval=0.05, what="the files after the outage")
    cached_after = time.time() - up_at
    assert {name: proc.poll() is None for name, proc in procs.procs.items()} == everyone
    # and each process back at work within 2 s: the workers consuming, beat sending, a collect run
    logs = {name: log_lines(procs.log(name)) for name in everyone}
    resumed = {
        "files": _first_after(logs["files"], up_at, "reached the broker again"),
        "collector": _first_after(logs["collector"], up_at, "collect["),
        "beat": _first_after(logs["beat"], up_at, "Sending due task"),
    }
    assert max(resumed.values()) <= RESUME, f"seconds to resume after Redis returned: {resumed}"
    assert cached_after <= RESUME + 1, f"cached {cached_after:.1f}s after Redis returned"
    # and the outage logged about once per 10 s per process, not once per attempt
    for name, lines in logs.items():
        during = problems(between(lines, down_at, up_at + 1))
        assert len(during) <= OUTAGE / OUTAGE_LOG_EVERY + 3, f"{name}: {len(during)} problem lines: {during[:20]}"


# -- PostgreSQL goes away --------------------------------------------------------------------------------------

APP_NAME = "cachetasks-faults"


def _service_connections(engine: sa.Engine) -> int:
    """Server connections the service holds to the test database (tagged with its application_name)."""
    with engine.connect() as conn:
        count = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = :a"
            ),
            {"a": APP_NAME},
        ).scalar_one()
    return int(count)


@pytest.fixture
def pg_forwarder(pg_url: str) -> Iterator[TcpProxy]:
    """A TCP forwarder to the PostgreSQL server, to cut the service off from it."""
    proxy = TcpProxy(sa.make_url(pg_url).port or 5432).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def forwarded_url(pg_url: str, forwarder: TcpProxy) -> str:
    """`pg_url` through the forwarder, its connections tagged with APP_NAME."""
    url = sa.make_url(pg_url).set(port=forwarder.port, query={"application_name": APP_NAME})
    return url.render_as_string(hide_password=False)


def _task_id(message: str) -> str:
    """The id in a Celery line such as 'Task cachetasks.collect[<id>] received'."""
    return message.split("[", 1)[1].split("]", 1)[0]


@pytest.mark.slow
def test_database_outage_fails_fast_logs_once_per_collect_and_recovers_without_leaking_connections(
    env: dict[str, str],
    pg_engine: sa.Engine,
    pg_url: str,
    pg_forwarder: TcpProxy,
    cache: Cache,
    processes: Start,
) -> None:
    """PostgreSQL refused 4 s then unanswering 4 s: quick failures, a line per collect, recovery within 2 s."""
    # Given a running service that reaches PostgreSQL through the forwarder, with a file cached
    connect_timeout = 2
    settings = {
        **env,
        "CACHETASKS_DATABASE_URL": forwarded_url(pg_url, pg_forwarder),
        "CACHETASKS_DB_CONNECT_TIMEOUT": str(connect_timeout),
    }
    procs = processes(settings)
    start_service(procs, cache.client)
    kb = "kb" + uuid.uuid4().hex[:12]
    put_local(env, kb, "before.pdf", b"before")
    put_local(env, kb, "during.pdf", b"during")
    with pg_engine.begin() as conn:
        insert_document(conn, kb_id=kb, location="before.pdf")
    wait_until(lambda: cache.client.exists(f"{kb}/before.pdf"), timeout=5, what="the file before the outage")
    wait_for_collects(cache.client, 2)
    connections_before = _service_connections(pg_engine)
    # When the database refuses connections for 4 s, then accepts them and never answers for 4 s,
    # and a document starts in the middle of it
    down_at = time.time()
    pg_forwarder.pause()
    time.sleep(DB_OUTAGE / 4)
    with pg_engine.begin() as conn:
        insert_document(conn, kb_id=kb, location="during.pdf")
    time.sleep(DB_OUTAGE / 4)
    pg_forwarder.pause(hang=True)
    time.sleep(DB_OUTAGE / 2)
    alive_during = {name: proc.poll() is None for name, proc in procs.procs.items()}
    pg_forwarder.resume()
    up_at = time.time()
    # Expect the new document cached within 2 s of the database returning (plus a collect tick)
    wait_until(lambda: cache.client.exists(f"{kb}/during.pdf"), timeout=10, what="the document started meanwhile")
    recovered = time.time() - up_at
    assert alive_during == {"worker": True, "beat": True}
    assert {name: proc.poll() is None for name, proc in procs.procs.items()} == {"worker": True, "beat": True}
    assert recovered <= connect_timeout + 1.5, f"cached {recovered:.1f}s after the database returned"
    # and each failed collect failed within about the connect timeout, with one line saying why
    every_line = log_lines(procs.log("worker"))
    received = {_task_id(x.message): x.at for x in every_line if "collect[" in x.message and "received" in x.message}
    failures = [line for line in between(every_line, down_at, up_at) if "raised expected: CatalogError" in line.message]
    durations = [line.at - received[_task_id(line.message)] for line in failures]
    assert failures, "no collect failure was logged"
    assert len(failures) <= DB_OUTAGE + 2, f"{len(failures)} failure lines in a {DB_OUTAGE:.0f}s outage"
    assert max(durations) <= connect_timeout + 1.5, f"a failing collect took {max(durations):.1f}s"
    assert "Traceback" not in procs.log("worker")
    # and the outage said at WARNING once per 10 s, its end in one line
    warned = [x for x in problems(between(every_line, down_at, up_at + 3)) if "task database" in x.message]
    assert len(warned) == 1, warned
    assert len([x for x in every_line if x.at >= up_at and "reach the task database again" in x.message]) == 1
    # and the service holds no more server connections than before
    wait_for_collects(cache.client, 2)
    connections_after = _service_connections(pg_engine)
    assert connections_after <= max(connections_before, 1) + 1, (connections_before, connections_after)


# -- storage fails, then recovers ------------------------------------------------------------------------------


def _retries(log: str, key: str) -> list[str]:
    """Celery's 'retry: Retry in Ns' lines for copies of `key`."""
    return [line.message for line in log_lines(log) if " retry: Retry in " in line.message and key in line.message]


def test_failing_storage_is_retried_with_backoff_holding_the_claim_and_a_stall_is_cut_at_the_read_timeout(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """503s, resets and a stalled body are retried under the claim, with backoff, and cached once storage answers."""
    # Given a running service with a 1 s read timeout, and storage that will fail each file a few times
    read_timeout, stall = 1, 6.0
    settings = {
        **s3_env,
        "CACHETASKS_S3_READ_TIMEOUT": str(read_timeout),
        "CACHETASKS_S3_CONNECT_TIMEOUT": "1",
        "CACHETASKS_MAX_RETRIES": "2",
    }
    procs = processes(settings)
    start_service(procs, cache.client)
    names = ["f503.bin", "freset.bin", "fstall.bin"]
    for name in names:
        put_s3(s3, "kb1", name, name.encode() * 1000)
    # (botocore itself tries each GET up to three times: four failed GETs make one or two failed attempts of the task)
    s3_proxy.fail_next(4, Fault(status=503, key_contains="f503"))
    s3_proxy.fail_next(4, Fault(reset=True, key_contains="freset"))
    s3_proxy.fail_next(1, Fault(stall=stall, key_contains="fstall"))
    recovering = [f"kb1/{name}" for name in names]

    def sample() -> Sample:
        with cache.client.pipeline(transaction=False) as pipe:
            for key in recovering:
                pipe.exists(key)
                pipe.exists(inflight_key(key))
            flags = pipe.execute()
        return time.monotonic(), list(zip(flags[::2], flags[1::2], strict=True))

    # When their documents become ongoing
    with Poller(sample, interval=0.01) as poller:
        with sqlite_engine.begin() as conn:
            for name in names:
                insert_document(conn, kb_id="kb1", location=name)
        # Expect the three files whose storage recovers cached, each from its first good read
        wait_until(lambda: cache.client.exists(*recovering) == 3, timeout=25, what="the recovering files")
    assert [cache.client.get(key) for key in recovering] == [name.encode() * 1000 for name in names]
    assert [s3_proxy.gets[f"/{key}"] for key in recovering] == [4 + 1, 4 + 1, 1 + 1]  # every fault, then one read
    worker_log = procs.log("worker")
    assert all(_retries(worker_log, key) for key in recovering), "a file was cached without a retry of its task"
    # and the claim held from the first sight of it until the file was cached
    for i, key in enumerate(recovering):
        states = [cast(Sample, seen)[1][i] for seen in poller.seen]
        first_mark = next(n for n, (_, marked) in enumerate(states) if marked)
        gaps = [n for n, (cached, marked) in enumerate(states[first_mark:]) if not cached and not marked]
        assert gaps == [], f"{key} was neither cached nor claimed in {len(gaps)} samples between attempts"
    # and the stalled read given up after about the read timeout, not after the stall
    first, second = s3_proxy.get_times["/kb1/fstall.bin"][:2]
    assert second - first <= read_timeout + 1 + 1.5, f"the stalled read held its slot {second - first:.1f}s"


def test_storage_that_stays_down_is_given_up_after_the_retries_warned_about_and_left_alone_for_the_negative_ttl(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """After CACHETASKS_MAX_RETRIES the copy stops with one warning, and storage is not asked again for 4 s."""
    # Given a running service with two retries and a 4 s negative TTL, and storage that always answers 503 for one file
    negative_ttl = 4
    procs = processes({**s3_env, "CACHETASKS_MAX_RETRIES": "2", "CACHETASKS_NEGATIVE_TTL": str(negative_ttl)})
    start_service(procs, cache.client)
    put_s3(s3, "kb1", "down.bin", b"never served")
    put_s3(s3, "kb1", "control.bin", b"control")
    s3_proxy.fail_next(1000, Fault(status=503, key_contains="down.bin"))
    # When their documents become ongoing
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="down.bin")
        insert_document(conn, kb_id="kb1", location="control.bin")
    wait_until(lambda: cache.client.exists("kb1/control.bin"), timeout=5, what="the control file")

    def gave_up() -> list[LogLine]:
        return [x for x in log_lines(procs.log("worker")) if "kb1/down.bin" in x.message and " raised " in x.message]

    wait_until(gave_up, timeout=15, what="the copy to give up")
    gets_at_give_up = s3_proxy.gets["/kb1/down.bin"]
    # Expect three attempts (botocore tries each GET three times), with backoff between them
    countdowns = [
        float(x.split(" retry: Retry in ")[1].split("s:")[0]) for x in _retries(procs.log("worker"), "down.bin")
    ]
    assert countdowns[:2] == [c for n, c in enumerate(countdowns[:2]) if c <= 2**n] and len(countdowns) >= 2
    assert gets_at_give_up >= 3 * 3
    # and the file left alone for the negative TTL, then tried again by a new copy
    wait_until(lambda: s3_proxy.gets["/kb1/down.bin"] > gets_at_give_up, timeout=negative_ttl + 5, what="a new copy")
    again = s3_proxy.get_times["/kb1/down.bin"][gets_at_give_up]
    assert again - s3_proxy.get_times["/kb1/down.bin"][gets_at_give_up - 1] >= negative_ttl - 0.5
    # and the give-up said in one warning naming the file and why
    warned = [line for line in warnings_in(procs.log("worker")) if "gave up" in line]
    assert len(warned) == 1 and "kb1/down.bin" in warned[0] and "InjectedFault" in warned[0], warned
    assert [x for x in gave_up() if "raised expected: StorageUnavailable" in x.message][:1] == gave_up()[:1]
    assert "Traceback" not in procs.log("worker")


def test_missing_objects_are_not_retried_and_read_at_most_once_per_negative_ttl_with_one_warning_each_time(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """With CACHETASKS_NEGATIVE_TTL=4, a missing key, a missing bucket and an object S3 refuses (403): one GET and
    one warning per 4 s."""
    # Given a running service that remembers misses for 4 s, a control file, two files that are not there,
    # and one that storage refuses the service
    negative_ttl, watch = 4, 10.0
    procs = processes({**s3_env, "CACHETASKS_NEGATIVE_TTL": str(negative_ttl)})
    start_service(procs, cache.client)
    put_s3(s3, "kb1", "control.pdf", b"control")
    put_s3(s3, "kb1", "refused.pdf", b"not for this service")
    s3_proxy.fail_next(1000, Fault(status=403, code="AccessDenied", key_contains="refused.pdf"))
    missing = {
        "kb1/no such key.pdf": "/kb1/no such key.pdf",
        "no-such-bucket/file.pdf": "/no-such-bucket/file.pdf",
        "kb1/refused.pdf": "/kb1/refused.pdf",
    }
    # When their documents stay ongoing for 10 s
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="control.pdf")
        for key in missing:
            insert_document(conn, kb_id=key.split("/")[0], location=key.split("/", 1)[1])
    wait_until(lambda: all(s3_proxy.gets[path] for path in missing.values()), timeout=5, what="the first reads")
    time.sleep(watch)
    # Expect the control cached, and each other file read (and warned about, with its reason) once per period:
    # 10 s -> 3 at most
    assert cache.client.get("kb1/control.pdf") == b"control"
    log = procs.log("worker")
    for key, path in missing.items():
        reads = s3_proxy.gets[path]
        warnings = [line for line in warnings_in(log) if key in line]
        assert 2 <= reads <= watch // negative_ttl + 1, f"{key}: {reads} reads in {watch:.0f}s"
        assert len(warnings) == reads, f"{key}: {len(warnings)} warnings for {reads} reads"
        assert all((": forbidden: AccessDenied" if "refused" in key else ": missing: ") in w for w in warnings)
        assert _retries(log, key) == [], f"{key} was retried within its task"
        times = s3_proxy.get_times[path]
        assert min(b - a for a, b in itertools.pairwise(times)) >= negative_ttl - 0.5


# -- beat and workers: down, doubled, stopped ------------------------------------------------------------------


def _queue_length(client: redis.Redis) -> int:
    return int(client.llen(COLLECT_QUEUE))


def test_collects_do_not_pile_up_in_the_queue_while_no_worker_runs(
    env: dict[str, str], redis_server: RedisServer, processes: Start
) -> None:
    """With beat firing every 0.5 s and no worker for 5 s, the collect queue holds a few messages at most."""
    # Given beat alone
    broker = redis_server.client(0)
    try:
        procs = processes({**env, "CACHETASKS_COLLECT_INTERVAL": "0.5"})
        procs.beat()
        wait_until(lambda: _queue_length(broker), timeout=20, what="the first collect message")
        # When no worker consumes for 5 s
        time.sleep(5)
        # Expect
        assert _queue_length(broker) <= 3
    finally:
        broker.close()


WORKERS_DOWN = 20.0  # the spec's 60 s shortened: beat holds back from the first second, so length adds nothing


@pytest.mark.slow
def test_after_all_workers_were_down_the_queue_holds_one_collect_and_caching_resumes_within_3s(
    env: dict[str, str], redis_server: RedisServer, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """Workers down 20 s with beat running: one collect waits, and a new document is cached 3 s after a restart."""
    # Given a running service that collects every 0.5 s
    broker = redis_server.client(0)
    procs = processes({**env, "CACHETASKS_COLLECT_INTERVAL": "0.5"})
    start_service(procs, cache.client)
    try:
        # When every worker stops for 20 s, and a document starts meanwhile
        procs.stop("worker")
        put_local(env, "kb1", "meanwhile.pdf", b"meanwhile")
        with sqlite_engine.begin() as conn:
            insert_document(conn, kb_id="kb1", location="meanwhile.pdf")
        lengths = []
        for _ in range(int(WORKERS_DOWN)):
            time.sleep(1)
            lengths.append(_queue_length(broker))
        procs.worker()
        # Expect the new document cached within 3 s of the worker's start
        wait_until(lambda: cache.client.exists("kb1/meanwhile.pdf"), timeout=10, interval=0.02, what="the document")
        cached_at = time.time()
    finally:
        broker.close()
    lines = log_lines(procs.log("worker"))
    ready = max(x.at for x in lines if x.message.endswith(" ready."))
    assert max(lengths) == 1, f"collect queue lengths while the workers were down: {lengths}"
    assert cached_at - ready <= 3, f"cached {cached_at - ready:.1f}s after the worker was ready"
    assert "not sending collect while its last message still waits" in procs.log("beat")


def test_a_second_beat_stays_standby_so_collects_never_double_and_no_file_is_fetched_twice(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """Two beats by mistake: only one sends collects (RedBeat's lock), one collect per interval, one read per file."""
    # Given a worker and two beats, and slow storage so that copies span several collects
    procs = processes(s3_env)
    start_service(procs, cache.client)
    procs.beat("beat2")
    names = [f"doc-{i}.pdf" for i in range(10)]
    for name in names:
        put_s3(s3, "kb1", name, name.encode())
    s3_proxy.get_latency = 1.5
    # When documents become ongoing
    started = time.time()
    with sqlite_engine.begin() as conn:
        for name in names:
            insert_document(conn, kb_id="kb1", location=name)
    keys = [f"kb1/{name}" for name in names]
    wait_until(lambda: cache.client.exists(*keys) == len(keys), timeout=10, what="every file")
    wait_for_collects(cache.client, 3)
    window = time.time() - started
    # Expect one read per file, and collects from one beat only, about one per second
    assert {path: n for path, n in s3_proxy.gets.items() if n} == {f"/{key}": 1 for key in keys}
    senders = [name for name in ("beat", "beat2") if "Sending due task" in procs.log(name)]
    assert senders == ["beat"]
    received = [
        x
        for x in log_lines(procs.log("worker"))
        if x.at >= started and "collect[" in x.message and "received" in x.message
    ]
    assert len(received) <= window + 2, f"{len(received)} collects in {window:.1f}s"
    assert all(proc.poll() is None for proc in procs.procs.values())


def test_worker_stopped_with_sigterm_mid_copy_finishes_or_abandons_it_cleanly(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """kill -TERM during a 16 MiB copy: the worker exits, readers never see part of the file, nothing is left over."""
    # Given a running service whose claims expire after 5 s, and a large file that storage serves slowly
    inflight_ttl = 5
    procs = processes({**s3_env, "CACHETASKS_INFLIGHT_TTL": str(inflight_ttl)})
    start_service(procs, cache.client)
    data = _big(16 * MiB)
    put_s3(s3, "kb1", "big.bin", data)
    s3_proxy.bandwidth = 4 * MiB
    key = "kb1/big.bin"
    with _watch_value(cache.client, key) as poller:
        with sqlite_engine.begin() as conn:
            insert_document(conn, kb_id="kb1", location="big.bin")
        wait_until(
            lambda: any(cache.client.strlen(t) >= 2 * MiB for t in keys_matching(cache.client, TMP + "*")),
            timeout=10,
            interval=0.02,
            what="the copy to be under way",
        )
        # When the worker gets SIGTERM in the middle of the copy
        worker = procs.procs["worker"]
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(20)
        finished = cache.client.exists(key)
        leftovers = keys_matching(cache.client, TMP + "*")
    # Expect the copy finished whole (no temporary key left), or abandoned with nothing readable
    assert set(poller.seen) <= {None, len(data)}
    if finished:
        assert cache.client.get(key) == data
        assert leftovers == []
    else:
        wait_until(lambda: not keys_matching(cache.client, TMP + "*"), timeout=inflight_ttl + 2, what="no tmp key")
    # and a worker started again has the file cached
    s3_proxy.bandwidth = 0
    procs.worker()
    wait_until(lambda: cache.client.exists(key), timeout=inflight_ttl + 15, what="the file")
    assert cache.client.get(key) == data
    assert s3_proxy.gets["/kb1/big.bin"] == (1 if finished else 2)
