"""Storage backends behind one protocol, picked by CACHETASKS_STORAGE.

Each backend's client library is imported only when that backend is used.
"""

from __future__ import annotations

from ..settings import Settings
from .base import Blob, Storage, version_of
from .local import LocalStorage
from .memory import MemoryStorage

__all__ = ["Blob", "LocalStorage", "MemoryStorage", "Storage", "from_settings", "version_of"]


def from_settings(settings: Settings) -> Storage:
    if settings.storage == "s3":
        from .s3 import S3Storage, make_client

        return S3Storage(make_client(settings), bucket=settings.s3_bucket, prefix=settings.s3_prefix)
    return LocalStorage(settings.storage_root)
