"""The listener as it runs: `python -m cachetasks listen` and worker processes, tasks queued the RAGFlow way
(rows committed, then XADD), a RAGFlow executor's consumer group on the stream alongside."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from cachetasks.cache.keys import METRICS, inflight_key
from cachetasks.listener import Role, running
from cachetasks.ops.demo import insert_document
from testbed.observe import between, log_lines, problems
from testbed.processes import REPO, Processes
from testbed.ragflow import Executor, queue_task, stream_name, task
from testbed.servers import RedisServer, wait_until
from tests.support.e2e import put_local

Start = Callable[[dict[str, str]], Processes]


def counters(client: redis.Redis) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in client.hgetall(METRICS).items()}


def wait_ready(procs: Processes, client: redis.Redis, *, listeners: tuple[str, ...] = ("listener",)) -> None:
    """Until the worker consumes and the first listener named reads te.0.common (the others stand by)."""
    wait_until(lambda: " ready." in procs.log("worker"), timeout=30, what="the worker to be ready")

    def listening() -> bool:
        roles = {p.node: (p.role, p.streams) for p in running(client)}
        return roles.get(listeners[0]) == (Role.ACTIVE, (stream_name(0),)) and all(
            roles.get(node, (None,))[0] == Role.STANDBY for node in listeners[1:]
        )

    wait_until(listening, timeout=30, what=f"{listeners[0]} to read te.0.common")


def queue_document(engine: sa.Engine, client: redis.Redis, env: dict[str, str], location: str) -> str:
    """What RAGFlow does when a user parses a document: the file is in storage, the rows are committed, then
    the task is queued on te.0.common. Returns the cache key of the file."""
    put_local(env, "kb1", location, f"the bytes of {location}".encode())
    with engine.begin() as conn:
        doc = insert_document(conn, kb_id="kb1", location=location)
    queue_task(client, task(doc))
    return f"kb1/{location}"


def test_a_queued_task_is_cached_with_no_collect_at_all_and_ragflows_group_never_sees_the_listener(
    env: dict[str, str], sqlite_engine: sa.Engine, cache_client: redis.Redis, processes: Start
) -> None:
    """With a worker and the listener but no beat (no collect ever runs), a task queued the RAGFlow way has its
    file cached within seconds, counted as the listener's; the executor's group delivered nothing meanwhile."""
    # Given RAGFlow's executor in its group, a worker and a listener
    executor = Executor(cache_client)
    executor.join()
    procs = processes(env)
    procs.worker()
    procs.listener()
    wait_ready(procs, cache_client)
    # When a document is queued
    queued = time.monotonic()
    key = queue_document(sqlite_engine, cache_client, env, "reports/Q3 résumé.pdf")
    # Expect its file cached, by the listener's copy
    wait_until(lambda: cache_client.exists(key), timeout=10, interval=0.01, what="the file")
    cached_after = time.monotonic() - queued
    assert cache_client.get(key) == b"the bytes of reports/Q3 r\xc3\xa9sum\xc3\xa9.pdf"
    assert cached_after < 5, f"cached {cached_after:.2f}s after the task was queued"
    assert {k: v for k, v in counters(cache_client).items() if k.startswith("listener:")} == {
        "listener:file": 1,
        "listener:files": 1,
    }
    # and RAGFlow's group untouched: nothing delivered or pending, and the executor gets the task
    group = executor.group()
    assert (group["pending"], group["last-delivered-id"], group["lag"]) == (0, b"0-0", 1)
    taken = executor.take()
    assert taken is not None and taken[1]["doc_id"] is not None


def test_collect_catches_the_file_of_a_message_that_came_before_its_rows(
    env: dict[str, str], sqlite_engine: sa.Engine, cache_client: redis.Redis, processes: Start
) -> None:
    """A task queued before its rows are visible is not ongoing for the listener; the next collect caches it,
    and the counters say collect caught one file and the listener none."""
    # Given the service with beat, a worker and a listener
    Executor(cache_client).join()
    procs = processes(env)
    procs.worker()
    procs.beat()
    procs.listener()
    wait_ready(procs, cache_client)
    # When a task is queued before its rows are committed (the listener reads it first), then they are
    put_local(env, "kb1", "early.pdf", b"early")
    doc = uuid.uuid1().hex
    queue_task(cache_client, task(doc))
    wait_until(lambda: counters(cache_client).get("listener:not-ongoing"), timeout=10, what="the listener to read it")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="early.pdf", doc_id=doc)
    # Expect collect to cache it, and to have counted it
    wait_until(lambda: cache_client.exists("kb1/early.pdf"), timeout=10, what="collect to cache the file")
    wait_until(lambda: counters(cache_client).get("caught") == 1, timeout=5, what="collect's count")
    assert counters(cache_client).get("listener:files") == 0


def test_malformed_messages_are_skipped_and_logged_once_each_while_good_ones_are_cached(
    env: dict[str, str], sqlite_engine: sa.Engine, cache_client: redis.Redis, processes: Start
) -> None:
    """Three malformed entries among good tasks: three warnings, their control characters escaped in the log,
    and the listener goes on caching."""
    # Given a worker and a listener
    Executor(cache_client).join()
    procs = processes(env)
    procs.worker()
    procs.listener()
    wait_ready(procs, cache_client)
    # When malformed entries come between two good tasks
    first = queue_document(sqlite_engine, cache_client, env, "first.pdf")
    stream = stream_name(0)
    cache_client.xadd(stream, {"msg": "no message field"})
    cache_client.xadd(stream, {"message": b"\x1b]0;owned\x07 not json"})
    cache_client.xadd(stream, {"message": json.dumps(task("\x1b[2J"))})
    second = queue_document(sqlite_engine, cache_client, env, "second.pdf")
    # Expect both good files cached, and one warning per malformed entry
    wait_until(lambda: cache_client.exists(first, second) == 2, timeout=10, what="both files")
    log = procs.log("listener")
    warnings = [line for line in log_lines(log) if line.level == "WARNING"]
    assert len(warnings) == 3 and all("malformed" in line.message for line in warnings), warnings
    assert "\x1b" not in log and "\x07" not in log
    assert counters(cache_client)["listener:malformed"] == 3
    assert procs.procs["listener"].poll() is None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and start."""
    server = RedisServer(tmp_path / "own-redis").start()
    try:
        yield server
    finally:
        server.stop()


OUTAGE = 4.0


def test_the_listener_outlives_a_redis_restart_and_caches_the_tasks_queued_after_it(
    env: dict[str, str], own_redis: RedisServer, sqlite_engine: sa.Engine, processes: Start
) -> None:
    """Redis (broker, cache and RAGFlow's streams) down 4 s and back empty: the listener stays up, logs the outage
    once, takes its lease again and caches the next task RAGFlow queues on its recreated stream."""
    # Given worker and listener on a Redis of their own, one task cached through the listener
    settings = {**env, "CELERY_BROKER_URL": own_redis.url(0), "CACHETASKS_REDIS_URL": own_redis.url(1)}
    client = own_redis.client(1)
    Executor(client).join()
    procs = processes(settings)
    procs.worker()
    procs.listener()
    wait_ready(procs, client)
    before = queue_document(sqlite_engine, client, env, "before.pdf")
    wait_until(lambda: client.exists(before), timeout=10, what="the file before the outage")
    # When Redis stops, and comes back empty; RAGFlow's executors make their group (and stream) again
    down_at = time.time()
    own_redis.stop()
    time.sleep(OUTAGE)
    own_redis.start()
    up_at = time.time()
    Executor(client).join()
    after = queue_document(sqlite_engine, client, env, "after.pdf")
    # Expect the new task's file cached by the listener, which stayed up and said little
    wait_until(lambda: client.exists(after), timeout=15, interval=0.05, what="the file after the outage")
    assert procs.procs["listener"].poll() is None
    assert counters(client).get("listener:files") == 1, "counted by the listener, after the restart"
    lines = problems(between(log_lines(procs.log("listener")), down_at, up_at + 1))
    assert 1 <= len(lines) <= 2, lines


def test_a_standby_listener_takes_over_when_the_active_one_stops(
    env: dict[str, str], sqlite_engine: sa.Engine, cache_client: redis.Redis, processes: Start
) -> None:
    """Two listeners: one reads, one stands by; stopped (SIGTERM), the first gives its lease up and the second
    claims the next task's file within seconds."""
    # Given two listeners (and no worker: the claim and the queued copy show the listener's work)
    Executor(cache_client).join()
    procs = processes(env)
    procs.listener("first")
    wait_until(lambda: [p.node for p in running(cache_client)] == ["first"], timeout=30, what="the first listener")
    procs.listener("second")
    wait_until(
        lambda: {(p.node, p.role) for p in running(cache_client)} == {("first", Role.ACTIVE), ("second", Role.STANDBY)},
        timeout=30,
        what="the second listener to stand by",
    )
    # When the first one stops, and a task is queued
    procs.stop("first")
    stopped = time.monotonic()
    with sqlite_engine.begin() as conn:
        doc = insert_document(conn, kb_id="kb1", location="handed-over.pdf")
    queue_task(cache_client, task(doc))
    # Expect the second one to claim its file and say it is active
    wait_until(lambda: cache_client.exists(inflight_key("kb1/handed-over.pdf")), timeout=10, what="the claim")
    assert time.monotonic() - stopped < 5
    assert [(p.node, p.role) for p in running(cache_client)] == [("second", Role.ACTIVE)]
    assert "stopped" in procs.log("first")
    # and the healthcheck agrees: the second one answers, the first one no longer does
    pings = {node: ping(procs, node) for node in ("second", "first")}
    assert pings == {"second": 0, "first": 1}, pings


def ping(procs: Processes, node: str) -> int:
    """Exit code of `python -m cachetasks listen --ping -n NODE`, compose's healthcheck."""
    done = subprocess.run(
        [sys.executable, "-m", "cachetasks", "listen", "--ping", "-n", node],
        cwd=REPO,
        env=procs.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode


@pytest.fixture
def cache_client(env: dict[str, str]) -> Iterator[redis.Redis]:
    """A client on the cache's Redis database of `env` (where RAGFlow's streams are too)."""
    client = redis.Redis.from_url(env["CACHETASKS_REDIS_URL"])
    yield client
    client.close()
