"""The maxmemory gauge's arithmetic, on a stand-in for INFO memory."""

from __future__ import annotations

from typing import Any, cast

import redis

from cachetasks.cache.memory import MemoryGauge

MB = 1_000_000


class Info:
    """Answers INFO memory with fixed figures."""

    def __init__(self, used: int, maxmemory: int) -> None:
        self.used, self.maxmemory = used, maxmemory

    def info(self, section: str) -> dict[str, Any]:
        assert section == "memory"
        return {"used_memory": self.used, "maxmemory": self.maxmemory}


def gauge(used: int, maxmemory: int) -> MemoryGauge:
    return MemoryGauge(cast(redis.Redis, Info(used, maxmemory)), max_age=3600)


def test_without_maxmemory_nothing_is_ever_full() -> None:
    """maxmemory 0 (no limit): every size fits."""
    assert not gauge(10**12, 0).full(10**12)


def test_bytes_agreed_count_until_the_next_reading_unless_only_asked() -> None:
    """Two 40 MB writes do not both fit under 90% of 100 MB; asking without reserving changes nothing."""
    # Given a 100 MB Redis using 10 MB
    g = gauge(10 * MB, 100 * MB)
    # When / Expect
    assert not g.full(40 * MB, reserve=False)
    assert not g.full(40 * MB)
    assert g.full(41 * MB)


def test_a_file_of_unknown_size_is_assumed_as_large_as_the_last_refused() -> None:
    """Near the threshold, once a 256 KiB file was refused, a file of unknown size is refused without opening it."""
    # Given a 128 MB Redis with 200 KB left under its threshold
    g = gauge(int(115.0 * MB), 128 * MB)
    assert not g.full(0, reserve=False)  # nothing refused yet: unknown sizes are tried
    # When a 256 KiB file is refused
    assert g.full(256 * 1024)
    # Expect a file of unknown size to be assumed as large
    assert g.full(0, reserve=False)


def test_one_huge_file_refused_does_not_keep_small_files_out() -> None:
    """A 64 MiB file refused by a 32 MB Redis is assumed for unknown sizes only up to 5% of maxmemory."""
    # Given a 32 MB Redis using 2 MB
    g = gauge(2 * MB, 32 * MB)
    # When a 64 MiB file is refused
    assert g.full(64 * 1024 * 1024)
    # Expect a file of unknown size still tried
    assert not g.full(0, reserve=False)
