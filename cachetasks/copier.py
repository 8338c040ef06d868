"""Copy one file from storage into the cache, under its in-flight claim."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator

import redis

from .cache import Cache
from .errors import FileMissing, FileTooLarge, InvalidAddress, StorageUnavailable
from .ref import FileRef, address_problem
from .settings import Settings
from .storage import Storage

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    CACHED = "cached"
    ALREADY_CACHED = "already-cached"
    BUSY = "busy"  # another task holds the claim
    SKIPPED = "skipped"  # remembered as not cacheable for now
    MISSING = "missing"
    TOO_LARGE = "too-large"
    INVALID = "invalid"
    REFUSED = "refused"  # Redis would not take the value (e.g. out of memory)


def copy_file(cache: Cache, storage: Storage, ref: FileRef, settings: Settings, *, owner: str) -> Outcome:
    """Copy `ref` unless it is cached, claimed by someone else, or remembered as not cacheable.

    Permanent failures are remembered for CACHETASKS_NEGATIVE_TTL and release the claim.
    StorageUnavailable and Redis connection errors propagate with the claim still held:
    the caller retries, then calls `cache.release` when it gives up.
    """
    problem = address_problem(ref.bucket, ref.location)
    if problem:
        log.warning("refused %r: %s", ref.key if isinstance(ref.key, str) else ref, problem)
        return Outcome.INVALID
    state = cache.begin(ref, owner, inflight_ttl=settings.inflight_ttl)
    if state != "go":
        return {"cached": Outcome.ALREADY_CACHED, "skipped": Outcome.SKIPPED}.get(state, Outcome.BUSY)
    try:
        outcome, size = _copy(cache, storage, ref, settings, owner)
    except (StorageUnavailable, redis.ConnectionError, redis.TimeoutError):
        raise
    except BaseException:
        cache.release(ref, owner)
        raise
    cache.release(ref, owner)
    if outcome is Outcome.CACHED:
        log.info("cached %s (%d bytes)", ref.key, size)
    return outcome


def _copy(cache: Cache, storage: Storage, ref: FileRef, settings: Settings, owner: str) -> tuple[Outcome, int]:
    limit = settings.max_file_bytes
    try:
        with storage.open(ref.bucket, ref.location, chunk_size=settings.chunk_bytes) as blob:
            if blob.size > limit:
                raise FileTooLarge(ref.bucket, ref.location, f"{blob.size} bytes is over the limit of {limit}")
            stored = cache.store(
                ref.key,
                _bounded(blob.chunks, ref, limit),
                ttl=settings.ttl,
                tmp_ttl=settings.inflight_ttl,
                heartbeat=lambda: cache.hold(ref, owner, settings.inflight_ttl),
            )
    except FileMissing as exc:
        return _skip(cache, ref, settings, Outcome.MISSING, exc.reason), 0
    except FileTooLarge as exc:
        return _skip(cache, ref, settings, Outcome.TOO_LARGE, exc.reason), 0
    except InvalidAddress as exc:
        return _skip(cache, ref, settings, Outcome.INVALID, exc.reason), 0
    except redis.ResponseError as exc:
        # Only the server's first words: never the payload.
        return _skip(cache, ref, settings, Outcome.REFUSED, str(exc).split("\n")[0][:120]), 0
    if stored is None:
        return Outcome.ALREADY_CACHED, 0
    return Outcome.CACHED, stored


def _skip(cache: Cache, ref: FileRef, settings: Settings, outcome: Outcome, reason: str) -> Outcome:
    log.warning("not caching %s: %s: %s (not retried for %ds)", ref.key, outcome.value, reason, settings.negative_ttl)
    cache.remember_skip(ref, outcome.value, settings.negative_ttl)
    return outcome


def _bounded(chunks: Iterator[bytes], ref: FileRef, limit: int) -> Iterator[bytes]:
    """Stop a stream that grows past `limit`, whatever size storage announced."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise FileTooLarge(ref.bucket, ref.location, f"more than {limit} bytes")
        yield chunk
