"""One copy, called directly against a private Redis: every outcome, and what each leaves behind."""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachetasks.cache import Cache, FileState, SkipReason
from cachetasks.cache.keys import inflight_key, room_key, skip_key
from cachetasks.cache.memory import ASSUMED_FOR, MemoryGauge
from cachetasks.copier import Copy, copy_file, give_up
from cachetasks.errors import CacheUnavailable, StorageUnavailable
from cachetasks.ref import FileRef
from cachetasks.settings import Settings
from cachetasks.storage import Blob, LocalStorage, MemoryStorage, Storage
from cachetasks.storage.encrypted import EncryptedStorage
from testbed.servers import RedisServer, free_port
from tests.conftest import AWS, storage_for

DOC = FileRef("kb1", "reports/q3 résumé.pdf")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OWNER = "task-1"
SETTINGS = Settings(ttl=720, negative_ttl=60, inflight_ttl=30, chunk_bytes=1000)


@pytest.fixture
def cache(cache: Cache) -> Cache:
    """The shared fixture's cache, on an emptied database of our private redis-server."""
    cache.client.flushdb()
    return cache


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


def copy(cache: Cache, storage: MemoryStorage | LocalStorage, ref: FileRef = DOC, **settings: object) -> Copy:
    return copy_file(cache, storage, ref, Settings(**{**SETTINGS.__dict__, **settings}), owner=OWNER)


# -- cached ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 999, 1000, 1001, 25_000], ids=lambda n: f"{n} bytes")
def test_a_file_is_cached_whole_with_its_ttl_accounted_and_its_claim_released(
    cache: Cache, storage: MemoryStorage, size: int
) -> None:
    """The key holds the exact bytes with the TTL; the ledger counts them; no claim or temporary key remains."""
    # Given a file of one chunk, exactly one chunk, or several
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    storage.put(*DOC, data)
    # When
    done = copy(cache, storage)
    # Expect
    assert done == Copy(FileState.CACHED, size)
    assert cache.client.get(DOC.key) == data
    assert 719 <= cache.client.ttl(DOC.key) <= 720
    assert cache.held_bytes() == size
    assert cache.owned() == {DOC.key}
    assert not cache.client.exists(inflight_key(DOC.key))
    assert [k for k in cache.client.scan_iter() if b":tmp:" in k] == []


@pytest.mark.parametrize(
    ("setup", "found"),
    [
        (lambda c: c.client.set(DOC.key, b"there", ex=100), FileState.CACHED),
        (lambda c: c.client.set(inflight_key(DOC.key), "task-2", px=10_000), FileState.IN_FLIGHT),
        (lambda c: c.remember_skip(DOC, SkipReason.MISSING, 60), FileState.SKIPPED),
    ],
    ids=["cached", "another copy's claim", "remembered as skipped"],
)
def test_a_file_that_needs_no_copy_is_not_opened(
    cache: Cache, storage: MemoryStorage, setup: Callable[[Cache], object], found: FileState
) -> None:
    """A copy that finds its file cached, claimed by another copy, or skipped reports that state and reads nothing."""
    # Given
    storage.put(*DOC, b"new bytes")
    setup(cache)
    # When
    done = copy(cache, storage)
    # Expect
    assert done == Copy(found)
    assert storage.opens[DOC] == 0
    assert cache.client.get(DOC.key) in (None, b"there")


# -- skipped -------------------------------------------------------------------------------------------------


def test_a_missing_file_is_remembered_for_the_negative_ttl_warned_about_once_and_its_claim_released(
    cache: Cache, storage: MemoryStorage, caplog: pytest.LogCaptureFixture
) -> None:
    """A miss: one warning naming the file, a skip mark 'missing' for 60 s, no key, and a second copy reads nothing."""
    # When two copies run one after the other
    with caplog.at_level(logging.WARNING, logger="cachetasks"):
        first, second = copy(cache, storage), copy(cache, storage)
    # Expect
    assert (first, second) == (Copy(SkipReason.MISSING), Copy(FileState.SKIPPED))
    assert storage.opens[DOC] == 1
    assert cache.client.get(skip_key(DOC.key)) == b"missing"
    assert 59 <= cache.client.ttl(skip_key(DOC.key)) <= 60
    assert not cache.client.exists(DOC.key, inflight_key(DOC.key))
    assert [r.getMessage() for r in caplog.records if DOC.key in r.getMessage()] == [
        f"not caching {DOC.key}: missing: no such file (not tried again for 60s)"
    ]


def test_a_missing_file_is_read_again_once_its_skip_has_passed_and_cached_when_it_appears(
    cache: Cache, storage: MemoryStorage
) -> None:
    """A miss is remembered only for the negative TTL: a file uploaded late is cached by the next copy after it."""
    # Given a miss remembered for 1 s
    assert copy(cache, storage, negative_ttl=1) == Copy(SkipReason.MISSING)
    storage.put(*DOC, b"arrived late")
    # When the skip has passed
    time.sleep(1.1)
    # Expect
    assert copy(cache, storage) == Copy(FileState.CACHED, 12)
    assert cache.client.get(DOC.key) == b"arrived late"


@pytest.mark.parametrize(("size", "cached"), [(0, True), (1000, True), (1001, False)], ids=lambda v: str(v))
def test_the_size_limit_holds_to_the_byte(cache: Cache, storage: MemoryStorage, size: int, cached: bool) -> None:
    """CACHETASKS_MAX_FILE_BYTES=1000: 0 and 1000 bytes are cached, 1001 is remembered as too large."""
    # Given
    storage.put(*DOC, b"x" * size)
    # When
    done = copy(cache, storage, max_file_bytes=1000, chunk_bytes=300)
    # Expect
    assert done == (Copy(FileState.CACHED, size) if cached else Copy(SkipReason.TOO_LARGE))
    assert cache.client.exists(DOC.key) == cached
    assert cache.client.exists(skip_key(DOC.key)) != cached


class Understated(MemoryStorage):
    """Storage that announces a smaller size than it then streams."""

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        blob = super().open(bucket, location, chunk_size=chunk_size)
        return Blob(1, blob.chunks, blob.close)


def test_a_decrypted_file_announced_a_few_bytes_over_its_length_is_cached_whole(cache: Cache) -> None:
    """A blob that decrypts announces an upper bound (its padding is known at the end): not taken for a torn read."""
    # Given a file RAGFlow encrypted (AES-256-CBC), of a length padding rounds up
    storage = EncryptedStorage(MemoryStorage(), algorithm="aes-256-cbc", key="a key")
    data = bytes(range(256)) * 7 + b"tail"
    storage.put(*DOC, data)
    # When
    done = copy(cache, storage)
    # Expect the plain bytes, whole
    assert done == Copy(FileState.CACHED, len(data))
    assert cache.client.get(DOC.key) == data


@pytest.mark.parametrize(
    ("encrypted", "written_with"), [(False, "setrange"), (True, "append")], ids=["exact size", "an upper bound"]
)
def test_a_file_of_exact_size_is_written_in_place_and_one_of_an_upper_bound_appended(
    cache: Cache, encrypted: bool, written_with: str
) -> None:
    """Storage announcing a file's exact size lets the copy allocate the value whole and write each chunk in place;
    a decrypted file, whose length is known only at its end, is appended chunk by chunk."""
    # Given a file of five chunks and more
    storage: Storage = MemoryStorage()
    if encrypted:
        storage = EncryptedStorage(storage, algorithm="aes-256-cbc", key="a key")
    data = bytes(range(250)) * 20
    storage.put(*DOC, data)
    cache.client.config_resetstat()
    # When
    done = copy(cache, storage)
    # Expect it cached whole, every chunk after the first written the one way
    assert done == Copy(FileState.CACHED, len(data))
    assert cache.client.get(DOC.key) == data
    stats = cache.client.info("commandstats")
    other = "append" if written_with == "setrange" else "setrange"
    assert stats[f"cmdstat_{written_with}"]["calls"] >= 4
    assert f"cmdstat_{other}" not in stats


def test_a_stream_growing_past_the_limit_is_too_large_whatever_size_was_announced(cache: Cache) -> None:
    """A file announced as 1 byte that streams 5,000 is cut at the limit: too-large, nothing cached."""
    storage = Understated({DOC: b"y" * 5000})
    assert copy(cache, storage, max_file_bytes=1000, chunk_bytes=300) == Copy(SkipReason.TOO_LARGE)
    assert not cache.client.exists(DOC.key)
    assert [k for k in cache.client.scan_iter() if b":tmp:" in k] == []


class Overlapped(MemoryStorage):
    """Storage during whose read another copy of the same file (its claim lapsed) writes and accounts it."""

    def __init__(self, files: dict[FileRef, bytes], other: Callable[[], object]) -> None:
        super().__init__(files)
        self.other = other

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        self.other()
        return super().open(bucket, location, chunk_size=chunk_size)


def test_a_copy_overlapping_another_of_the_same_file_leaves_the_cached_key_accounted(cache: Cache) -> None:
    """Under a byte budget, a copy that finds its key written by an overlapping copy keeps that key in the ledger:
    its bytes counted once, its expiry known, so the budget and eviction detection still see it."""
    # Given a copy whose read overlaps another copy of the same file, which writes and settles it first
    data = b"d" * 1000

    def other_copy() -> None:
        cache.client.set(DOC.key, data, ex=720)
        cache.settle(DOC, "task-2", stored=len(data), ttl=720)

    storage = Overlapped({DOC: data}, other_copy)
    # When
    done = copy(cache, storage, max_cache_bytes=5000)
    # Expect nothing written by this copy, and the key accounted once, as written
    assert done == Copy(FileState.CACHED, None)
    assert cache.held_bytes() == len(data)
    assert cache.owned() == {DOC.key}
    assert 700 < cache.client.zscore("cachetasks:owned", DOC.key) / 1000 - time.time() <= 720  # type: ignore[operator]


def test_a_file_past_the_byte_budget_is_skipped_with_its_size_and_not_opened_again_while_the_cache_is_full(
    cache: Cache, storage: MemoryStorage
) -> None:
    """CACHETASKS_MAX_CACHE_BYTES=1500: a second 1000-byte file is cache-full, and its re-check opens nothing."""
    # Given one file cached under the budget
    other = FileRef("kb1", "first.pdf")
    storage.put(*other, b"a" * 1000)
    storage.put(*DOC, b"b" * 1000)
    assert copy(cache, storage, other, max_cache_bytes=1500) == Copy(FileState.CACHED, 1000)
    # When a second one comes, and again once its skip has passed
    first = copy(cache, storage, max_cache_bytes=1500)
    cache.client.delete(skip_key(DOC.key))
    second = copy(cache, storage, max_cache_bytes=1500)
    # Expect both cache-full, its size remembered, storage opened once, and the budget kept
    assert first == second == Copy(SkipReason.CACHE_FULL)
    assert int(cache.client.get(room_key(DOC.key)) or 0) == 1000
    assert storage.opens[DOC] == 1
    assert cache.held_bytes() == 1000


def test_an_address_no_backend_may_read_is_invalid_and_takes_no_claim(cache: Cache, storage: MemoryStorage) -> None:
    """A '..' location is refused before Redis and storage: invalid, no claim, no skip mark, nothing read."""
    bad = FileRef("kb1", "../kb2/secret.pdf")
    assert copy(cache, storage, bad) == Copy(SkipReason.INVALID)
    assert cache.client.keys("*") == []
    assert sum(storage.opens.values()) == 0


@pytest.mark.parametrize("location", ["escape.pdf", "fifo"])
def test_a_local_file_outside_the_root_or_not_regular_is_invalid_and_remembered(
    cache: Cache, tmp_path: Path, location: str
) -> None:
    """A link leaving the storage root, or a FIFO, is refused without blocking and remembered as invalid."""
    # Given
    root = tmp_path / "storage"
    (root / "kb1").mkdir(parents=True)
    (tmp_path / "secret.txt").write_bytes(b"secret")
    if location == "fifo":
        import os

        os.mkfifo(root / "kb1" / "fifo")
    else:
        (root / "kb1" / location).symlink_to(tmp_path / "secret.txt")
    ref = FileRef("kb1", location)
    # When
    started = time.monotonic()
    done = copy(cache, LocalStorage(root), ref)
    # Expect
    assert done == Copy(SkipReason.INVALID)
    assert time.monotonic() - started < 1
    assert not cache.client.exists(ref.key)
    assert cache.client.get(skip_key(ref.key)) == b"invalid"


# -- Redis's memory ------------------------------------------------------------------------------------------


def test_a_file_that_would_take_redis_near_its_maxmemory_is_redis_full_and_not_opened_again(
    redis_server_with: Callable[..., RedisServer], storage: MemoryStorage
) -> None:
    """maxmemory 4 MB: a 3 MiB file is redis-full before any write; its re-check needs no read of storage."""
    # Given a Redis with little room
    server = redis_server_with("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru")
    cache = Cache(server.client(1))
    storage.put(*DOC, b"z" * (3 * 1024 * 1024))
    # When a copy runs, and again once its skip has passed
    first = copy(cache, storage)
    cache.client.delete(skip_key(DOC.key))
    second = copy(cache, storage)
    # Expect
    assert first == second == Copy(SkipReason.REDIS_FULL)
    assert storage.opens[DOC] == 1
    assert server.client(1).info("stats")["evicted_keys"] == 0


class FillsRedis(MemoryStorage):
    """Storage whose stream, once under way, lets someone else fill Redis (after the room was judged)."""

    def __init__(self, filler: redis.Redis, files: dict[FileRef, bytes]) -> None:
        super().__init__(files)
        self.filler = filler

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        blob = super().open(bucket, location, chunk_size=chunk_size)

        def chunks() -> Iterator[bytes]:
            for n, chunk in enumerate(blob.chunks):
                if n == 1:
                    for i in range(6):
                        self.filler.set(f"filler-{i}", b"f" * 1024 * 1024)
                yield chunk

        return Blob(blob.size, chunks(), blob.close)


def test_a_write_redis_refuses_is_refused_remembered_and_leaves_no_temporary_key(
    redis_server_with: Callable[..., RedisServer],
) -> None:
    """A noeviction Redis that others fill while the file streams in refuses the write: 'refused', no partial value."""
    # Given a Redis with room for the file, which others will fill once its copy is under way
    server = redis_server_with("--maxmemory", "16mb", "--maxmemory-policy", "noeviction")
    client = server.client(1)
    cache = Cache(client)
    storage = FillsRedis(server.client(2), {DOC: b"w" * (5 * 1024 * 1024)})
    # When
    done = copy(cache, storage, chunk_bytes=1024 * 1024)
    # Expect
    assert done == Copy(SkipReason.REFUSED)
    assert client.get(skip_key(DOC.key)) == b"refused"
    assert not client.exists(DOC.key, inflight_key(DOC.key))
    assert [k for k in client.scan_iter() if b":tmp:" in k] == []


def test_after_a_large_file_is_refused_a_small_one_that_fits_is_cached(
    redis_server_with: Callable[..., RedisServer], storage: MemoryStorage
) -> None:
    """Redis nearly full: 1,000 bytes cached, 3 MiB redis-full, then 1,000 bytes of a new file cached, not refused."""
    # Given a 64 MiB Redis that others have filled to within about 1.4 MiB of its threshold, and a clock
    server = redis_server_with("--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru")
    filler = server.client(2)
    while (left := 0.9 * 64 * 1024 * 1024 - 1.4 * 1024 * 1024 - int(filler.info("memory")["used_memory"])) > 0:
        filler.set(f"filler-{filler.dbsize()}", b"f" * (512 * 1024 if left > 2 * 1024 * 1024 else 16 * 1024))
    clock = Clock()
    client = server.client(1)
    cache = Cache(client, memory=MemoryGauge(client, Cache(client).scripts, clock=clock))
    small, big, later = FileRef("kb1", "small.pdf"), FileRef("kb1", "big.pdf"), FileRef("kb1", "later.pdf")
    storage.put(*small, b"s" * 1000)
    storage.put(*big, b"b" * (3 * 1024 * 1024))
    storage.put(*later, b"l" * 1000)
    # When a small file, a large one, then (a few seconds on) another small one are copied
    outcomes = [copy(cache, storage, small).outcome, copy(cache, storage, big).outcome]
    clock.now += ASSUMED_FOR
    outcomes.append(copy(cache, storage, later).outcome)
    # Expect the large one refused, and both small ones cached
    assert outcomes == [FileState.CACHED, SkipReason.REDIS_FULL, FileState.CACHED]
    assert server.client(1).info("stats")["evicted_keys"] == 0


# -- transient failures ----------------------------------------------------------------------------------------


class Unavailable(MemoryStorage):
    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        raise StorageUnavailable("503 Service Unavailable", FileRef(bucket, location))


def test_storage_that_fails_for_now_raises_a_transient_error_and_the_copy_keeps_its_claim(cache: Cache) -> None:
    """StorageUnavailable propagates (the task retries it) with the claim still the copy's: no other copy starts."""
    with pytest.raises(StorageUnavailable):
        copy(cache, Unavailable())
    assert cache.client.get(inflight_key(DOC.key)) == OWNER.encode()
    assert not cache.client.exists(skip_key(DOC.key))


def test_an_unreachable_redis_is_cache_unavailable(storage: MemoryStorage) -> None:
    """Redis refusing connections is CacheUnavailable, a Transient error, not a raw redis-py error."""
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))  # fails at once
    storage.put(*DOC, b"x")
    with pytest.raises(CacheUnavailable):
        copy(Cache(client), storage)
    assert storage.opens[DOC] == 0


# -- names from outside in the logs -------------------------------------------------------------------------

# Names a database row or a storage listing may hold, each able to forge or hide a log line if printed as is.
HOSTILE = [
    "a\n[2026-01-01 00:00:00,000: WARNING/MainProcess] forged.pdf",
    "a\r\x1b[2Kcover.pdf",
    "a\u2028b\x85c\x0bd.pdf",
    "a\u202egpj.exe",
]


def _unprintable(text: str) -> list[str]:
    """The characters of `text` a log line must not carry raw: controls, separators, format characters (bidi)."""
    return [c for c in text if not c.isprintable() and c != " "]


@pytest.mark.parametrize("location", HOSTILE, ids=["newline", "carriage-return-and-escape", "separators", "bidi"])
def test_a_name_with_control_characters_is_logged_escaped_whether_cached_or_missing(
    cache: Cache, storage: MemoryStorage, caplog: pytest.LogCaptureFixture, location: str
) -> None:
    """A location with a newline, an escape sequence or a separator shows escaped in every line the copies log."""
    # Given one such file in storage and one missing
    there, missing = FileRef("kb1", location), FileRef("kb1", "gone/" + location)
    storage.put(*there, b"bytes")
    # When both are copied
    with caplog.at_level(logging.DEBUG, logger="cachetasks"):
        outcomes = [copy(cache, storage, there).outcome, copy(cache, storage, missing).outcome]
    # Expect both outcomes logged, each on one line with the name escaped
    assert outcomes == [FileState.CACHED, SkipReason.MISSING]
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "kb1/" in m]) == 2, messages
    assert [m for m in messages if _unprintable(m)] == []


def test_a_copy_that_gave_up_on_storage_is_remembered_and_warned_about_once_per_interval(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    """After its retries, a copy is remembered for the negative TTL; many giving up make one warning, then an end."""
    # Given two copies whose storage kept failing through their retries
    other = FileRef("kb1", "other.pdf")
    for ref in (DOC, other):
        with pytest.raises(StorageUnavailable):
            copy(cache, Unavailable(), ref)
    storage = MemoryStorage({other: b"back"})
    # When both give up, then a copy succeeds
    with caplog.at_level(logging.INFO, logger="cachetasks"):
        for ref in (DOC, other):
            give_up(cache, ref, StorageUnavailable("503 Service Unavailable", ref), SETTINGS, owner=OWNER)
        cache.client.delete(skip_key(other.key))
        assert copy(cache, storage, other) == Copy(FileState.CACHED, 4)
    # Expect each remembered and its claim released
    assert cache.client.get(skip_key(DOC.key)) == b"unavailable"
    assert 59 <= cache.client.ttl(skip_key(DOC.key)) <= 60
    assert not cache.client.exists(inflight_key(DOC.key), inflight_key(other.key))
    # and one warning naming the first file and the reason, then one line when copies succeed again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"copies gave up after their retries, e.g.: {DOC.key}: StorageUnavailable: {DOC.key}: 503 Service Unavailable "
        "(not tried again for 60s)"
    ]
    assert [r.getMessage() for r in caplog.records if "again" in r.getMessage() and r.levelno == logging.INFO] == [
        "copies succeed again (1 more failures since the last report)"
    ]


# -- the worker's memory ----------------------------------------------------------------------------------------

MiB = 1024 * 1024


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_copy_holds_one_chunk_at_a_time_whatever_the_file_size(
    cache: Cache, backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40 MiB file in 4 MiB chunks: the copy's Python allocations peak under two chunks, not four."""
    # Given a 40 MiB file in a local folder, or on the S3 server
    chunk, data = 4 * MiB, bytes(range(256)) * (40 * MiB // 256)
    storage: Storage
    if backend == "local":
        storage = LocalStorage(tmp_path)
    else:
        request.getfixturevalue("s3")
        for name, value in AWS.items():  # boto3 reads its credentials from the environment
            monkeypatch.setenv(name, value)
        storage = storage_for(request.getfixturevalue("s3_env"))
    storage.put(*DOC, data)
    del data
    # When it is copied, with allocations traced
    tracemalloc.start()
    try:
        done = copy(cache, storage, chunk_bytes=chunk, max_file_bytes=64 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Expect it cached, having held at most about one chunk (plus the client's own buffers) at a time
    assert done == Copy(FileState.CACHED, 40 * MiB)
    assert peak < 1.5 * chunk, f"the copy's allocations peaked at {peak / MiB:.1f} MiB"
