"""Redis's room as copies see it: maxmemory, what Redis uses, and the room promised to copies still writing.

Each test runs a redis-server of its own with a maxmemory; two `Cache` objects on two clients
stand for two worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from cachetasks.cache import Cache, FileState
from cachetasks.cache.keys import PROMISED
from cachetasks.cache.memory import ASSUMED_FOR, MemoryGauge, footprint
from cachetasks.ref import FileRef
from testbed.servers import RedisServer
from tests.support.clocks import Clock

MB = 1_000_000
MiB = 1024 * 1024


@pytest.fixture
def server(redis_server_with: Callable[..., RedisServer]) -> RedisServer:
    """A Redis of 100 MB (maxmemory 100000000) using about 1 MB."""
    return redis_server_with("--maxmemory", str(100 * MB), "--maxmemory-policy", "volatile-lru")


@pytest.fixture
def clients(server: RedisServer) -> Iterator[list[redis.Redis]]:
    """Two clients of the same server: two worker processes."""
    opened = [server.client(1), server.client(1)]
    yield opened
    for client in opened:
        client.close()


def gauge(client: redis.Redis, clock: Clock | None = None) -> MemoryGauge:
    return MemoryGauge(client, Cache(client).scripts, clock=clock or Clock())


def fill(client: redis.Redis, megabytes: int) -> None:
    """Have someone else take about `megabytes` MB of Redis's memory (in 2 MB values, each fitting alone)."""
    for i in range(megabytes // 2):
        client.set(f"someone-else:{i}", b"x" * (2 * MB))


def claimed(client: redis.Redis, name: str) -> str:
    """The cache key of a file whose claim a copy holds (`begin`), as when it asks for room."""
    ref = FileRef("kb1", name)
    assert Cache(client).begin(ref, f"copy-of-{name}", inflight_ttl=30).state is FileState.CLAIMED
    return ref.key


def test_without_maxmemory_nothing_is_ever_full(redis_server_with: Callable[..., RedisServer]) -> None:
    """maxmemory 0 (no limit): every size fits, and nothing is promised."""
    client = redis_server_with().client(1)
    assert gauge(client).room(10**12, promise_for=claimed(client, "a.pdf")) is not None
    assert not client.exists(PROMISED)


def test_room_promised_in_one_process_counts_in_another_until_the_copys_claim_ends(
    clients: list[redis.Redis],
) -> None:
    """40 MB promised by one worker and 45 MB by another: 10 MB more do not fit in 90 MB, until one copy ends."""
    # Given two workers' gauges, each with a copy that promised itself room
    first, second = gauge(clients[0]), gauge(clients[1])
    assert first.room(40 * MB, promise_for=claimed(clients[0], "a.pdf")) is not None
    assert second.room(45 * MB, promise_for=claimed(clients[1], "b.pdf")) is not None
    # When / Expect: a third copy finds no room, in either process, and asking promises nothing
    assert first.room(10 * MB) is None
    assert second.room(10 * MB, promise_for=claimed(clients[1], "c.pdf")) is None
    assert first.room(10 * MB) is None
    # When the first copy's claim ends (its file landed, or it failed)
    Cache(clients[0]).release(FileRef("kb1", "a.pdf"), "copy-of-a.pdf")
    # Expect its room free for others
    assert second.room(10 * MB) is not None


def test_room_is_judged_on_what_redis_uses_now_not_on_a_reading_of_half_a_second_ago(
    clients: list[redis.Redis],
) -> None:
    """60 MB written by someone else since the last question count at once."""
    g = gauge(clients[0])
    assert g.room(40 * MB) is not None
    fill(clients[1], 60)
    assert g.room(40 * MB) is None


def test_a_file_of_unknown_size_is_assumed_as_large_as_the_last_refused_for_a_few_seconds(
    clients: list[redis.Redis],
) -> None:
    """After a 4 MB file is refused, a file of unknown size is refused too, for ASSUMED_FOR seconds, then tried."""
    # Given a Redis with about 3 MB left under its threshold
    fill(clients[1], 82)  # in 2 MiB allocations: about 87 MB
    clock = Clock()
    g = gauge(clients[0], clock)
    assert g.room(0) is not None  # nothing refused yet: unknown sizes are tried
    # When a 4 MB file is refused
    assert g.room(4 * MB) is None
    # Expect a file of unknown size assumed as large, then, once the refusal is old, tried again
    assert g.room(0) is None
    clock.now += ASSUMED_FOR
    assert g.room(0) is not None


def test_files_of_unknown_size_are_promised_the_usual_room_so_a_burst_opens_only_what_fits(
    clients: list[redis.Redis],
) -> None:
    """Files of 4 MB lately, about 10 MB left: of ten copies of unknown size, only those that fit are promised room."""
    # Given a Redis with about 10 MB left under its threshold, and a gauge that has seen a file of 4 MB
    fill(clients[1], 76)
    g = gauge(clients[0])
    assert g.room(4 * MB, promise_for=claimed(clients[0], "known.pdf")) == 4 * MB
    Cache(clients[0]).release(FileRef("kb1", "known.pdf"), "copy-of-known.pdf")
    left = 0.9 * 100 * MB - int(clients[0].info("memory")["used_memory"])
    # When ten copies of files whose size is not known yet ask, before opening them, one after the other
    promised = [g.room(0, promise_for=claimed(clients[0], f"unknown-{i}.pdf")) for i in range(10)]
    # Expect the usual size promised to some, never more than was left, and the others refused
    given = [room for room in promised if room is not None]
    assert given and all(room == 4 * MB for room in given)
    assert len(given) < 10
    assert sum(given) <= left
    assert clients[0].hlen(PROMISED) == len(given)


def test_one_huge_file_refused_does_not_keep_small_files_out(clients: list[redis.Redis]) -> None:
    """A 200 MB file refused by a 100 MB Redis is assumed for unknown sizes only up to 5% of maxmemory."""
    g = gauge(clients[0])
    assert g.room(200 * MB) is None
    assert g.room(0) is not None


@pytest.mark.parametrize(
    ("size", "chunk", "at_least"),
    [(1000, 4 * MiB, 2000), (256 * 1024, 4 * MiB, 512 * 1024), (12 * MiB, 4 * MiB, 18 * MiB)],
    ids=["1000 B", "256 KiB", "12 MiB in 4 MiB chunks"],
)
def test_a_files_footprint_covers_what_redis_holds_for_it_while_it_is_written(
    size: int, chunk: int, at_least: int
) -> None:
    """The room asked for a file is more than its size: the request buffer, and Redis's own rounding."""
    assert at_least <= footprint(size, chunk) <= 2.5 * size
