"""Is there room in Redis for a copy? Its maxmemory, what it uses, and the room promised to copies still writing.

A copy promises itself the room its file will take, in Redis, before it opens the file in
storage (an estimate while the size is unknown, then the size storage announces), so that
every worker process counts that room until the copy's claim ends, whatever INFO says
meanwhile; `room.lua` reads INFO and the promises and decides in one step, so that two
copies cannot both take the last room. Redis therefore never reaches its maxmemory through
this service's own writes, and never evicts because of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

from .keys import INFLIGHT, PROMISED
from .scripts import Scripts

MiB = 1024 * 1024
FILL_RATIO = 0.9  # leave Redis this much of its maxmemory, for the broker and its own overhead
ASSUMED_AT_MOST = 0.05  # the share of maxmemory a file of unknown size is assumed to need, at most
ASSUMED_FOR = 5.0  # seconds a refused file's size is assumed for files of unknown size
USUAL_WEIGHT = 0.2  # the weight of each new file in the moving average of sizes
NO_LIMIT_RECHECK = 5.0  # seconds between asks while Redis has no maxmemory (it can be set at run time)


def footprint(size: int, chunk: int) -> int:
    """The most Redis may hold, at its peak, for a file of `size` bytes written in chunks of `chunk`.

    The allocator rounds a value up by a quarter at most; a value appended chunk by chunk is
    grown a megabyte ahead; and the chunk being written waits in the connection's buffer.
    """
    if not size:
        return 0
    if size <= chunk:  # one SET
        return size * 5 // 4 + size
    return (size + MiB) * 5 // 4 + chunk


class MemoryGauge:
    """`room(needed, promise_for=key)`: one script call per question, answered for every process at once.

    A file of unknown size (0) is assumed to need what files of known size needed lately (a
    moving average), or, for ASSUMED_FOR seconds after a refusal, as much as the file refused,
    up to ASSUMED_AT_MOST of maxmemory. Promised before storage is opened, that room keeps a
    burst of copies from opening more files than Redis has room for: near maxmemory, files of
    the usual size are not opened only to learn that they do not fit; once refusals stop, a
    file that fits is cached.
    """

    def __init__(
        self,
        client: redis.Redis,
        scripts: Scripts,
        *,
        clock: Callable[[], float] = time.monotonic,
        assume_for: float = ASSUMED_FOR,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.clock = clock
        self.assume_for = assume_for
        self._lock = threading.Lock()
        self._max = 0  # maxmemory, as last seen
        self._no_limit_until = float("-inf")  # until then, Redis is taken to have no maxmemory
        self._refused, self._refused_at = 0, float("-inf")  # the room the last file refused needed, and when
        self._usual = 0.0  # the moving average of the room that files of known size were given

    def room(self, needed: int, *, promise_for: str | None = None) -> int | None:
        """The bytes `needed` (0: unknown, then assumed as the class says) if they fit under FILL_RATIO of
        Redis's maxmemory, counting the room promised to copies in flight; None if not. With `promise_for`
        (a cache key whose claim the caller holds), the room is promised to that copy until its claim ends."""
        now = self.clock()
        with self._lock:
            if now < self._no_limit_until:
                return needed
            assumed = needed
            if not needed and self._max:
                recent = self._refused if now - self._refused_at < self.assume_for else 0
                assumed = min(max(int(self._usual), recent), int(self._max * ASSUMED_AT_MOST))
        keys = [PROMISED] if promise_for is None or not assumed else [PROMISED, promise_for]
        fits, _, _, maxmemory = self.scripts.room(keys=keys, args=[assumed, FILL_RATIO, INFLIGHT])
        with self._lock:
            self._max = int(maxmemory)
            if not self._max:
                self._no_limit_until = now + NO_LIMIT_RECHECK
            elif not fits and needed:
                self._refused, self._refused_at = needed, now
            elif fits and needed:
                self._usual += (needed - self._usual) * (USUAL_WEIGHT if self._usual else 1)
        return assumed if fits else None
