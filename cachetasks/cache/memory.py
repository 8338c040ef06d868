"""Is Redis near its maxmemory? Asked before every copy, answered from one INFO per half second."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

FILL_RATIO = 0.9  # leave Redis this much of its maxmemory, for the broker and its own overhead
ASSUMED_AT_MOST = 0.05  # the share of maxmemory a file of unknown size is assumed to need, at most


class MemoryGauge:
    """One INFO per `max_age` seconds per process, not one per copy.

    Between readings the bytes this process agreed to write are added to the last reading,
    so a burst of copies cannot overshoot on a stale figure. A file of unknown size is
    assumed to need as much as the last one refused, up to ASSUMED_AT_MOST of maxmemory:
    once Redis is nearly full, files of the usual size are not opened in storage only to
    learn that they do not fit either, while one huge file refused does not stop small ones.
    """

    def __init__(self, client: redis.Redis, *, max_age: float = 0.5) -> None:
        self.client = client
        self.max_age = max_age
        self._lock = threading.Lock()
        self._read_at = -max_age
        self._used = self._max = self._added = 0
        self._refused = 0  # bytes of the last file refused for lack of room

    def full(self, needed: int, *, reserve: bool = True) -> bool:
        """True when writing `needed` more bytes (0: unknown) would take Redis past FILL_RATIO of its maxmemory.

        Otherwise the bytes count as written until the next reading, unless `reserve` is False.
        """
        with self._lock:
            if time.monotonic() - self._read_at >= self.max_age:
                info: dict[str, Any] = self.client.info("memory")
                self._used, self._max = int(info["used_memory"]), int(info.get("maxmemory") or 0)
                self._added, self._read_at = 0, time.monotonic()
            if not self._max:
                return False
            assumed = needed or min(self._refused, int(self._max * ASSUMED_AT_MOST))
            if self._used + self._added + assumed <= self._max * FILL_RATIO:
                self._added += needed if reserve else 0
                return False
            self._refused = needed or self._refused
            return True
