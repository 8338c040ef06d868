"""Storage backends behind one protocol, picked by CACHETASKS_STORAGE.

Each backend's client library is imported only when that backend is used: the optional
ones come with extras (`cachetasks[azure]`, `[gcs]`, `[opendal]`, `[crypto]`), and the
settings stop the process at start when the chosen one is not installed.
"""

from __future__ import annotations

from ..settings import Settings
from .base import Blob, Storage, version_of
from .local import LocalStorage
from .memory import MemoryStorage

__all__ = ["Blob", "LocalStorage", "MemoryStorage", "Storage", "from_settings", "version_of"]


def from_settings(settings: Settings) -> Storage:
    """The storage the settings name, decrypting what RAGFlow encrypted at rest."""
    backend = _backend(settings)
    if settings.decrypts:
        from .encrypted import EncryptedStorage

        assert settings.crypto_key is not None  # `decrypts` says so
        return EncryptedStorage(backend, algorithm=settings.crypto_algorithm, key=settings.crypto_key)
    return backend


def _backend(settings: Settings) -> Storage:
    if settings.storage == "s3":
        from .s3 import S3Storage, layout_of, make_client

        return S3Storage(make_client(settings), layout=layout_of(settings))
    if settings.storage == "azure_sas":
        from . import azure_blob

        return azure_blob.AzureBlobStorage(azure_blob.make_client(settings))
    if settings.storage == "azure_spn":
        from . import azure_datalake

        return azure_datalake.AzureDataLakeStorage(azure_datalake.make_client(settings))
    if settings.storage == "gcs":
        from . import gcs

        assert settings.gcs_bucket is not None  # the settings require it
        return gcs.GcsStorage(gcs.make_client(), settings.gcs_bucket, timeout=gcs.timeout_of(settings))
    if settings.storage == "opendal":
        from . import opendal_store

        return opendal_store.OpenDalStorage(opendal_store.make_operator(settings), settings.opendal_scheme)
    return LocalStorage(settings.storage_root)
