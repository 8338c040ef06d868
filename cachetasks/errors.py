"""The exceptions cachetasks raises; everything derives from one root.

CachetasksError
├── ConfigError          a setting is missing or invalid (the process stops at start)
├── CatalogError         the ongoing query failed or returned rows of the wrong shape
├── CacheWriteLost       transient: a value being streamed into Redis vanished before it was complete
└── StorageError
    ├── FileMissing          permanent: no such object or bucket; never retried
    ├── InvalidAddress       permanent: a bucket or location that cannot be read safely
    ├── FileTooLarge         permanent: larger than the configured maximum
    └── StorageUnavailable   transient: timeouts, 5xx, resets; retried with backoff
"""

from __future__ import annotations


class CachetasksError(Exception):
    """Root of every error cachetasks raises on purpose."""


class ConfigError(CachetasksError):
    """A setting is missing or invalid; the message names the variable."""


class CatalogError(CachetasksError):
    """The task database could not answer which files are ongoing."""


class CacheWriteLost(CachetasksError):
    """The partial value of a streamed write expired or was evicted; nothing was published."""


class StorageError(CachetasksError):
    """Reading a file from storage failed."""

    def __init__(self, bucket: str, location: str, reason: str) -> None:
        where = f"{bucket}/{location}" if location else bucket
        super().__init__(f"{where}: {reason}" if where else reason)
        self.bucket = bucket
        self.location = location
        self.reason = reason

    def __reduce__(self) -> tuple[type[StorageError], tuple[str, str, str]]:
        # Celery rebuilds a task's exception from its args; keep the type and every field.
        return type(self), (self.bucket, self.location, self.reason)


class FileMissing(StorageError):
    """The object or its bucket does not exist: retrying will not help."""


class InvalidAddress(StorageError):
    """The bucket or location is malformed or points outside the storage root."""


class FileTooLarge(StorageError):
    """The object is larger than CACHETASKS_MAX_FILE_BYTES and is not cached."""


class StorageUnavailable(StorageError):
    """Storage could not be reached or failed in a way that may pass."""
