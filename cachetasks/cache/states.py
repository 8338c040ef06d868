"""One vocabulary for where a file stands in the cache, shared by the Lua scripts, copies and `status`.

The scripts return these strings (`classify.lua` decides in the order below), a copy
reports the state it left a file in, and `status` counts files by them.
"""

from __future__ import annotations

import enum


class FileState(enum.StrEnum):
    CACHED = "cached"  # its key holds the whole file
    IN_FLIGHT = "in-flight"  # claimed: a copy is queued or running
    SKIPPED = "skipped"  # remembered as not cacheable for now, for a SkipReason
    EVICTED = "evicted"  # this service cached it and Redis dropped it before its TTL: Redis is full
    UNCACHED = "uncached"  # none of the above: nobody is copying it
    CLAIMED = "claimed"  # was uncached, and is now claimed by the caller: copy it


class SkipReason(enum.StrEnum):
    """Why a file is skipped: the value of its skip mark, and what a copy that skipped it reports."""

    MISSING = "missing"
    FORBIDDEN = "forbidden"  # storage refuses this service the file (403, EACCES)
    UNAVAILABLE = "unavailable"  # storage kept failing for it through every retry of a copy
    ERROR = "error"  # a copy failed in a way nobody foresaw (its traceback is in the worker's log)
    TOO_LARGE = "too-large"
    INVALID = "invalid"
    CACHE_FULL = "cache-full"  # CACHETASKS_MAX_CACHE_BYTES reached
    REDIS_FULL = "redis-full"  # Redis is near its maxmemory: writing would evict
    REFUSED = "refused"  # Redis would not take the value (out of memory)

    @property
    def lack_of_room(self) -> bool:
        return self in (SkipReason.CACHE_FULL, SkipReason.REDIS_FULL)
