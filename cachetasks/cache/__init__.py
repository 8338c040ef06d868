"""The cache: files in Redis at `"{bucket}/{location}"`, and the protocol that keeps them right.

`Cache` offers every operation the collector, the copies and `status` need; its parts are:

- `claims`   which copy may fetch a file; what a collect or `status` finds (`states`)
- `backlog`  claims kept while their copies wait in the broker's queue
- `store`    writes: whole values with a TTL, never a part, never over another value
- `ledger`   the keys this service wrote and the bytes they hold
- `memory`   how close Redis is to its maxmemory
- `keeper`   claims kept alive while copies run
- `lock`     leases: the collect lock, the listener's
- `counters` the metrics counters
- `lua/`     the scripts behind them (`scripts` loads them); `keys` names every key
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import redis

from ..ref import FileRef
from .backlog import Backlog
from .claims import Begun, Claims, ScanResult, Source
from .keeper import ClaimKeeper, Held
from .keys import LAST_COLLECT
from .ledger import Ledger
from .lock import Lease, exclusive
from .memory import MemoryGauge, footprint
from .scripts import Scripts
from .states import FileState, SkipReason
from .store import Writes

__all__ = ["Begun", "Cache", "FileState", "Lease", "ScanResult", "SkipReason", "Source"]


class Cache(Claims, Backlog, Writes, Ledger):
    """Cache operations on one binary-safe Redis client (see `cache.client.make_redis`)."""

    def __init__(self, client: redis.Redis, *, memory: MemoryGauge | None = None) -> None:
        self.client = client
        self.scripts = Scripts(client)
        self._memory = memory or MemoryGauge(client, self.scripts)
        self._keeper: ClaimKeeper | None = None

    def room_for(self, ref: FileRef, size: int, *, chunk: int, promised: int = 0) -> int | None:
        """Promise room in Redis to the copy of `ref` (whose claim the caller holds) for a file of `size`
        bytes (0: unknown, estimated) written in chunks of `chunk`, until the claim ends: the bytes
        promised, or None when they would take Redis near its maxmemory, counting the room promised to
        other copies. Room the copy was already `promised` that covers the file is not asked for again."""
        needed = footprint(size, chunk)
        if size and needed <= promised:
            return promised
        return self._memory.room(needed, promise_for=ref.key)

    def keep(self, ref: FileRef, owner: str, ttl: int) -> contextlib.AbstractContextManager[None]:
        """Keep `owner`'s claim on `ref` alive while the block runs (one renewing thread per process)."""
        if self._keeper is None:
            self._keeper = ClaimKeeper(self._renew, ttl)
        return self._keeper.keep(ref, owner)

    def _renew(self, held: Held, seconds: int) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for ref, owner in held:
                self.hold(ref, owner, seconds, client=pipe)
            pipe.execute()

    @contextlib.contextmanager
    def collect_lock(self) -> Iterator[bool]:
        """Hold the collect lock while the block runs, however long; yields False if another collect holds it."""
        with exclusive(self.client, self.scripts) as ours:
            yield ours

    def lease(self, key: str, *, seconds: float, holder: str = "") -> Lease:
        """A lease on `key` (one of `keys`) for whoever calls `take` first; see `lock.Lease`."""
        return Lease(self.client, self.scripts, key, seconds=seconds, holder=holder)

    def collected(self) -> None:
        """Note that a collect finished now."""
        self.client.set(LAST_COLLECT, str(time.time()))

    def last_collected(self) -> float | None:
        """Unix time of the last finished collect; None if none ever ran."""
        last = self.client.get(LAST_COLLECT)
        return None if last is None else float(last)
