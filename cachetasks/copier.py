"""Copy one file from storage into the cache, under its in-flight claim."""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Iterator

import redis

from .cache import Cache
from .errors import CacheWriteLost, FileMissing, FileTooLarge, InvalidAddress, StorageUnavailable
from .outage import OutageLog
from .ref import FileRef, address_problem
from .settings import Settings
from .storage import Blob, Storage

log = logging.getLogger(__name__)

# Failures that may pass: the claim is kept and the copy retried.
TRANSIENT = (StorageUnavailable, CacheWriteLost, redis.ConnectionError, redis.TimeoutError)


class Outcome(enum.StrEnum):
    CACHED = "cached"
    ALREADY_CACHED = "already-cached"
    BUSY = "busy"  # another task holds the claim
    SKIPPED = "skipped"  # remembered as not cacheable for now
    MISSING = "missing"
    TOO_LARGE = "too-large"
    INVALID = "invalid"
    CACHE_FULL = "cache-full"  # CACHETASKS_MAX_CACHE_BYTES reached
    REDIS_FULL = "redis-full"  # Redis is near its maxmemory: writing would evict
    REFUSED = "refused"  # Redis would not take the value (e.g. out of memory)


_LACK_OF_ROOM = (Outcome.CACHE_FULL, Outcome.REDIS_FULL)
_room_log = OutageLog(
    log, "files skipped for lack of room in the cache, e.g.", "caching files again after a lack of room"
)


class _Skip(Exception):
    def __init__(self, outcome: Outcome, reason: str, needs: int = 0) -> None:
        self.outcome, self.reason, self.needs = outcome, reason, needs  # needs: the bytes it lacked room for


def copy_file(cache: Cache, storage: Storage, ref: FileRef, settings: Settings, *, owner: str) -> tuple[Outcome, int]:
    """Copy `ref` unless it is cached, claimed by someone else, or remembered as not cacheable.

    Returns the outcome and the bytes written.

    Permanent failures are remembered for CACHETASKS_NEGATIVE_TTL and release the claim.
    TRANSIENT errors propagate with the claim still held:
    the caller retries, then calls `cache.release` when it gives up.
    """
    problem = address_problem(ref.bucket, ref.location)
    if problem:
        log.warning("refused %.200r / %.200r: %s", ref.bucket, ref.location, problem)
        return Outcome.INVALID, 0
    state, needs = cache.begin(ref, owner, inflight_ttl=settings.inflight_ttl)
    if state != "go":
        return {"cached": Outcome.ALREADY_CACHED, "skipped": Outcome.SKIPPED}.get(state, Outcome.BUSY), 0
    try:
        with cache.keep(ref, owner, settings.inflight_ttl):
            outcome, size = _copy(cache, storage, ref, settings, owner, needs)  # its end releases the claim
    except TRANSIENT:
        raise
    except _Skip as skip:
        line = f"{ref.key}: {skip.outcome}: {skip.reason} (not tried again for {settings.negative_ttl}s)"
        if skip.outcome in _LACK_OF_ROOM:  # expected while the cache is full: a line per file, a warning per minute
            log.info("not caching %s", line)
            _room_log.failed(line)
        else:
            log.warning("not caching %s", line)
        # A file that lacked room keeps its size for a TTL period: re-checks need not open it.
        cache.remember_skip(ref, skip.outcome.value, settings.negative_ttl, needs=skip.needs, needs_ttl=settings.ttl)
        cache.release(ref, owner)
        return skip.outcome, 0
    except BaseException:
        cache.release(ref, owner)
        raise
    if outcome is Outcome.CACHED:
        log.info("cached %s (%d bytes)", ref.key, size)
        _room_log.succeeded()
    return outcome, size


def _copy(
    cache: Cache, storage: Storage, ref: FileRef, settings: Settings, owner: str, needs: int
) -> tuple[Outcome, int]:
    # Storage is opened only if there is room: for the size the file needed when last skipped, if known.
    if cache.memory.full(needs, reserve=False):
        room = f"{needs} bytes would take Redis" if needs else "Redis is"
        raise _Skip(Outcome.REDIS_FULL, f"{room} near its maxmemory", needs)
    limit = settings.max_cache_bytes
    if needs and limit and cache.ledger.held_bytes() + needs > limit:
        raise _Skip(Outcome.CACHE_FULL, f"{needs} bytes would pass CACHETASKS_MAX_CACHE_BYTES", needs)
    try:
        with storage.open(ref.bucket, ref.location, chunk_size=settings.chunk_bytes) as blob:
            return _store(cache, blob, ref, settings, owner)
    except FileMissing as exc:
        raise _Skip(Outcome.MISSING, exc.reason) from None
    except FileTooLarge as exc:
        raise _Skip(Outcome.TOO_LARGE, exc.reason) from None
    except InvalidAddress as exc:
        raise _Skip(Outcome.INVALID, exc.reason) from None
    except redis.ResponseError as exc:
        # Only the server's first words: never the payload.
        raise _Skip(Outcome.REFUSED, str(exc).split("\n")[0][:120]) from None


def _store(cache: Cache, blob: Blob, ref: FileRef, settings: Settings, owner: str) -> tuple[Outcome, int]:
    """Write the blob, account it and release the claim."""
    limit = settings.max_file_bytes
    if blob.size > limit:
        raise FileTooLarge(ref.bucket, ref.location, f"{blob.size} bytes is over the limit of {limit}")
    chunks = _bounded(blob.chunks, ref, limit)
    first, rest = next(chunks, b""), next(chunks, None)
    size = len(first) if rest is None else blob.size
    if cache.memory.full(size):
        raise _Skip(Outcome.REDIS_FULL, f"{size} bytes would take Redis near its maxmemory", size)
    budget = settings.max_cache_bytes
    if budget and not cache.ledger.reserve(ref.key, size, limit=budget):
        raise _Skip(Outcome.CACHE_FULL, f"{size} bytes would pass CACHETASKS_MAX_CACHE_BYTES", size)
    try:
        if rest is None:  # the whole file in one chunk: one SET
            stored = cache.put(ref.key, first, ttl=settings.ttl)
        else:
            stored = cache.store(
                ref.key, itertools.chain((first, rest), chunks), ttl=settings.ttl, tmp_ttl=settings.inflight_ttl
            )
    except BaseException:
        if budget:
            cache.ledger.cancel(ref.key)
        raise
    cache.settle(ref, owner, stored=stored, ttl=settings.ttl)
    return (Outcome.CACHED, stored) if stored is not None else (Outcome.ALREADY_CACHED, 0)


def _bounded(chunks: Iterator[bytes], ref: FileRef, limit: int) -> Iterator[bytes]:
    """Stop a stream that grows past `limit`, whatever size storage announced."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise FileTooLarge(ref.bucket, ref.location, f"more than {limit} bytes")
        yield chunk
