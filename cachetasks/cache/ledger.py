"""What the cache holds: the keys this service wrote, their sizes, and room left in Redis.

Every copy reserves its size before writing and commits (or cancels) after, so the total
in HELD is right even with many workers, and CACHETASKS_MAX_CACHE_BYTES is never
overshot. Entries whose key is gone from Redis (expired, evicted, deleted by someone else)
are dropped by `prune`, which each collect runs: the ledger follows what is really in Redis.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from .keys import HELD, INFLIGHT, OWNED, SIZES

FILL_RATIO = 0.9  # leave Redis this much of its maxmemory, for the broker and its own overhead
ASSUMED_AT_MOST = 0.05  # the share of maxmemory a file of unknown size is assumed to need, at most
RESERVATION_MS = 60_000  # how long a reservation outlives a vanished copy before prune reclaims it

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: SIZES, HELD, OWNED. ARGV: key, size, limit (0: none), reservation ms.
# OWNED scores a written key by its expiry, and a reservation by minus its deadline: a
# reservation is never mistaken for a key Redis evicted, so a copy that died is retried.
_RESERVE = (
    _NOW
    + """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or 0)
local held = tonumber(redis.call('GET', KEYS[2]) or 0) - old
if tonumber(ARGV[3]) > 0 and held + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - old)
redis.call('ZADD', KEYS[3], -(now + tonumber(ARGV[4])), ARGV[1])
return 1
"""
)

# Shared by the scripts below: drop key k from the ledger (KEYS: SIZES, HELD, OWNED).
_DROP = """
local function drop(k)
  local old = redis.call('HGET', KEYS[1], k)
  if old then
    redis.call('HDEL', KEYS[1], k)
    redis.call('DECRBY', KEYS[2], old)
  end
  redis.call('ZREM', KEYS[3], k)
end
"""

# KEYS: SIZES, HELD, OWNED. ARGV: keys to forget; with ARGV[1] == 'delete' also delete them.
_FORGET = (
    _DROP
    + """
local n = 0
local delete = ARGV[1] == 'delete'
for i = 2, #ARGV do
  local k = ARGV[i]
  if redis.call('ZSCORE', KEYS[3], k) then
    drop(k)
    if delete then n = n + redis.call('DEL', k) else n = n + 1 end
  end
end
return n
"""
)

# KEYS: SIZES, HELD, OWNED. ARGV: batch size, in-flight prefix, reservation ms.
_PRUNE = (
    _NOW
    + _DROP
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[3], -now, now, 'LIMIT', 0, tonumber(ARGV[1]))
local dropped = 0
for _, k in ipairs(due) do
  local left = redis.call('PTTL', k)
  if left > 0 then
    redis.call('ZADD', KEYS[3], now + left, k)
  elseif left == -2 and redis.call('EXISTS', ARGV[2] .. k) == 1 then
    redis.call('ZADD', KEYS[3], -(now + tonumber(ARGV[3])), k)
  else
    drop(k)
    dropped = dropped + 1
  end
end
return dropped
"""
)


# KEYS: SIZES, HELD, OWNED, in-flight key. ARGV: key, bytes stored (-1: none), ttl ms, owner.
# Accounts a written key (committing its reservation, if any) or drops a reservation that
# wrote nothing, then releases the owner's claim: the end of every copy, in one round trip.
_SETTLE = (
    _NOW
    + _DROP
    + """
local key, size = ARGV[1], tonumber(ARGV[2])
if size >= 0 then
  local old = tonumber(redis.call('HGET', KEYS[1], key) or 0)
  redis.call('HSET', KEYS[1], key, size)
  redis.call('INCRBY', KEYS[2], size - old)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), key)
elseif tonumber(redis.call('ZSCORE', KEYS[3], key) or 0) < 0 then
  drop(key)
end
if redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
"""
)


class Ledger:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._forget = client.register_script(_FORGET)
        self._prune = client.register_script(_PRUNE)

    def reserve(self, key: str, size: int, *, limit: int | None) -> bool:
        """Count `size` bytes for `key` unless that would pass `limit`; False if it would."""
        return bool(self._reserve(keys=[SIZES, HELD, OWNED], args=[key, size, limit or 0, RESERVATION_MS]))

    def settle(self, key: str, stored: int | None, *, ttl: int, inflight: str, owner: str) -> None:
        """Account `stored` bytes written at `key` (None: nothing written) and release `owner`'s claim."""
        size = -1 if stored is None else stored
        self._settle(keys=[SIZES, HELD, OWNED, inflight], args=[key, size, ttl * 1000, owner])

    def cancel(self, key: str) -> None:
        """Drop a reservation whose copy did not write the key."""
        self._forget(keys=[SIZES, HELD, OWNED], args=["keep", key])

    def evict(self, keys: Iterable[str]) -> int:
        """Delete the given keys if, and only if, this service wrote them; return how many went."""
        deleted = 0
        it = iter(keys)
        while batch := list(itertools.islice(it, 1000)):
            deleted += int(self._forget(keys=[SIZES, HELD, OWNED], args=["delete", *batch]))
        return deleted

    def prune(self, batch: int = 2000) -> int:
        """Forget keys whose expiry passed and that are gone; return how many were dropped."""
        return int(self._prune(keys=[SIZES, HELD, OWNED], args=[batch, INFLIGHT, RESERVATION_MS]))

    def owned(self) -> set[str]:
        return {k.decode() if isinstance(k, bytes) else str(k) for k in self.client.zrange(OWNED, 0, -1)}

    def held_bytes(self) -> int:
        return int(self.client.get(HELD) or 0)


class MemoryGauge:
    """Is Redis near its maxmemory? One INFO per `max_age` seconds per process, not one per copy.

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
