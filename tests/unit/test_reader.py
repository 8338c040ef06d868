"""The reader's pure parts: thread-safe counters, checked arguments."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from cachetasks.reader import Reader, ReaderStats
from cachetasks.storage import LocalStorage


def test_counters_add_up_across_threads() -> None:
    """Eight threads adding to the counters at once lose no increment."""
    # Given
    stats = ReaderStats()

    def work() -> None:
        for _ in range(5000):
            stats.add(hits=1, waited=1)

    # When
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Expect
    assert stats.snapshot() == ReaderStats(hits=40000, waited=40000)


def test_a_client_that_decodes_responses_is_refused(tmp_path: Path) -> None:
    """A Redis client with decode_responses=True would garble binary files, so Reader refuses it."""
    # Given
    client = redis.Redis(decode_responses=True)
    # When / Expect
    with pytest.raises(ValueError, match="binary-safe"):
        Reader(client, LocalStorage(tmp_path))
    client.close()


@pytest.mark.parametrize("arguments", [{"wait_inflight": -1.0}, {"poll_interval": 0.0}, {"chunk_size": 0}])
def test_nonsense_waits_and_sizes_are_refused(tmp_path: Path, arguments: dict[str, Any]) -> None:
    """A negative wait, a zero poll interval or a zero chunk size raise ValueError at construction."""
    # Given
    client = redis.Redis()
    # When / Expect
    with pytest.raises(ValueError, match="must be"):
        Reader(client, LocalStorage(tmp_path), **arguments)
    client.close()
