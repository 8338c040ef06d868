"""The ledger: which keys this service wrote, their sizes, and the bytes the cache holds.

Every copy under a byte budget reserves its size before writing and commits (or cancels) it
after, so HELD is right even with many workers and CACHETASKS_MAX_CACHE_BYTES is never
overshot. Entries whose key is gone from Redis (expired, evicted, deleted by someone else)
are dropped by `prune`, which each collect runs: the ledger follows what is really in Redis.
"""

from __future__ import annotations

import redis

from ..batches import batched
from ..ref import FileRef
from .keys import HELD, INFLIGHT, OWNED, SIZES, inflight_key
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
        self.scripts.forget(keys=[SIZES, HELD, OWNED], args=["keep", key])

    def settle(self, ref: FileRef, owner: str, *, stored: int | None, ttl: int) -> None:
        """After a copy: account the `stored` bytes (None: nothing written, drop the reservation); release the claim."""
        size = -1 if stored is None else stored
        keys = [SIZES, HELD, OWNED, inflight_key(ref.key)]
        self.scripts.settle(keys=keys, args=[ref.key, size, ttl * 1000, owner])

    def evict(self, keys: set[str]) -> int:
        """Delete the given keys if, and only if, this service wrote them; return how many went."""
        return sum(
            int(self.scripts.forget(keys=[SIZES, HELD, OWNED], args=["delete", *batch]))
            for batch in batched(sorted(keys), 1000)
        )

    def prune(self, batch: int = 2000) -> int:
        """Forget keys whose expiry passed and that are gone; return how many were dropped."""
        return int(self.scripts.prune(keys=[SIZES, HELD, OWNED], args=[batch, INFLIGHT, RESERVATION_MS]))

    def owned(self) -> set[str]:
        """The keys this service wrote and has not seen go."""
        return {k.decode() if isinstance(k, bytes) else str(k) for k in self.client.zrange(OWNED, 0, -1)}

    def held_bytes(self) -> int:
        return int(self.client.get(HELD) or 0)
