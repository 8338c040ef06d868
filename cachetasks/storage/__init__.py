"""Storage backends behind one protocol, picked by CACHETASKS_STORAGE."""

from __future__ import annotations

from ..settings import Settings
from .base import Blob, Storage
from .local import LocalStorage
from .s3 import S3Storage, make_client

__all__ = ["Blob", "LocalStorage", "S3Storage", "Storage", "from_settings"]


def from_settings(settings: Settings) -> Storage:
    if settings.storage == "s3":
        return S3Storage(make_client(settings), bucket=settings.s3_bucket, prefix=settings.s3_prefix)
    return LocalStorage(settings.storage_root)
