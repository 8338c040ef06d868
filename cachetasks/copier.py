"""Copy one file from storage into the cache, under its in-flight claim.

A copy writes a file that is not cached, or replaces a value that is: one copied for another
document at the same address (a re-upload), or one whose storage object changed since it was
copied (checked when its TTL is renewed). Every value carries the source it was copied from.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

import redis

from .cache import Begun, Cache, FileState, SkipReason, Source
from .errors import (
    CacheUnavailable,
    FileForbidden,
    FileMissing,
    FileTooLarge,
    InvalidAddress,
    StorageUnavailable,
    Transient,
    first_line,
)
from .outage import OUTAGE_LOG_EVERY, OutageLog, describe
from .printable import printable
from .ref import FileRef, address_problem
from .settings import Settings
from .storage import Blob, Storage, version_of

log = logging.getLogger(__name__)
T = TypeVar("T")

_room_log = OutageLog(
    log, "files skipped for lack of room in the cache, e.g.", "caching files again after a lack of room"
)
# Celery logs a copy that gave up at INFO, as the expected failure it is; this says it where operators look.
_gave_up_log = OutageLog(log, "copies gave up after their retries, e.g.", "copies succeed again", OUTAGE_LOG_EVERY)


class Copy(NamedTuple):
    """What a copy did: the state it left the file in, or why it skipped it, and the bytes it wrote."""

    outcome: FileState | SkipReason  # CACHED, IN_FLIGHT (another copy has it), SKIPPED (earlier), or a SkipReason
    written: int | None = None  # None: this copy wrote nothing


class _Skip(Exception):
    def __init__(self, reason: SkipReason, detail: str, needs: int = 0) -> None:
        self.reason, self.detail, self.needs = reason, detail, needs  # needs: the bytes it lacked room for


def copy_file(cache: Cache, storage: Storage, ref: FileRef, settings: Settings, *, owner: str) -> Copy:
    """Copy `ref` unless it is cached and fresh, claimed by another copy, or remembered as not cacheable.

    A file that cannot be cached for now (missing, forbidden, too large, no room) is remembered
    for CACHETASKS_NEGATIVE_TTL and its claim released; a value it was to replace is deleted,
    since it is no longer what storage holds. Transient errors propagate with the claim still
    held: the caller retries, then calls `give_up` after the last retry. Any other error
    propagates too, with the file remembered: storage never sees a read per collect for one file.
    """
    problem = address_problem(ref.bucket, ref.location)
    if problem:
        log.warning("refused %.200r / %.200r: %s", ref.bucket, ref.location, problem)
        return Copy(SkipReason.INVALID)
    try:
        return _claimed_copy(cache, storage, ref, settings, owner)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CacheUnavailable(f"{type(exc).__name__}: {first_line(exc)}") from exc


def _claimed_copy(cache: Cache, storage: Storage, ref: FileRef, settings: Settings, owner: str) -> Copy:
    begun = cache.begin(ref, owner, inflight_ttl=settings.inflight_ttl)
    if begun.state is not FileState.CLAIMED:
        return Copy(begun.state)
    try:
        with cache.keep(ref, owner, settings.inflight_ttl):
            copied = _copy(cache, storage, ref, settings, owner, begun)  # its end releases the claim
    except (Transient, redis.ConnectionError, redis.TimeoutError):
        raise  # the claim stays, for the retry
    except _Skip as skip:
        line = f"{ref.shown}: {skip.reason}: {printable(skip.detail)} (not tried again for {settings.negative_ttl}s)"
        if skip.reason.lack_of_room:  # expected while the cache is full: a line per file, a warning per minute
            log.info("not caching %s", line)
            _room_log.failed(line)
        else:
            log.warning("not caching %s", line)
        if begun.replacing is not None:
            cache.evict({ref.key})  # it holds what storage no longer has for this file
        # A file that lacked room keeps its size for a TTL period: re-checks need not open it.
        cache.remember_skip(ref, skip.reason, settings.negative_ttl, needs=skip.needs, needs_ttl=settings.ttl)
        cache.release(ref, owner)
        return Copy(skip.reason)
    except Exception:
        with contextlib.suppress(redis.RedisError):  # the error that matters is the one propagating
            cache.remember_skip(ref, SkipReason.ERROR, settings.negative_ttl)
            cache.release(ref, owner)
        raise
    except BaseException:  # the worker stops: the next one may copy the file at once
        cache.release(ref, owner)
        raise
    if copied.written is not None:
        log.info("%s %s (%d bytes)", "replaced" if begun.replacing else "cached", ref.shown, copied.written)
        _room_log.succeeded()
        _gave_up_log.succeeded()
    return copied


def give_up(cache: Cache, ref: FileRef, exc: BaseException, settings: Settings, *, owner: str) -> None:
    """After the last retry of a transient failure: remember `ref` for CACHETASKS_NEGATIVE_TTL, release the claim.

    Warns once per interval however many copies give up (storage down fails them all alike).
    """
    _gave_up_log.failed(f"{ref.shown}: {describe(exc)} (not tried again for {settings.negative_ttl}s)")
    with contextlib.suppress(redis.RedisError):  # Redis down: the claim expires by itself
        cache.remember_skip(ref, SkipReason.UNAVAILABLE, settings.negative_ttl)
        cache.release(ref, owner)


def _copy(cache: Cache, storage: Storage, ref: FileRef, settings: Settings, owner: str, begun: Begun) -> Copy:
    held = begun.replacing
    if held is not None and held.version and held.document in ("", begun.document):
        # The value was copied for this document: it stays unless storage's object changed since.
        version = _translated(lambda: version_of(storage, ref.bucket, ref.location))
        if version == held.version:
            if not cache.confirm(ref, owner, ttl=settings.ttl):
                log.info("%s expired while its version was checked", ref.shown)
            return Copy(FileState.CACHED)
        log.info("%s changed in storage since it was cached: copying it again", ref.shown)
    # Storage is opened only once room is promised: for the size the file needed when last skipped, if
    # known, else for an estimate, so that copies started together open no more files than Redis can take.
    needs = begun.needs
    promised = cache.room_for(ref, needs, chunk=settings.chunk_bytes)
    if promised is None:
        room = f"{needs} bytes would take Redis" if needs else "Redis is"
        raise _Skip(SkipReason.REDIS_FULL, f"{room} near its maxmemory", needs)
    limit = settings.max_cache_bytes
    if needs and limit and cache.held_bytes() + needs > limit:
        raise _Skip(SkipReason.CACHE_FULL, f"{needs} bytes would pass CACHETASKS_MAX_CACHE_BYTES", needs)

    def store() -> Copy:
        with storage.open(ref.bucket, ref.location, chunk_size=settings.chunk_bytes) as blob:
            return _store(cache, blob, ref, settings, owner, begun, promised)

    return _translated(store)


def _translated(action: Callable[[], T]) -> T:
    """Run `action`, turning the permanent storage errors and Redis's refusals into skips."""
    try:
        return action()
    except FileMissing as exc:
        raise _Skip(SkipReason.MISSING, exc.reason) from None
    except FileForbidden as exc:
        raise _Skip(SkipReason.FORBIDDEN, exc.reason) from None
    except FileTooLarge as exc:
        raise _Skip(SkipReason.TOO_LARGE, exc.reason) from None
    except InvalidAddress as exc:
        raise _Skip(SkipReason.INVALID, exc.reason) from None
    except redis.ResponseError as exc:
        # Only the server's first words: never the payload.
        raise _Skip(SkipReason.REFUSED, first_line(exc, 120)) from None


def _store(cache: Cache, blob: Blob, ref: FileRef, settings: Settings, owner: str, begun: Begun, promised: int) -> Copy:
    """Write the blob, account it with its source and release the claim.

    The room is judged again on the size storage announced, unless what was `promised` covers
    it, before a byte is read: a file that does not fit costs no transfer, and the stream is
    never held back to learn its length.
    """
    limit, size = settings.max_file_bytes, blob.size
    if size > limit:
        raise FileTooLarge(f"{size} bytes is over the limit of {limit}", ref)
    if cache.room_for(ref, size, chunk=settings.chunk_bytes, promised=promised) is None:
        raise _Skip(SkipReason.REDIS_FULL, f"{size} bytes would take Redis near its maxmemory", size)
    budget = settings.max_cache_bytes
    if budget and not cache.reserve(ref.key, size, limit=budget):
        raise _Skip(SkipReason.CACHE_FULL, f"{size} bytes would pass CACHETASKS_MAX_CACHE_BYTES", size)
    try:
        stored = cache.store(
            ref.key,
            _checked(blob, ref, limit),
            size=size,
            ttl=settings.ttl,
            tmp_ttl=settings.inflight_ttl,
            replace=begun.replacing is not None,
            exact=blob.exact,  # `_checked` fails a stream that does not add up to it
        )
    except BaseException:
        if budget:
            cache.cancel(ref.key)
        raise
    cache.settle(ref, owner, stored=stored, ttl=settings.ttl, source=Source(begun.document, blob.version))
    return Copy(FileState.CACHED, stored)


def _checked(blob: Blob, ref: FileRef, limit: int) -> Iterator[bytes]:
    """The blob's chunks, one held at a time, stopped when they grow past `limit` (whatever storage
    announced), and failed at their end unless they add up to the size announced as exact: a file
    rewritten while it was read is copied again, never published torn."""
    total = 0
    for chunk in blob.chunks:
        total += len(chunk)
        if total > limit:
            raise FileTooLarge(f"more than {limit} bytes", ref)
        yield chunk
        del chunk  # not held while the next one is read
    if blob.exact and blob.size and total != blob.size:
        raise StorageUnavailable(f"read {total} bytes of the {blob.size} announced: it changed while read", ref)
