"""The Redis side: in-flight claims, batched checks, atomic stores with a TTL.

Key names are in `keys`; the bytes the cache holds are accounted in `ledger`.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import redis

from ..errors import CacheWriteLost
from ..ref import FileRef
from .keeper import ClaimKeeper
from .keys import (
    COLLECT_LOCK,
    HELD,
    INFLIGHT,
    LAST_COLLECT,
    OWNED,
    PREFIX,
    SIZES,
    SKIP,
    TMP,
    inflight_key,
    room_key,
    skip_key,
)
from .ledger import Ledger, MemoryGauge

__all__ = [
    "COLLECT_LOCK",
    "LAST_COLLECT",
    "PREFIX",
    "SKIP",
    "TMP",
    "Begun",
    "Cache",
    "Scan",
    "inflight_key",
    "skip_key",
]

QUEUED = "queued"
SCAN_CHUNK = 5000


class Scan(enum.IntEnum):
    CLAIMED = 0  # missing and now marked in flight: enqueue a copy
    CACHED = 1
    SKIPPED = 2  # remembered as missing, too large or refused
    IN_FLIGHT = 3
    EVICTED = 4  # this service cached it and Redis dropped it before its TTL: Redis is full


# KEYS: OWNED, SIZES, HELD, then the cache key of each file.
# ARGV: in-flight ms, ttl ms, INFLIGHT prefix, SKIP prefix (the per-file marks are built
# here rather than sent: at 100k files that is 200k key names less to encode and parse).
# A cached key whose TTL fell below half is renewed: a file stays hot while it is ongoing.
# A key this service wrote that vanished before its expiry was evicted: copying it again
# before then would only evict another file, so it waits for its TTL period to end.
_CLAIM = """
local out = {}
local inflight_ms, ttl_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 4, #KEYS do
  local key = KEYS[i]
  local left = redis.call('PTTL', key)
  if left ~= -2 then
    if left >= 0 and left < ttl_ms / 2 then
      redis.call('PEXPIRE', key, ttl_ms)
      redis.call('ZADD', KEYS[1], 'XX', now + ttl_ms, key)
    end
    out[#out + 1] = 1
  elseif redis.call('EXISTS', ARGV[4] .. key) == 1 then
    out[#out + 1] = 2
  elseif tonumber(redis.call('ZSCORE', KEYS[1], key) or 0) > now then
    local size = redis.call('HGET', KEYS[2], key)
    if size then
      redis.call('HDEL', KEYS[2], key)
      redis.call('DECRBY', KEYS[3], size)
    end
    out[#out + 1] = 4
  elseif redis.call('SET', ARGV[3] .. key, 'queued', 'NX', 'PX', inflight_ms) then
    out[#out + 1] = 0
  else
    out[#out + 1] = 3
  end
end
return out
"""

# KEYS: cache key, in-flight key, skip key, room key. ARGV: owner, in-flight ms.
# Returns {state, bytes needed if known}.
_BEGIN = """
local mark = redis.call('GET', KEYS[2])
local ours = mark == 'queued' or mark == ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  if ours then redis.call('DEL', KEYS[2]) end
  return {redis.call('EXISTS', KEYS[1]) == 1 and 'cached' or 'skipped', 0}
end
if mark and not ours then return {'busy', 0} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {'go', tonumber(redis.call('GET', KEYS[4]) or 0)}
"""

# KEYS: in-flight key. ARGV: owner, ms (0 releases, >0 extends).
_HOLD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: temporary key, cache key. ARGV: ttl seconds, expected length.
# Never replaces a value already there, and never publishes a value that lost a part.
_PUBLISH = """
if redis.call('STRLEN', KEYS[1]) ~= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


class Begun(NamedTuple):
    state: str  # 'go' (the claim is ours), 'cached', 'skipped' or 'busy'
    needs: int  # bytes the file needed when it was last skipped for lack of room; 0 if unknown


@dataclass
class ScanResult:
    claimed: list[FileRef] = field(default_factory=list)
    counts: dict[Scan, int] = field(default_factory=lambda: dict.fromkeys(Scan, 0))


class Cache:
    """Cache operations on one binary-safe Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.ledger = Ledger(client)
        self.memory = MemoryGauge(client)
        self._keeper: ClaimKeeper | None = None
        self._claim = client.register_script(_CLAIM)
        self._begin = client.register_script(_BEGIN)
        self._hold = client.register_script(_HOLD)
        self._publish = client.register_script(_PUBLISH)

    # -- collect side -------------------------------------------------------------------

    def scan(self, refs: Iterable[FileRef], *, inflight_ttl: int, ttl: int) -> ScanResult:
        """Classify every ref in one round trip per chunk, claiming the missing ones."""
        result = ScanResult()
        args: list[str | int] = [inflight_ttl * 1000, ttl * 1000, INFLIGHT, SKIP]
        for chunk in _chunks(refs, SCAN_CHUNK):
            keys = [OWNED, SIZES, HELD, *(ref.key for ref in chunk)]
            for ref, code in zip(chunk, self._claim(keys=keys, args=args), strict=True):
                state = Scan(code)
                result.counts[state] += 1
                if state is Scan.CLAIMED:
                    result.claimed.append(ref)
        return result

    def unclaim(self, refs: Sequence[FileRef]) -> None:
        """Release claims whose copy could not be enqueued."""
        for chunk in _chunks(refs, SCAN_CHUNK):
            with self.client.pipeline(transaction=False) as pipe:
                for ref in chunk:
                    self._hold(keys=[inflight_key(ref.key)], args=[QUEUED, 0], client=pipe)
                pipe.execute()

    # -- copy side -------------------------------------------------------------------------

    def begin(self, ref: FileRef, owner: str, *, inflight_ttl: int) -> Begun:
        """Take the claim for `owner`: 'go', or why not ('cached', 'skipped', 'busy')."""
        keys = [ref.key, inflight_key(ref.key), skip_key(ref.key), room_key(ref.key)]
        state, needs = self._begin(keys=keys, args=[owner, inflight_ttl * 1000])
        return Begun(state.decode() if isinstance(state, bytes) else str(state), int(needs))

    def hold(self, ref: FileRef, owner: str, seconds: float, *, client: redis.Redis | None = None) -> bool:
        """Extend `owner`'s claim; False when it is no longer theirs (queued only, on a pipeline)."""
        args: list[str | int] = [owner, max(1, int(seconds * 1000))]
        return bool(self._hold(keys=[inflight_key(ref.key)], args=args, client=client or self.client))

    def keep(self, ref: FileRef, owner: str, ttl: int) -> contextlib.AbstractContextManager[None]:
        """Keep `owner`'s claim on `ref` alive while the block runs (one renewing thread per process)."""
        if self._keeper is None:
            self._keeper = ClaimKeeper(self, ttl)
        return self._keeper.keep(ref, owner)

    def release(self, ref: FileRef, owner: str) -> None:
        self._hold(keys=[inflight_key(ref.key)], args=[owner, 0])

    def remember_skip(self, ref: FileRef, reason: str, seconds: int, *, needs: int = 0, needs_ttl: int = 0) -> None:
        """Do not try `ref` again for `seconds` (missing, too large, refused by Redis).

        With `needs`, the file was skipped for lack of room: its size is kept `needs_ttl`
        seconds, so that later tries can tell it still does not fit without opening it.
        """
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(skip_key(ref.key), reason, ex=seconds)
            if needs and needs_ttl:
                pipe.set(room_key(ref.key), needs, ex=needs_ttl)
            pipe.execute()

    def put(self, key: str, value: bytes, *, ttl: int) -> int | None:
        """Write a whole file in one `SET NX EX`; its length, or None if a value was already there.

        A plain command, not a script: Redis copies a script's arguments into Lua strings,
        which costs it about 300 us of CPU per 256 KiB, ten times the SET itself.
        """
        return len(value) if self.client.set(key, value, ex=ttl, nx=True) else None

    def settle(self, ref: FileRef, owner: str, *, stored: int | None, ttl: int) -> None:
        """After a copy: account the `stored` bytes (or drop the reservation) and release the claim."""
        self.ledger.settle(ref.key, stored, ttl=ttl, inflight=inflight_key(ref.key), owner=owner)

    def store(
        self,
        key: str,
        chunks: Iterator[bytes],
        *,
        ttl: int,
        tmp_ttl: int,
        heartbeat: Callable[[], object] = lambda: None,
        heartbeat_every: float = 1.0,
    ) -> int | None:
        """Write the stream at `key` with `ttl`, all or nothing; None if a value was already there.

        A value that fits in one chunk is one `SET NX EX`. A longer one is appended to a
        temporary key and renamed into place by a script, so readers never see part of it
        and memory stays bounded by the chunk size. Commands carry no pipeline so that a
        refused write (OOM) fails cheaply instead of echoing the payload in the error.
        """
        first = next(chunks, b"")
        second = next(chunks, None)
        if second is None:
            return self.put(key, first, ttl=ttl)
        tmp = TMP + uuid.uuid4().hex
        total = 0
        beat = time.monotonic()
        try:
            self.client.set(tmp, first, ex=tmp_ttl)
            total = len(first)
            for chunk in itertools.chain((second,), chunks):
                total += len(chunk)
                # A temporary key that expired or was evicted comes back from APPEND shorter.
                if self.client.append(tmp, chunk) != total:
                    raise CacheWriteLost(f"{key}: the partial value vanished while streaming")
                if time.monotonic() - beat >= heartbeat_every:
                    beat = time.monotonic()
                    self.client.expire(tmp, tmp_ttl)
                    heartbeat()
            published = self._publish(keys=[tmp, key], args=[ttl, total])
        except BaseException:
            _quietly(lambda: self.client.delete(tmp))
            raise
        if published == -1:
            raise CacheWriteLost(f"{key}: the partial value vanished before it was published")
        return total if published else None


def _chunks(items: Iterable[FileRef], size: int) -> Iterator[list[FileRef]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _quietly(action: Callable[[], object]) -> None:
    with contextlib.suppress(redis.RedisError):  # best effort: the temporary key expires on its own
        action()
