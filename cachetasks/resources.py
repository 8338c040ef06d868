"""Per-process clients: the database engine, the cache's Redis client and storage.

Built lazily on first use, never at import time, and dropped after a fork so that no pool
or socket is shared between processes. Tests replace them by assigning `resources.current`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property

import sqlalchemy as sa
from redis import Redis

from . import catalog, storage
from .cache import Cache
from .cache.client import make_redis
from .cache.counters import CopyRecorder
from .settings import Settings


@dataclass
class Resources:
    settings: Settings
    pid: int = field(default_factory=os.getpid)

    @cached_property
    def engine(self) -> sa.Engine:
        if not self.settings.database_url:  # the embedded SQLite file lives in the data directory
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return catalog.make_engine(self.settings.sqlalchemy_url, connect_timeout=self.settings.db_connect_timeout)

    @cached_property
    def addresses(self) -> catalog.AddressBook:
        return catalog.AddressBook()

    @cached_property
    def redis(self) -> Redis:
        return make_redis(self.settings.redis_url, timeout=self.settings.redis_timeout)

    @cached_property
    def broker(self) -> Redis:
        """A plain client on the broker's Redis, for queue lengths (Celery keeps its own connections)."""
        return make_redis(self.settings.broker_url, timeout=self.settings.redis_timeout)

    @cached_property
    def cache(self) -> Cache:
        return Cache(self.redis)

    @cached_property
    def recorder(self) -> CopyRecorder:
        return CopyRecorder(self.redis)

    @cached_property
    def storage(self) -> storage.Storage:
        return storage.from_settings(self.settings)

    def close(self) -> None:
        if "recorder" in self.__dict__:
            self.recorder.flush()
        if "engine" in self.__dict__:
            self.engine.dispose()
        for client in ("redis", "broker"):
            if client in self.__dict__:
                self.__dict__[client].close()
        if "storage" in self.__dict__:
            self.storage.close()


_lock = threading.Lock()
current: Resources | None = None


def get(settings: Settings) -> Resources:
    """This process's resources, built on first use (and again in a forked child)."""
    global current
    with _lock:
        if current is None or current.pid != os.getpid():
            current = Resources(settings)
        return current


def reset() -> None:
    """Forget this process's resources (after a fork, or at shutdown)."""
    global current
    with _lock:
        if current is not None and current.pid == os.getpid():
            current.close()
        current = None
