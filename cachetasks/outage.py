"""Report a failing dependency at most once per interval, and its recovery once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import first_line
from .printable import printable

OUTAGE_LOG_EVERY = 10.0  # seconds between reports of a dependency that stays down (the README's promise)


class OutageLog:
    """`failed(exc or detail)` warns at most once per `every` seconds, counting the failures in between;
    the first `succeeded()` after a reported outage logs one INFO line."""

    def __init__(
        self,
        logger: logging.Logger,
        failing: str,
        recovered: str,
        every: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.failing = failing
        self.recovered = recovered
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._last_report: float | None = None
        self._unreported = 0  # failures since the last report
        self._failing = False  # in an outage that was reported

    def failed(self, exc: BaseException | str) -> None:
        with self._lock:
            now = self.clock()
            if self._last_report is not None and now - self._last_report < self.every:
                self._unreported += 1
                return
            self._last_report, self._failing = now, True
            earlier, self._unreported = self._unreported, 0
        more = f" ({earlier} more since the last report)" if earlier else ""
        detail = printable(exc) if isinstance(exc, str) else describe(exc)
        self.logger.warning("%s: %s%s", self.failing, detail, more)

    def succeeded(self) -> None:
        if not self._failing:  # the common case, without the lock; a stale read only delays the report
            return
        with self._lock:
            reported, self._failing = self._failing, False
            unreported, self._unreported = self._unreported, 0
        if reported:
            self.logger.info("%s (%d more failures since the last report)", self.recovered, unreported)


def describe(exc: BaseException) -> str:
    """The error's class and first line, escaped: redis-py names host and port, never the password."""
    return f"{type(exc).__name__}: {printable(first_line(exc))}"
