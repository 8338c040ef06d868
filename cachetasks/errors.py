"""The exceptions cachetasks raises; everything derives from one root.

CachetasksError
├── ConfigError              a setting is missing or invalid (the process stops at start)
├── CatalogError             the ongoing query failed or returned rows of the wrong shape
├── StorageError             reading a file from storage failed
│   ├── FileMissing          permanent: no such object or bucket; never retried
│   ├── FileForbidden        permanent: storage refuses this service the object (403, EACCES)
│   ├── InvalidAddress       permanent: a bucket or location that cannot be read safely
│   ├── FileTooLarge         permanent: larger than the configured maximum
│   └── StorageUnavailable   transient (below too): timeouts, 5xx, resets
└── Transient                may pass: a copy keeps its claim and is retried with backoff
    ├── StorageUnavailable
    ├── CacheUnavailable     Redis could not be reached or did not answer in time
    └── CacheWriteLost       a value being streamed into Redis vanished before it was complete
"""

from __future__ import annotations

from .printable import printable
from .ref import FileRef


class CachetasksError(Exception):
    """Root of every error cachetasks raises on purpose."""


class ConfigError(CachetasksError):
    """A setting is missing or invalid; the message names the variable."""


class CatalogError(CachetasksError):
    """The task database could not answer which files are ongoing."""


class Transient(CachetasksError):
    """A failure that may pass: retried with backoff, keeping the claim."""


class CacheUnavailable(Transient):
    """Redis could not be reached or timed out."""


class CacheWriteLost(Transient):
    """The partial value of a streamed write expired or was evicted; nothing was published."""


class StorageError(CachetasksError):
    """Reading from storage failed: `reason`, and the file it concerns when there is one."""

    def __init__(self, reason: str, ref: FileRef | None = None) -> None:
        # Names and servers' reasons come from outside: escaped, the message is one printable line.
        super().__init__(printable(f"{ref.key}: {reason}" if ref else reason))
        self.reason = reason
        self.ref = ref

    def __reduce__(self) -> tuple[type[StorageError], tuple[str, FileRef | None]]:
        # Celery rebuilds a task's exception from its args; keep the type and every field.
        return type(self), (self.reason, self.ref)


class FileMissing(StorageError):
    """The object or its bucket does not exist: retrying will not help."""


class FileForbidden(StorageError):
    """Storage refuses to give this service the object: retrying will not help until permissions change."""


class InvalidAddress(StorageError):
    """The bucket or location is malformed or points outside the storage root."""


class FileTooLarge(StorageError):
    """The object is larger than CACHETASKS_MAX_FILE_BYTES and is not cached."""


class StorageUnavailable(StorageError, Transient):
    """Storage could not be reached or failed in a way that may pass."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an error's message: drivers and clients repeat statements, payloads and
    parameters below it. redis-py and SQLAlchemy name hosts and ports there, never passwords."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]
