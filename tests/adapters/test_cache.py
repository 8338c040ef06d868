"""The Redis side against a real redis-server: claims, their expiry and ownership, atomic stores."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cachetasks.cache import Cache, FileState, SkipReason, store
from cachetasks.cache.keys import COLLECT_LOCK, TMP, inflight_key, skip_key
from cachetasks.cache.lock import exclusive
from cachetasks.errors import CacheWriteLost
from cachetasks.ref import FileRef
from testbed.servers import RedisServer, wait_until

TTL, INFLIGHT_TTL = 720, 30
MISSING, CACHED, SKIPPED, BUSY = (FileRef("kb1", f"{name}.pdf") for name in ("missing", "cached", "skipped", "busy"))


@pytest.fixture
def cache(cache: Cache) -> Cache:
    """The shared fixture's cache, on an emptied database of our private redis-server."""
    cache.client.flushdb()
    return cache


def scan(cache: Cache, *refs: FileRef, inflight_ttl: int = INFLIGHT_TTL) -> tuple[list[FileRef], dict[FileState, int]]:
    result = cache.scan(refs, inflight_ttl=inflight_ttl, ttl=TTL)
    return result.claimed, {state: n for state, n in result.counts.items() if n}


def tmp_keys(cache: Cache) -> list[bytes]:
    return list(cache.client.scan_iter(match=TMP + "*"))


def stream(*chunks: bytes, pause: float = 0.0, fail_after: int | None = None) -> Iterator[bytes]:
    for i, chunk in enumerate(chunks):
        if i == fail_after:
            raise RuntimeError("storage went away")
        if i and pause:
            time.sleep(pause)
        yield chunk
    if fail_after == len(chunks):
        raise RuntimeError("storage went away")


# -- scan (the collect side) -----------------------------------------------------------------------


def test_scan_classifies_each_file_and_claims_only_the_missing_ones(cache: Cache) -> None:
    """Missing files are claimed ('queued', with the in-flight TTL); cached, skipped and in-flight ones are not."""
    # Given
    cache.client.set(CACHED.key, b"data", ex=TTL)
    cache.remember_skip(SKIPPED, SkipReason.MISSING, 60)
    cache.client.set(inflight_key(BUSY.key), "task-1", px=INFLIGHT_TTL * 1000)
    # When
    claimed, counts = scan(cache, MISSING, CACHED, SKIPPED, BUSY)
    # Expect
    assert claimed == [MISSING]
    assert counts == {FileState.CLAIMED: 1, FileState.CACHED: 1, FileState.SKIPPED: 1, FileState.IN_FLIGHT: 1}
    assert cache.client.get(inflight_key(MISSING.key)) == b"queued"
    assert INFLIGHT_TTL * 1000 - 2000 < cache.client.pttl(inflight_key(MISSING.key)) <= INFLIGHT_TTL * 1000
    assert cache.client.get(inflight_key(BUSY.key)) == b"task-1"
    assert not cache.client.exists(inflight_key(CACHED.key), inflight_key(SKIPPED.key))


def test_a_second_scan_sees_the_claim_as_in_flight(cache: Cache) -> None:
    """A file claimed by one collect is not enqueued again by the next."""
    # Given
    scan(cache, MISSING)
    # When
    claimed, counts = scan(cache, MISSING)
    # Expect
    assert claimed == []
    assert counts == {FileState.IN_FLIGHT: 1}


def test_a_claim_expires_after_the_inflight_ttl(cache: Cache) -> None:
    """A claim nobody takes up lapses after inflight_ttl, and the next scan claims the file again."""
    # Given
    assert scan(cache, MISSING, inflight_ttl=1)[0] == [MISSING]
    started = time.monotonic()
    # When
    wait_until(lambda: scan(cache, MISSING, inflight_ttl=1)[0] == [MISSING], timeout=5, what="the claim to lapse")
    # Expect
    assert time.monotonic() - started > 0.5


@pytest.mark.parametrize(("left", "renewed"), [(300, True), (500, False)], ids=["below half", "above half"])
def test_scan_renews_a_cached_files_ttl_only_when_it_fell_below_half(cache: Cache, left: int, renewed: bool) -> None:
    """An ongoing file stays hot: its TTL goes back to the full TTL once under half, and is untouched before."""
    # Given
    cache.client.set(CACHED.key, b"data", ex=left)
    # When
    scan(cache, CACHED)
    # Expect
    assert abs(cache.client.ttl(CACHED.key) - (TTL if renewed else left)) <= 1
    assert cache.client.get(CACHED.key) == b"data"


def test_scan_handles_more_files_than_one_round_trip_takes(cache: Cache) -> None:
    """Thousands of ongoing files are classified in chunks, none lost or doubled."""
    # Given
    refs = [FileRef("kb1", f"doc-{i}.pdf") for i in range(12_001)]
    cache.client.set(refs[-1].key, b"data", ex=TTL)
    # When
    claimed, counts = scan(cache, *refs)
    # Expect
    assert claimed == refs[:-1]
    assert counts == {FileState.CLAIMED: 12_000, FileState.CACHED: 1}


def test_unclaim_releases_queued_claims_only(cache: Cache) -> None:
    """Claims whose copy could not be enqueued are released; a claim a task already took is left alone."""
    # Given
    taken = FileRef("kb1", "taken.pdf")
    scan(cache, MISSING, taken)
    assert cache.begin(taken, "task-1", inflight_ttl=INFLIGHT_TTL).state is FileState.CLAIMED
    # When
    cache.unclaim([MISSING, taken])
    # Expect
    assert not cache.client.exists(inflight_key(MISSING.key))
    assert cache.client.get(inflight_key(taken.key)) == b"task-1"
    assert scan(cache, MISSING)[0] == [MISSING]


# -- begin, hold, release (the copy side) ----------------------------------------------------------

BEGIN: dict[str, tuple[str | None, bool, bool, str, bytes | None]] = {
    # mark before, cached, skip remembered -> answer, mark after
    "queued claim": ("queued", False, False, "claimed", b"me"),
    "own claim (a retry)": ("me", False, False, "claimed", b"me"),
    "no claim (run by hand)": (None, False, False, "claimed", b"me"),
    "another task's claim": ("other", False, False, "in-flight", b"other"),
    "cached, queued claim": ("queued", True, False, "cached", None),
    "cached, own claim": ("me", True, False, "cached", None),
    "cached, another task's claim": ("other", True, False, "cached", b"other"),
    "skip remembered, queued claim": ("queued", False, True, "skipped", None),
}


@pytest.mark.parametrize(("mark", "cached", "skipped", "answer", "after"), BEGIN.values(), ids=BEGIN.keys())
def test_begin_takes_the_claim_or_says_why_not(
    cache: Cache, mark: str | None, cached: bool, skipped: bool, answer: str, after: bytes | None
) -> None:
    """'claimed' for a queued or own claim, 'in-flight' for another's, 'cached'/'skipped' dropping a claim of ours."""
    # Given
    if mark:
        cache.client.set(inflight_key(MISSING.key), mark, px=10_000)
    if cached:
        cache.client.set(MISSING.key, b"data", ex=TTL)
    if skipped:
        cache.remember_skip(MISSING, SkipReason.MISSING, 60)
    # When
    got = cache.begin(MISSING, "me", inflight_ttl=INFLIGHT_TTL)
    # Expect
    assert (got.state, got.needs) == (answer, 0)
    assert cache.client.get(inflight_key(MISSING.key)) == after
    if answer == "claimed":
        assert cache.client.pttl(inflight_key(MISSING.key)) > 10_000, "the claim now lasts inflight_ttl"


def test_a_file_skipped_for_lack_of_room_tells_its_size_to_the_next_claim(cache: Cache) -> None:
    """The size remembered with a skip outlives the skip, and `begin` returns it with the claim."""
    # Given a file skipped for 1 s for lack of room, needing 256 KiB, remembered for a minute
    cache.remember_skip(MISSING, SkipReason.REDIS_FULL, 1, needs=256 * 1024, needs_ttl=60)
    assert cache.begin(MISSING, "me", inflight_ttl=INFLIGHT_TTL)[:2] == (FileState.SKIPPED, 0)
    # When the skip has passed
    cache.client.delete(skip_key(MISSING.key))
    # Expect the claim, with the size it needs
    assert cache.begin(MISSING, "me", inflight_ttl=INFLIGHT_TTL)[:2] == (FileState.CLAIMED, 256 * 1024)


def test_release_deletes_only_its_own_claim(cache: Cache) -> None:
    """A task cannot release a claim that another task holds."""
    # Given
    cache.client.set(inflight_key(MISSING.key), "other", px=10_000)
    # When
    cache.release(MISSING, "me")
    # Expect
    assert cache.client.get(inflight_key(MISSING.key)) == b"other"
    cache.release(MISSING, "other")
    assert not cache.client.exists(inflight_key(MISSING.key))


def test_hold_extends_only_its_own_claim(cache: Cache) -> None:
    """hold() lengthens the owner's claim and answers False, changing nothing, for anyone else."""
    # Given
    cache.client.set(inflight_key(MISSING.key), "me", px=5_000)
    # When / Expect
    assert cache.hold(MISSING, "other", 60) is False
    assert cache.client.pttl(inflight_key(MISSING.key)) <= 5_000
    assert cache.hold(MISSING, "me", 60) is True
    assert 58_000 < cache.client.pttl(inflight_key(MISSING.key)) <= 60_000
    assert cache.hold(CACHED, "me", 60) is False
    assert not cache.client.exists(inflight_key(CACHED.key)), "holding nothing creates nothing"


# -- store -----------------------------------------------------------------------------------------


def store_(cache: Cache, chunks: Iterator[bytes], *, tmp_ttl: int = INFLIGHT_TTL, exact: int = 0) -> int | None:
    """Store a stream of unknown size (0: the first chunk may be all of it), or of `exact` bytes, as announced."""
    return cache.store(MISSING.key, chunks, size=exact, ttl=TTL, tmp_ttl=tmp_ttl, exact=bool(exact))


# Streams of unknown size are appended to their temporary key; those of an exact size are written in place.
HOW = pytest.mark.parametrize("exact", [False, True], ids=["appended", "in place"])


def announced(exact: bool, *chunks: bytes) -> int:
    return sum(map(len, chunks)) if exact else 0


def test_a_single_chunk_is_stored_with_the_ttl(cache: Cache) -> None:
    """A small file is one value with the full TTL, and store returns its size."""
    # When
    size = store_(cache, stream(b"small \x00 file"))
    # Expect
    assert size == 12
    assert cache.client.get(MISSING.key) == b"small \x00 file"
    assert TTL - 1 <= cache.client.ttl(MISSING.key) <= TTL


def test_an_empty_stream_stores_an_empty_value(cache: Cache) -> None:
    """A 0-byte file is cached as an empty value with the TTL, so it is not fetched again."""
    # When
    size = store_(cache, stream())
    # Expect
    assert size == 0
    assert cache.client.get(MISSING.key) == b""
    assert TTL - 1 <= cache.client.ttl(MISSING.key) <= TTL


@HOW
def test_a_multi_chunk_stream_is_stored_exactly_with_no_leftovers(cache: Cache, exact: bool) -> None:
    """A long file arrives byte for byte, with the TTL, and no temporary key stays behind."""
    # Given
    chunks = [os.urandom(4096) for _ in range(9)] + [b"\x00\xff end"]
    # When
    size = store_(cache, iter(chunks), exact=announced(exact, *chunks))
    # Expect
    assert size == sum(map(len, chunks))
    assert cache.client.get(MISSING.key) == b"".join(chunks)
    assert TTL - 1 <= cache.client.ttl(MISSING.key) <= TTL
    assert tmp_keys(cache) == []


@HOW
@pytest.mark.parametrize("chunks", [[b"new"], [b"new", b" value"]], ids=["single chunk", "multi chunk"])
def test_store_never_overwrites_a_value_already_there(cache: Cache, chunks: list[bytes], exact: bool) -> None:
    """A value written meanwhile by someone else is kept, with its TTL; store answers None."""
    # Given
    cache.client.set(MISSING.key, b"old", ex=100)
    # When
    size = store_(cache, iter(chunks), exact=announced(exact, *chunks))
    # Expect
    assert size is None
    assert cache.client.get(MISSING.key) == b"old"
    assert cache.client.ttl(MISSING.key) <= 100
    assert tmp_keys(cache) == []


@HOW
@pytest.mark.parametrize("fail_after", [0, 1, 2, 5], ids=lambda n: f"after {n} chunks")
def test_a_failing_stream_leaves_no_key_and_no_temporary_key(cache: Cache, fail_after: int, exact: bool) -> None:
    """Storage failing mid-file propagates its error and leaves Redis as it was."""
    # Given
    chunks = [letter * 100 for letter in (b"a", b"b", b"c", b"d", b"e")]
    # When
    with pytest.raises(RuntimeError, match="storage went away"):
        store_(cache, stream(*chunks, fail_after=fail_after), exact=announced(exact, *chunks))
    # Expect
    assert not cache.client.exists(MISSING.key)
    assert tmp_keys(cache) == []


@HOW
def test_a_reader_never_sees_part_of_a_value_being_stored(cache: Cache, redis_server: RedisServer, exact: bool) -> None:
    """While a slow multi-chunk store runs, another client sees no value, then the whole value."""
    # Given
    data = [bytes([i]) * 1000 for i in range(25)]
    whole = b"".join(data)
    seen: list[object] = []
    done = threading.Event()

    def poll() -> None:
        reader = redis_server.client(1)
        try:
            while not done.is_set():
                seen.append(reader.get(MISSING.key))
            seen.append(reader.get(MISSING.key))
        finally:
            reader.close()

    thread = threading.Thread(target=poll)
    thread.start()
    # When
    try:
        store_(cache, stream(*data, pause=0.01), exact=announced(exact, *data))
    finally:
        done.set()
        thread.join()
    # Expect
    assert set(seen) == {None, whole}
    assert seen[-1] == whole


def watched(cache: Cache, chunks: list[bytes], observed: list[tuple[int, int, bool]], *, after: int) -> Iterator[bytes]:
    """The chunks, noting before each one from the `after`th on the temporary key's TTL and length, and
    whether the cache key exists yet."""
    for i, chunk in enumerate(chunks):
        if i >= after:
            (tmp,) = tmp_keys(cache)
            observed.append((cache.client.ttl(tmp), cache.client.strlen(tmp), bool(cache.client.exists(MISSING.key))))
        yield chunk


def test_the_temporary_key_expires_if_the_copy_is_abandoned(cache: Cache) -> None:
    """While streaming, the partial value sits under the temporary prefix with tmp_ttl, never at the key."""
    # Given
    observed: list[tuple[int, int, bool]] = []
    # When
    store_(cache, watched(cache, [b"x" * 10] * 4, observed, after=2), tmp_ttl=7)
    # Expect
    assert observed == [(7, 20, False), (7, 30, False)]


def test_a_stream_of_exact_size_is_written_into_a_value_allocated_whole_at_the_start(cache: Cache) -> None:
    """When storage announces the exact size, the temporary key holds all of it, with its TTL, from the first chunk
    on, and the chunks are written in place: Redis never grows the value (which copies it) as it would by appending."""
    # Given
    observed: list[tuple[int, int, bool]] = []
    chunks = [bytes([65 + i]) * 10 for i in range(4)]
    # When
    size = store_(cache, watched(cache, chunks, observed, after=1), tmp_ttl=7, exact=40)
    # Expect
    assert observed == [(7, 40, False)] * 3
    assert size == 40
    assert cache.client.get(MISSING.key) == b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 10
    assert tmp_keys(cache) == []


@pytest.mark.parametrize("before", [1, 3], ids=["before a middle chunk", "before the last chunk"])
def test_a_value_written_in_place_that_vanishes_mid_stream_is_never_published(cache: Cache, before: int) -> None:
    """A temporary key evicted or expired between two chunks is re-created by the next write with zeros where the
    earlier chunks were; whatever chunk comes next, the copy fails instead of publishing it."""
    # Given
    chunks = [bytes([65 + i]) * 10 for i in range(4)]

    def vanishing() -> Iterator[bytes]:
        for i, chunk in enumerate(chunks):
            if i == before:
                cache.client.delete(*tmp_keys(cache))
            yield chunk

    # When
    with pytest.raises(CacheWriteLost):
        store_(cache, vanishing(), exact=40)
    # Expect
    assert not cache.client.exists(MISSING.key)
    assert tmp_keys(cache) == []


def test_a_stream_shorter_than_its_exact_size_is_never_published(cache: Cache) -> None:
    """A value allocated whole but not filled (storage sent less than it announced) is not cached with a zero tail."""
    # When
    with pytest.raises(CacheWriteLost):
        store_(cache, stream(b"a" * 10, b"b" * 10), exact=30)
    # Expect
    assert not cache.client.exists(MISSING.key)
    assert tmp_keys(cache) == []


@HOW
def test_a_long_store_renews_its_temporary_key_as_it_goes(
    cache: Cache, monkeypatch: pytest.MonkeyPatch, exact: bool
) -> None:
    """A value that streams in for longer than its temporary key's TTL is kept alive to the end and published."""
    # Given a 1 s temporary key renewed every 0.1 s, and a stream of 2 s
    monkeypatch.setattr(store, "TMP_RENEW_EVERY", 0.1)
    # When
    size = store_(cache, stream(*[b"x"] * 10, pause=0.2), tmp_ttl=1, exact=10 if exact else 0)
    # Expect
    assert size == 10
    assert cache.client.get(MISSING.key) == b"x" * 10


@HOW
def test_a_temporary_key_that_expires_mid_stream_never_publishes_a_truncated_value(cache: Cache, exact: bool) -> None:
    """Storage stalling longer than tmp_ttl between chunks fails the copy instead of caching the file's tail."""
    # Given a stream that stalls for longer than the temporary key lives
    chunks = [b"head-", b"middle-", b"tail"]

    def stalling() -> Iterator[bytes]:
        yield from chunks[:2]
        time.sleep(1.2)
        yield chunks[2]

    # When
    try:
        size = store_(cache, stalling(), tmp_ttl=1, exact=announced(exact, *chunks))
    except CacheWriteLost:
        size = None
    # Expect
    assert cache.client.get(MISSING.key) in (None, b"".join(chunks))
    assert size in (None, len(b"".join(chunks)))


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A private redis-server capped like RAGFlow's: a small maxmemory, evicting keys with a TTL first."""
    server = RedisServer(tmp_path / "small-redis", args=("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"))
    server.start()
    client = server.client(1)
    yield client
    client.close()
    server.stop()


@HOW
def test_a_temporary_key_evicted_mid_stream_never_publishes_a_truncated_value(
    small_redis: redis.Redis, exact: bool
) -> None:
    """When a full Redis evicts the partial value mid-copy, the copy fails or caches the whole file, never a part."""
    # Given
    cache = Cache(small_redis)
    chunks = [bytes([i]) * (256 * 1024) for i in range(8)]  # 2 MiB: Redis evicts the growing temporary key
    # When
    try:
        size = cache.store(
            MISSING.key, iter(chunks), size=len(chunks) * len(chunks[0]), ttl=TTL, tmp_ttl=INFLIGHT_TTL, exact=exact
        )
    except (redis.RedisError, CacheWriteLost):
        size = None
    # Expect
    if not small_redis.info("stats")["evicted_keys"]:
        pytest.skip("this Redis evicted nothing: the scenario did not happen")
    value = small_redis.get(MISSING.key)
    whole_or_nothing = value in (None, b"".join(chunks))
    assert whole_or_nothing, f"cached {len(value or b'')} of {len(b''.join(chunks))} bytes"
    assert size == (None if value is None else len(value))


# -- the collect lock -------------------------------------------------------------------------------


def test_the_collect_lock_is_renewed_for_as_long_as_the_collect_runs_and_released_after(cache: Cache) -> None:
    """A 1 s lock held for 2.5 s stays taken throughout, keeps a second collect out, and is gone afterwards."""
    # Given / When a collect holds a 1 s lock for 2.5 s
    with exclusive(cache.client, cache.scripts, seconds=1) as ours:
        assert ours
        for _ in range(5):
            time.sleep(0.5)
            # Expect the lock still there, and a second collect kept out
            assert cache.client.pttl(COLLECT_LOCK) > 0
            with exclusive(cache.client, cache.scripts, seconds=1) as second:
                assert not second
    # Expect it released
    assert not cache.client.exists(COLLECT_LOCK)


def test_a_lock_taken_over_after_it_lapsed_is_neither_renewed_nor_released_by_its_old_holder(cache: Cache) -> None:
    """When another collect holds the lock now, the first one's renewal and release leave it alone."""
    # Given a collect whose lock lapsed and was taken by another
    with exclusive(cache.client, cache.scripts, seconds=1) as ours:
        assert ours
        cache.client.set(COLLECT_LOCK, "another", px=60_000)
        time.sleep(0.5)
    # Expect the other's lock untouched
    assert cache.client.get(COLLECT_LOCK) == b"another"
    assert cache.client.pttl(COLLECT_LOCK) > 59_000
