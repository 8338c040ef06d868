"""Read a file through the cache: from Redis when it is there, from storage otherwise.

The public API for the workers that consume what cachetasks keeps hot. A read never fails
because of the cache: when Redis is down, slow or refuses, the file comes from storage and
the outage is logged at most once a minute. Storage errors (`FileMissing`,
`StorageUnavailable`, ...) reach the caller unchanged; the reader never writes to Redis.

    from cachetasks.reader import from_env

    with from_env() as reader:  # the CACHETASKS_* variables the service reads
        data = reader.get(kb_id, location)
        pdf = reader.get(kb_id, other, wait=2.0)  # worth waiting for a copy in flight
    print(reader.stats)  # ReaderStats(hits=1, misses=1, redis_errors=0, waited=1)

Or from collaborators you already hold: `Reader(redis_client, storage)`. The client must be
binary-safe (no `decode_responses`) and should have short timeouts, so that a dead Redis
costs each read little: `socket_connect_timeout=0.5, socket_timeout=1.0` (what
`Reader.from_settings` uses) makes a refused connection cost about a millisecond, an
unreachable host the connect timeout, and a hung server the read timeout.

A Reader is thread-safe; build one per process (after any fork), and close it when done.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import cast

import redis

from . import storage as storages
from .cache.client import make_redis
from .cache.keys import inflight_key
from .outage import OutageLog
from .settings import MiB, Settings
from .storage.base import check_address

__all__ = ["READER_REDIS_TIMEOUT", "Reader", "ReaderStats", "from_env"]

log = logging.getLogger(__name__)

READER_REDIS_TIMEOUT = 0.5  # connect timeout of `from_settings`; reads get `make_redis`'s floor of 1 s
OUTAGE_LOG_EVERY = 60.0


@dataclasses.dataclass
class ReaderStats:
    """In-process counters: each `get` of a valid address counts once in hits, misses or redis_errors."""

    hits: int = 0  # served from Redis
    misses: int = 0  # not in Redis: served from storage
    redis_errors: int = 0  # Redis failed: served from storage
    waited: int = 0  # waited for a copy in flight (then counted as a hit, miss or error too)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def add(self, *, hits: int = 0, misses: int = 0, redis_errors: int = 0, waited: int = 0) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.redis_errors += redis_errors
            self.waited += waited

    def snapshot(self) -> ReaderStats:
        """A consistent copy, for reporting."""
        with self._lock:
            return dataclasses.replace(self)


class Reader:
    """`get(bucket, location)`: the bytes of a file, from the cache when it holds them."""

    def __init__(
        self,
        redis_client: redis.Redis,
        storage: storages.Storage,
        *,
        wait_inflight: float = 0.0,
        poll_interval: float = 0.05,
        chunk_size: int = MiB,
        outage_log_every: float = OUTAGE_LOG_EVERY,
    ) -> None:
        if redis_client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the Redis client must be binary-safe: drop decode_responses=True")
        if wait_inflight < 0 or poll_interval <= 0 or chunk_size <= 0:
            raise ValueError("wait_inflight must be >= 0, poll_interval and chunk_size > 0")
        self.redis = redis_client
        self.storage = storage
        self.wait_inflight = wait_inflight
        self.poll_interval = poll_interval
        self.chunk_size = chunk_size
        self.stats = ReaderStats()
        self.outages = OutageLog(
            log, "cache lookup failed, reading from storage", "cache reachable again", outage_log_every
        )
        self._closers: list[Callable[[], object]] = []  # what `close` releases: only what we built

    @classmethod
    def from_settings(cls, settings: Settings, *, wait_inflight: float = 0.0) -> Reader:
        """A reader with clients of its own, built from the service's settings; `close` releases them."""
        client = make_redis(settings.redis_url, timeout=min(settings.redis_timeout, READER_REDIS_TIMEOUT))
        storage = storages.from_settings(settings)
        reader = cls(client, storage, wait_inflight=wait_inflight, chunk_size=settings.chunk_bytes)
        reader._closers += [client.close, storage.close]
        return reader

    def get(self, bucket: str, location: str, *, wait: float | None = None) -> bytes:
        """The file's bytes: from Redis when cached, else from storage.

        When the file is not cached but a copy is in flight, wait up to `wait` seconds
        (default: `wait_inflight`) for it rather than read storage a second time.
        Raises InvalidAddress for an address storage would refuse, and whatever storage
        raises on a miss; never a Redis error.
        """
        key = check_address(bucket, location).key  # before Redis: a refused address has no cached copy
        try:
            value = self._lookup(key, self.wait_inflight if wait is None else wait)
        except redis.RedisError as exc:
            self.stats.add(redis_errors=1)
            self.outages.failed(exc)
            return self._read_storage(bucket, location)
        self.outages.succeeded()
        if value is None:
            self.stats.add(misses=1)
            return self._read_storage(bucket, location)
        self.stats.add(hits=1)
        return value

    def _lookup(self, key: str, wait: float) -> bytes | None:
        if wait <= 0:
            return cast("bytes | None", self.redis.get(key))  # binary-safe: checked in __init__
        deadline = time.monotonic() + wait
        waited = False
        while True:
            # The mark first: a copy publishes the key before it drops the mark, so a mark
            # gone before the GET means the key, if any, is already there.
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.exists(inflight_key(key))
                pipe.get(key)
                marked, value = pipe.execute()
            if value is not None or not marked:
                return cast("bytes | None", value)
            if not waited:
                waited = True
                self.stats.add(waited=1)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(self.poll_interval, left))

    def _read_storage(self, bucket: str, location: str) -> bytes:
        with self.storage.open(bucket, location, chunk_size=self.chunk_size) as blob:
            return b"".join(blob.chunks)

    def close(self) -> None:
        """Release the clients `from_settings` built; clients passed in stay the caller's."""
        closers, self._closers = self._closers, []
        for close in closers:
            close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def from_env(env: Mapping[str, str] | None = None, *, wait_inflight: float = 0.0) -> Reader:
    """A reader configured by the CACHETASKS_* variables of `env` (default: the process environment)."""
    return Reader.from_settings(Settings.from_env(os.environ if env is None else env), wait_inflight=wait_inflight)
