"""The reader against real Redis and storage: hits, misses, outages and copies in flight."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from cachetasks.cache.keys import inflight_key, skip_key
from cachetasks.errors import FileMissing, InvalidAddress
from cachetasks.reader import Reader, ReaderStats, from_env
from cachetasks.settings import Settings
from cachetasks.storage import Blob, Storage
from testbed.proxy import S3Proxy
from testbed.servers import RedisServer

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
DATA = bytes(range(256)) * 400 + b"\x00\xff"  # every byte value: the reader is binary-safe
KB, LOCATION = "kb1", "folder/a file é.pdf"
KEY = f"{KB}/{LOCATION}"
QUICK = 1.0  # seconds: a read that falls back to storage costs well under this


class CountingStorage:
    """A storage that counts the files opened through it (for the local folder; S3 has the proxy)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.opened = 0

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        self.opened += 1
        return self.inner.open(bucket, location, chunk_size=chunk_size)

    def check(self) -> str:
        return self.inner.check()


@dataclass
class Backend:
    """Settings for one storage backend, a way to place a file in it, and how many files were read from it."""

    settings: Settings
    put: Callable[[str, str, bytes], None]
    reads: Callable[[], int]
    watch: Callable[[Storage], Storage]  # what the reader's storage is swapped for, to be counted


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "local":
        settings = Settings.from_env(env)
        counted: list[CountingStorage] = []

        def put_local(bucket: str, location: str, data: bytes) -> None:
            path = settings.storage_root / bucket / location
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        def watch(storage: Storage) -> Storage:
            counted.append(CountingStorage(storage))
            return counted[-1]

        return Backend(settings, put_local, lambda: sum(s.opened for s in counted), watch)

    s3: Any = request.getfixturevalue("s3")
    proxy: S3Proxy = request.getfixturevalue("s3_proxy")
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)

    def put_s3(bucket: str, location: str, data: bytes) -> None:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=location, Body=data)

    settings = Settings.from_env({**env, "CACHETASKS_STORAGE": "s3", "CACHETASKS_S3_ENDPOINT_URL": proxy.url})
    return Backend(settings, put_s3, proxy.total_gets, lambda storage: storage)


@pytest.fixture
def make_reader(backend: Backend) -> Iterator[Callable[..., Reader]]:
    """Build readers from the backend's settings (with overrides); all are closed after the test."""
    readers: list[Reader] = []

    def make(*, wait_inflight: float = 0.0, **overrides: Any) -> Reader:
        reader = Reader.from_settings(dataclasses.replace(backend.settings, **overrides), wait_inflight=wait_inflight)
        readers.append(reader)
        reader.storage = backend.watch(reader.storage)
        return reader

    yield make
    for reader in readers:
        reader.close()


@pytest.fixture
def reader(make_reader: Callable[..., Reader]) -> Reader:
    return make_reader()


@pytest.fixture
def client(redis_server: RedisServer, env: dict[str, str]) -> Iterator[redis.Redis]:
    """The test's own client on the reader's Redis database (emptied by `env`)."""
    c = redis_server.client(1)
    yield c
    c.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop, freeze and restart."""
    server = RedisServer(tmp_path / "own-redis").start()
    yield server
    if server.proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def timed(action: Callable[[], bytes]) -> tuple[bytes, float]:
    start = time.monotonic()
    value = action()
    return value, time.monotonic() - start


def outage_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cachetasks.reader" and r.levelno == level]


# -- hits and misses ---------------------------------------------------------------------------


def test_cached_file_is_read_from_redis_without_reading_storage(
    backend: Backend, reader: Reader, client: redis.Redis
) -> None:
    """A file cached under "{bucket}/{location}" comes back byte for byte with no storage read."""
    # Given a file in storage and in the cache
    backend.put(KB, LOCATION, DATA)
    client.set(KEY, DATA, ex=720)
    # When
    data = reader.get(KB, LOCATION)
    # Expect
    assert data == DATA
    assert backend.reads() == 0
    assert reader.stats == ReaderStats(hits=1)


def test_uncached_file_is_read_from_storage_once_and_not_cached_by_the_reader(
    backend: Backend, reader: Reader, client: redis.Redis
) -> None:
    """A file not in the cache is read from storage once, exactly; the reader writes nothing to Redis."""
    # Given a file only in storage
    backend.put(KB, LOCATION, DATA)
    # When
    data = reader.get(KB, LOCATION)
    # Expect
    assert data == DATA
    assert backend.reads() == 1
    assert reader.stats == ReaderStats(misses=1)
    assert client.dbsize() == 0


def test_storage_errors_reach_the_caller_on_every_call(backend: Backend, reader: Reader) -> None:
    """A file missing from storage raises FileMissing each time it is asked for: errors are not cached."""
    # Given nothing in storage nor in the cache
    # When / Expect
    for _ in range(2):
        with pytest.raises(FileMissing):
            reader.get(KB, "no such file.pdf")
    assert backend.reads() == 2
    assert reader.stats == ReaderStats(misses=2)


def test_an_address_storage_refuses_is_refused_before_the_cache(
    backend: Backend, reader: Reader, client: redis.Redis
) -> None:
    """("kb1/folder", "a.pdf") raises InvalidAddress even though its key names the cached "kb1"/"folder/a.pdf"."""
    # Given a cached file whose key another, invalid, address also builds
    client.set("kb1/folder/a.pdf", DATA, ex=720)
    # When / Expect
    with pytest.raises(InvalidAddress):
        reader.get("kb1/folder", "a.pdf")
    assert backend.reads() == 0
    assert reader.stats == ReaderStats()


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_an_address_that_names_a_service_key_is_refused(backend: Backend, reader: Reader, client: redis.Redis) -> None:
    """A bucket named "cachetasks:skip:kb1" is refused, never answered with the service's own key of that name."""
    # Given the service's skip mark for "kb1/a.pdf", which is also the cache key of ("cachetasks:skip:kb1", "a.pdf")
    client.set(skip_key("kb1/a.pdf"), "missing", ex=60)
    backend.put("cachetasks:skip:kb1", "a.pdf", DATA)
    # Expect
    with pytest.raises(InvalidAddress):
        reader.get("cachetasks:skip:kb1", "a.pdf")
    assert backend.reads() == 0


# -- Redis outages -----------------------------------------------------------------------------


def test_stopped_redis_falls_back_to_storage_quickly_and_is_logged_once(
    backend: Backend, make_reader: Callable[..., Reader], own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis stopped every read comes from storage in well under a second; the outage is logged once."""
    # Given a reader on a Redis of our own that holds the file
    caplog.set_level(logging.INFO, logger="cachetasks.reader")
    reader = make_reader(redis_url=own_redis.url(1))
    backend.put(KB, LOCATION, DATA)
    with own_redis.client(1) as c:
        c.set(KEY, DATA, ex=720)
    assert reader.get(KB, LOCATION) == DATA
    # When Redis stops
    own_redis.stop()
    reads = [timed(lambda: reader.get(KB, LOCATION)) for _ in range(5)]
    # Expect every read answered from storage, quickly, and one warning
    assert [data == DATA for data, _ in reads] == [True] * 5
    assert max(seconds for _, seconds in reads) < QUICK
    assert backend.reads() == 5
    assert reader.stats == ReaderStats(hits=1, redis_errors=5)
    assert len(outage_lines(caplog, logging.WARNING)) == 1
    assert outage_lines(caplog, logging.INFO) == []


def test_redis_back_after_an_outage_serves_hits_again_and_says_so_once(
    backend: Backend, make_reader: Callable[..., Reader], own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """When Redis returns, the next read is a hit again and the recovery is logged once."""
    # Given a reader that saw Redis stop
    caplog.set_level(logging.INFO, logger="cachetasks.reader")
    reader = make_reader(redis_url=own_redis.url(1))
    backend.put(KB, LOCATION, DATA)
    own_redis.stop()
    assert reader.get(KB, LOCATION) == DATA
    # When Redis starts again on the same port, and the file is cached again
    own_redis.start()
    with own_redis.client(1) as c:
        c.set(KEY, DATA, ex=720)
    data = [reader.get(KB, LOCATION) for _ in range(3)]
    # Expect
    assert data == [DATA] * 3
    assert backend.reads() == 1
    assert reader.stats == ReaderStats(hits=3, redis_errors=1)
    assert len(outage_lines(caplog, logging.WARNING)) == 1
    assert [line.split(" (")[0] for line in outage_lines(caplog, logging.INFO)] == ["cache reachable again"]


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_a_frozen_redis_costs_a_read_about_the_socket_timeout(
    backend: Backend, make_reader: Callable[..., Reader], own_redis: RedisServer
) -> None:
    """A Redis that accepts connections but never answers delays a read by about 1 s, then storage serves it."""
    # Given a reader connected to a Redis of our own, which then freezes (SIGSTOP)
    reader = make_reader(redis_url=own_redis.url(1))
    backend.put(KB, LOCATION, DATA)
    assert reader.get(KB, LOCATION) == DATA
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    # When
    data, seconds = timed(lambda: reader.get(KB, LOCATION))
    # Expect the read timeout (1 s), not the settings' 5 s
    assert data == DATA
    assert 0.9 < seconds < 2.5
    assert reader.stats == ReaderStats(misses=1, redis_errors=1)


# -- copies in flight --------------------------------------------------------------------------


def test_a_reader_waits_for_a_copy_in_flight_instead_of_reading_storage(
    backend: Backend, reader: Reader, client: redis.Redis
) -> None:
    """With the in-flight mark set, get(wait=2) returns the bytes the copy writes 0.3 s later, with no storage read."""
    # Given a copy in flight
    backend.put(KB, LOCATION, DATA)
    client.set(inflight_key(KEY), "queued", ex=30)
    # When a reader asks for the file while the copy finishes
    with ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        future = pool.submit(reader.get, KB, LOCATION, wait=2)
        time.sleep(0.3)
        client.set(KEY, DATA, ex=720)
        client.delete(inflight_key(KEY))
        data = future.result(timeout=5)
        seconds = time.monotonic() - start
    # Expect
    assert data == DATA
    assert 0.3 <= seconds < 1.5
    assert backend.reads() == 0
    assert reader.stats == ReaderStats(hits=1, waited=1)


def test_a_mark_that_goes_without_a_copy_sends_the_reader_to_storage_at_once(
    backend: Backend, reader: Reader, client: redis.Redis
) -> None:
    """When the in-flight mark disappears with no key (a refused copy), the waiting reader reads storage then."""
    # Given a copy in flight
    backend.put(KB, LOCATION, DATA)
    client.set(inflight_key(KEY), "queued", ex=30)
    # When the copy gives up 0.3 s into a 2 s wait
    with ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        future = pool.submit(reader.get, KB, LOCATION, wait=2)
        time.sleep(0.3)
        client.delete(inflight_key(KEY))
        data = future.result(timeout=5)
        seconds = time.monotonic() - start
    # Expect
    assert data == DATA
    assert 0.3 <= seconds < 1.5
    assert backend.reads() == 1
    assert reader.stats == ReaderStats(misses=1, waited=1)


def test_a_wait_ends_at_its_limit_and_storage_serves_the_file(
    backend: Backend, make_reader: Callable[..., Reader], client: redis.Redis
) -> None:
    """A reader built with wait_inflight=0.3 gives up on a copy still in flight after 0.3 s and reads storage."""
    # Given a copy in flight that will not finish soon
    backend.put(KB, LOCATION, DATA)
    client.set(inflight_key(KEY), "queued", ex=30)
    reader = make_reader(wait_inflight=0.3)
    # When
    data, seconds = timed(lambda: reader.get(KB, LOCATION))
    # Expect
    assert data == DATA
    assert 0.3 <= seconds < 1.5
    assert backend.reads() == 1
    assert reader.stats == ReaderStats(misses=1, waited=1)


def test_without_a_wait_the_in_flight_mark_is_ignored(backend: Backend, reader: Reader, client: redis.Redis) -> None:
    """By default (wait_inflight=0) a copy in flight does not delay the read: storage serves it at once."""
    # Given a copy in flight
    backend.put(KB, LOCATION, DATA)
    client.set(inflight_key(KEY), "queued", ex=30)
    # When
    data, seconds = timed(lambda: reader.get(KB, LOCATION))
    # Expect
    assert data == DATA
    assert seconds < QUICK
    assert reader.stats == ReaderStats(misses=1)


# -- configuration -----------------------------------------------------------------------------


def test_from_env_reads_the_service_variables_with_short_redis_timeouts(
    env: dict[str, str], client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """from_env() finds the cache through CACHETASKS_REDIS_URL, with a 0.5 s connect and 1 s read timeout."""
    # Given the service's variables in the environment and a cached file
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client.set(KEY, DATA, ex=720)
    # When
    with from_env() as reader:
        data = reader.get(KB, LOCATION)
        timeouts = reader.redis.connection_pool.connection_kwargs
    # Expect
    assert data == DATA
    assert reader.stats == ReaderStats(hits=1)
    assert (timeouts["socket_connect_timeout"], timeouts["socket_timeout"]) == (0.5, 1.0)
