"""The ledger: which keys this service wrote, what their values were copied from, and their bytes.

Every copy under a byte budget reserves its size before writing and commits (or cancels) it
after, so HELD is right even with many workers and CACHETASKS_MAX_CACHE_BYTES is never
overshot. Entries whose key is gone from Redis (expired, evicted, deleted by someone else)
are dropped by `prune`, which each collect runs; `stored_bytes` counts what is really there.
"""

from __future__ import annotations

import redis

from ..batches import batched
from ..ref import FileRef
from .claims import Source
from .keys import EVICTED, HELD, INFLIGHT, OWNED, SIZES, SOURCES, WANTED, inflight_key
from .scripts import Scripts

RESERVATION_MS = 60_000  # how long a reservation outlives a vanished copy before prune reclaims it


class Ledger:
    """The accounting operations of `Cache`."""

    client: redis.Redis
    scripts: Scripts

    def reserve(self, key: str, size: int, *, limit: int | None) -> bool:
        """Count `size` bytes for `key` unless that would pass `limit`; False if it would."""
        return bool(self.scripts.reserve(keys=[SIZES, HELD, OWNED], args=[key, size, limit or 0, RESERVATION_MS]))

    def cancel(self, key: str) -> None:
        """Drop a reservation whose copy did not write the key."""
        self.scripts.forget(keys=[SIZES, HELD, OWNED, SOURCES], args=["keep", key])

    def settle(self, ref: FileRef, owner: str, *, stored: int | None, ttl: int, source: Source | None = None) -> None:
        """After a copy: account the `stored` bytes copied from `source` (None: nothing written, drop the
        reservation); release the claim."""
        size = -1 if stored is None else stored
        keys = [SIZES, HELD, OWNED, SOURCES, EVICTED, WANTED, inflight_key(ref.key)]
        self.scripts.settle(keys=keys, args=[ref.key, size, ttl * 1000, owner, str(source or Source("", ""))])

    def confirm(self, ref: FileRef, owner: str, *, ttl: int) -> bool:
        """Storage still holds what the value was copied from: renew it and release the claim; False if it is gone."""
        keys = [ref.key, OWNED, WANTED, inflight_key(ref.key)]
        return bool(self.scripts.confirm(keys=keys, args=[ttl * 1000, owner]))

    def evict(self, keys: set[str]) -> int:
        """Delete the given keys if, and only if, this service wrote them; return how many went."""
        return sum(
            int(self.scripts.forget(keys=[SIZES, HELD, OWNED, SOURCES], args=["delete", *batch]))
            for batch in batched(sorted(keys), 1000)
        )

    def prune(self, batch: int = 2000) -> int:
        """Forget keys whose expiry passed and that are gone; return how many were dropped."""
        keys = [SIZES, HELD, OWNED, SOURCES, EVICTED]
        return int(self.scripts.prune(keys=keys, args=[batch, INFLIGHT, RESERVATION_MS]))

    def owned(self) -> set[str]:
        """The keys this service wrote and has not seen go."""
        return {k.decode() if isinstance(k, bytes) else str(k) for k in self.client.zrange(OWNED, 0, -1)}

    def held_bytes(self) -> int:
        """The bytes the budget counts: files written and copies under way (read on every copy)."""
        return int(self.client.get(HELD) or 0)

    def stored_bytes(self) -> int:
        """The bytes of this service's files in Redis right now, whatever expired or was deleted since."""
        return int(self.scripts.held(keys=[OWNED, SIZES]))

    def source(self, ref: FileRef) -> Source | None:
        """What the cached value at `ref` was copied from, if this service wrote it."""
        text = self.client.hget(SOURCES, ref.key)
        return None if text is None else Source.parse(text.decode() if isinstance(text, bytes) else str(text))
