"""Google Cloud Storage, as RAGFlow's `GCS` connector keeps files.

One real bucket (RAGFlow's `gcs: bucket`); a file `(bucket, location)` is the object
`"{bucket}/{location}"`. The client finds credentials as Google's libraries do (Application
Default Credentials), or talks to the emulator that `STORAGE_EMULATOR_HOST` names.
"""

from __future__ import annotations

from collections.abc import Iterator

import requests
from google.api_core import exceptions as gex
from google.auth import exceptions as gauth
from google.cloud import storage

from ..errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable, first_line
from ..ref import FileRef
from ..settings import Settings
from .base import Blob, check_address

Timeout = tuple[float, float]
GCS_ERRORS = (gex.GoogleAPIError, gauth.GoogleAuthError, requests.RequestException, OSError)


def make_client() -> storage.Client:
    """Google's default credentials and project, or anonymous access to an emulator."""
    return storage.Client()


def timeout_of(settings: Settings) -> Timeout:
    return (settings.s3_connect_timeout, settings.s3_read_timeout)


def object_name(bucket: str, location: str) -> str:
    return f"{bucket}/{location}"


class GcsStorage:
    def __init__(self, client: storage.Client, bucket: str, *, timeout: Timeout = (5.0, 30.0)) -> None:
        self.client = client
        self.bucket = client.bucket(bucket)
        self.timeout = timeout

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        ref = check_address(bucket, location)
        name = object_name(bucket, location)
        try:
            # The metadata first, then every range of that generation: a replaced object fails the read.
            # No retry of the library's own (up to 2 minutes): a failed copy is retried with backoff.
            found = self.bucket.get_blob(name, timeout=self.timeout, retry=None)
        except GCS_ERRORS as exc:
            raise _translate(exc, ref) from None
        if found is None:
            raise FileMissing("no such object", ref)
        pinned = self.bucket.blob(name, generation=found.generation)
        reader = pinned.open("rb", chunk_size=chunk_size, timeout=self.timeout, retry=None)

        def chunks() -> Iterator[bytes]:
            try:
                while block := reader.read(chunk_size):
                    yield block
            except gex.NotFound:
                raise StorageUnavailable("replaced or deleted while being read", ref) from None
            except GCS_ERRORS as exc:
                raise _translate(exc, ref) from None

        return Blob(int(found.size or 0), chunks(), reader.close, version=_version(found))

    def stat(self, bucket: str, location: str) -> str:
        ref = check_address(bucket, location)
        try:
            found = self.bucket.get_blob(object_name(bucket, location), timeout=self.timeout, retry=None)
        except GCS_ERRORS as exc:
            raise _translate(exc, ref) from None
        if found is None:
            raise FileMissing("no such object", ref)
        return _version(found)

    def put(self, bucket: str, location: str, data: bytes) -> None:
        check_address(bucket, location)
        self.bucket.blob(object_name(bucket, location)).upload_from_string(
            data, content_type="application/octet-stream", timeout=self.timeout
        )

    def check(self) -> str:
        try:
            self.client.get_bucket(self.bucket.name, timeout=self.timeout, retry=None)
        except GCS_ERRORS as exc:
            error = _translate(exc)
            if isinstance(error, FileMissing):
                raise FileMissing(f"bucket {self.bucket.name} does not exist") from None
            raise error from None
        return f"Google Cloud Storage bucket {self.bucket.name}"

    def close(self) -> None:
        self.client.close()


def _version(blob: storage.Blob) -> str:
    return str(blob.etag or blob.generation)


def _translate(exc: Exception, ref: FileRef | None = None) -> StorageError:
    if isinstance(exc, gex.NotFound):
        return FileMissing("not found", ref)
    if isinstance(exc, gex.Forbidden | gex.Unauthorized | gauth.GoogleAuthError):
        return FileForbidden(f"refused by Google Cloud Storage ({type(exc).__name__})", ref)
    if isinstance(exc, gex.BadRequest):
        return InvalidAddress(f"rejected by Google Cloud Storage: {first_line(exc, 120)}", ref)
    return StorageUnavailable(f"{type(exc).__name__}: {first_line(exc)}", ref)
