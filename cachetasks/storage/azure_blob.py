"""Azure Blob Storage through a SAS token, as RAGFlow's `AZURE_SAS` connector keeps files.

One container (the URL the token signs); a file `(bucket, location)` is the blob
`"{bucket}/{location}"`. The token is part of the client's URL: it never goes into a log or
an error message, which name the container URL alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azure.storage.blob import ContainerClient, LinearRetry

from .azure_common import AZURE_ERRORS, downloaded, etag_version, translate
from .base import Blob, check_address

if TYPE_CHECKING:
    from ..settings import Settings


def make_client(settings: Settings) -> ContainerClient:
    """A container client with the settings' SAS token, reading at most one chunk per request."""
    assert settings.azure_container_url is not None and settings.azure_sas_token is not None  # required by settings
    url = settings.azure_container_url.rstrip("/") + "?" + settings.azure_sas_token.lstrip("?")
    return ContainerClient.from_container_url(url, **client_options(settings))


def client_options(settings: Settings) -> dict[str, Any]:
    """Timeouts, one quick retry, and downloads of one chunk at a time (the default is 32 MiB).

    Azure Storage's clients wait 18 s (give or take 3) before their first retry: a worker thread
    would sit that long on a busy server. One retry within 2 s absorbs a blip; the copy task's
    own backoff handles the rest.
    """
    return {
        "connection_timeout": settings.s3_connect_timeout,
        "read_timeout": settings.s3_read_timeout,
        "retry_policy": LinearRetry(backoff=1, random_jitter_range=1, retry_total=1),
        "max_single_get_size": settings.chunk_bytes,
        "max_chunk_get_size": settings.chunk_bytes,
    }


def blob_name(bucket: str, location: str) -> str:
    return f"{bucket}/{location}"


class AzureBlobStorage:
    def __init__(self, client: ContainerClient) -> None:
        self.client = client

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        ref = check_address(bucket, location)
        # Later ranges are read on the ETag of the first one: a blob replaced mid-read fails the read.
        name = blob_name(bucket, location)
        return downloaded(lambda: self.client.download_blob(name, max_concurrency=1), ref, chunk_size)

    def stat(self, bucket: str, location: str) -> str:
        ref = check_address(bucket, location)
        return etag_version(self.client.get_blob_client(blob_name(bucket, location)).get_blob_properties, ref)

    def put(self, bucket: str, location: str, data: bytes) -> None:
        check_address(bucket, location)
        self.client.upload_blob(name=blob_name(bucket, location), data=data, overwrite=True)

    def check(self) -> str:
        try:
            # A container SAS may not read the container's properties: ask for a blob, found or not.
            self.client.get_blob_client("cachetasks-check").exists()
        except AZURE_ERRORS as exc:
            raise translate(exc) from None
        return f"Azure Blob container {self.client.url.split('?', 1)[0]} (SAS token)"

    def close(self) -> None:
        self.client.close()
