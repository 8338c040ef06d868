"""Outage reports: at most one warning per interval, counting the rest, and one line on recovery."""

from __future__ import annotations

import logging

import pytest
import redis

from cachetasks.outage import OutageLog
from tests.support.clocks import Clock

LOG = logging.getLogger("cachetasks.test-outage")
REFUSED = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def _outage_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)


def test_an_outage_is_reported_once_per_interval_with_the_count_of_the_rest(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors within 60 s of a report are counted, and the next report, a minute on, says how many."""
    # Given
    outages = OutageLog(LOG, "cache lookup failed, reading from storage", "cache reachable again", 60.0, clock=clock)
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
    outages = OutageLog(LOG, "cache lookup failed, reading from storage", "cache reachable again", 60.0, clock=clock)
    for _ in range(3):
        outages.failed(REFUSED)
    # When
    for _ in range(3):
        outages.succeeded()
    # Expect
    assert [(r.levelname, r.getMessage()) for r in caplog.records][1:] == [
        ("INFO", "cache reachable again (2 more failures since the last report)")
    ]


def test_successes_alone_log_nothing(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """A healthy cache is silent."""
    # Given / When
    outages = OutageLog(LOG, "cache lookup failed, reading from storage", "cache reachable again", 60.0, clock=clock)
    for _ in range(3):
        outages.succeeded()
    # Expect
    assert caplog.records == []


def test_an_error_naming_a_file_with_control_characters_is_reported_escaped(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """An escape sequence or a line separator in an error or a detail (a file's name) shows escaped, on one line."""
    # Given
    outages = OutageLog(LOG, "storage failed", "storage answers again", 60.0, clock=clock)
    # When
    outages.failed(OSError("kb1/a\x1b[2K[fake] all good\u202e.pdf: I/O error"))
    outages.failed("kb1/b\u2028c.pdf: refused")
    clock.now += 61
    outages.failed("kb1/b\u2028c.pdf: refused")
    # Expect
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "storage failed: OSError: kb1/a\\x1b[2K[fake] all good\\u202e.pdf: I/O error",
        "storage failed: kb1/b\\u2028c.pdf: refused (1 more since the last report)",
    ]
