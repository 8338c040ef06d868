"""Copy one file from storage into the cache, under its in-flight claim."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import NamedTuple

import redis

from .cache import Cache, FileState, SkipReason
from .errors import (
    CacheUnavailable,
    FileForbidden,
    FileMissing,
    FileTooLarge,
    InvalidAddress,
    Transient,
    first_line,
)
from .outage import OUTAGE_LOG_EVERY, OutageLog, describe
from .printable import printable
from .ref import FileRef, address_problem
from .settings import Settings
from .storage import Blob, Storage

log = logging.getLogger(__name__)

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
    """Copy `ref` unless it is cached, claimed by another copy, or remembered as not cacheable.

    A file that cannot be cached for now (missing, forbidden, too large, no room) is remembered
    for CACHETASKS_NEGATIVE_TTL and its claim released. Transient errors propagate with the claim
    still held: the caller retries, then calls `give_up` after the last retry. Any other error
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
    state, needs = cache.begin(ref, owner, inflight_ttl=settings.inflight_ttl)
    if state is not FileState.CLAIMED:
        return Copy(state)
    try:
        with cache.keep(ref, owner, settings.inflight_ttl):
            copied = _copy(cache, storage, ref, settings, owner, needs)  # its end releases the claim
    except (Transient, redis.ConnectionError, redis.TimeoutError):
        raise  # the claim stays, for the retry
    except _Skip as skip:
        line = f"{ref.shown}: {skip.reason}: {printable(skip.detail)} (not tried again for {settings.negative_ttl}s)"
        if skip.reason.lack_of_room:  # expected while the cache is full: a line per file, a warning per minute
            log.info("not caching %s", line)
            _room_log.failed(line)
        else:
            log.warning("not caching %s", line)
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
        log.info("cached %s (%d bytes)", ref.shown, copied.written)
        _room_log.succeeded()
        _gave_up_log.succeeded()
    return copied


def give_up(cache: Cache, ref: FileRef, exc: BaseException, settings: Settings, *, owner: str) -> None:
    """After the last retry of a transient failure: remember `ref` for CACHETASKS_NEGATIVE_TTL, release the claim.

    Warns once per interval however many copies give up (storage down fails them all alike).
    """
    _gave_up_log.failed(f"{ref.key}: {describe(exc)} (not tried again for {settings.negative_ttl}s)")
    with contextlib.suppress(redis.RedisError):  # Redis down: the claim expires by itself
        cache.remember_skip(ref, SkipReason.UNAVAILABLE, settings.negative_ttl)
        cache.release(ref, owner)


def _copy(cache: Cache, storage: Storage, ref: FileRef, settings: Settings, owner: str, needs: int) -> Copy:
    # Storage is opened only if there is room: for the size the file needed when last skipped, if known.
    if cache.redis_full(needs, chunk=settings.chunk_bytes):
        room = f"{needs} bytes would take Redis" if needs else "Redis is"
        raise _Skip(SkipReason.REDIS_FULL, f"{room} near its maxmemory", needs)
    limit = settings.max_cache_bytes
    if needs and limit and cache.held_bytes() + needs > limit:
        raise _Skip(SkipReason.CACHE_FULL, f"{needs} bytes would pass CACHETASKS_MAX_CACHE_BYTES", needs)
    try:
        with storage.open(ref.bucket, ref.location, chunk_size=settings.chunk_bytes) as blob:
            return _store(cache, blob, ref, settings, owner)
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


def _store(cache: Cache, blob: Blob, ref: FileRef, settings: Settings, owner: str) -> Copy:
    """Write the blob, account it and release the claim.

    The room is judged on the size storage announced, before a byte is read: a file that does
    not fit costs no transfer, and the stream is never held back to learn its length.
    """
    limit, size = settings.max_file_bytes, blob.size
    if size > limit:
        raise FileTooLarge(f"{size} bytes is over the limit of {limit}", ref)
    if cache.redis_full(size, chunk=settings.chunk_bytes, promise=ref):
        raise _Skip(SkipReason.REDIS_FULL, f"{size} bytes would take Redis near its maxmemory", size)
    budget = settings.max_cache_bytes
    if budget and not cache.reserve(ref.key, size, limit=budget):
        raise _Skip(SkipReason.CACHE_FULL, f"{size} bytes would pass CACHETASKS_MAX_CACHE_BYTES", size)
    try:
        chunks = _bounded(blob.chunks, ref, limit)
        stored = cache.store(ref.key, chunks, size=size, ttl=settings.ttl, tmp_ttl=settings.inflight_ttl)
    except BaseException:
        if budget:
            cache.cancel(ref.key)
        raise
    cache.settle(ref, owner, stored=stored, ttl=settings.ttl)
    return Copy(FileState.CACHED, stored)


def _bounded(chunks: Iterator[bytes], ref: FileRef, limit: int) -> Iterator[bytes]:
    """Stop a stream that grows past `limit`, whatever size storage announced."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise FileTooLarge(f"more than {limit} bytes", ref)
        yield chunk
        del chunk  # not held while the next one is read
