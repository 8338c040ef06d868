"""The reader's pure parts: outage reports at most once per interval, thread-safe counters, checked arguments."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from cachetasks.reader import OutageLog, Reader, ReaderStats
from cachetasks.storage import LocalStorage

REFUSED = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def _reader_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cachetasks.reader")


def test_an_outage_is_reported_once_per_interval_with_the_count_of_the_rest(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors within 60 s of a report are counted, and the next report, a minute on, says how many."""
    # Given
    outages = OutageLog(60.0, clock=clock)
    # When errors come every second for a minute and a half
    for _ in range(90):
        outages.failed(REFUSED)
        clock.now += 1
    # Expect two warnings, the second counting the 59 in between
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert caplog.records[0].getMessage() == (
        "cache lookup failed, reading from storage: ConnectionError: Error 111 connecting to 127.0.0.1:6390. "
        "Connection refused."
    )
    assert caplog.records[1].getMessage().endswith("(59 more since the last report)")


def test_recovery_from_a_reported_outage_is_reported_once(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """The first success after a reported outage logs one INFO line; later successes log nothing."""
    # Given a reported outage of three errors
    outages = OutageLog(60.0, clock=clock)
    for _ in range(3):
        outages.failed(REFUSED)
    # When
    for _ in range(3):
        outages.succeeded()
    # Expect
    assert [(r.levelname, r.getMessage()) for r in caplog.records][1:] == [
        ("INFO", "cache reachable again (2 more failed lookups since the last report)")
    ]


def test_successes_alone_log_nothing(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """A healthy cache is silent."""
    # Given / When
    outages = OutageLog(60.0, clock=clock)
    for _ in range(3):
        outages.succeeded()
    # Expect
    assert caplog.records == []


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
