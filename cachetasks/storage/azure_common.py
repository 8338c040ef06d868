"""What Azure Storage's blob and data lake clients share: their errors as the project's, ETags as
versions, and downloads as blobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from azure.core import exceptions as aex

from ..errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable, first_line
from ..ref import FileRef
from .base import Blob, rechunk

INVALID_CODES = {"InvalidResourceName", "InvalidUri", "InvalidInput", "OutOfRangeInput"}
# Errors of the client, not of the file: a connection, a timeout, a body cut short.
TRANSPORT_ERRORS = (aex.ServiceRequestError, aex.ServiceResponseError, aex.IncompleteReadError, OSError)
AZURE_ERRORS = (aex.AzureError, *TRANSPORT_ERRORS)


def translate(exc: Exception, ref: FileRef | None = None) -> StorageError:
    """The project's error for an exception an Azure client raised; StorageUnavailable for the unknown."""
    if isinstance(exc, aex.ResourceNotFoundError):
        return FileMissing(f"not found ({_code(exc)})", ref)
    if isinstance(exc, aex.ClientAuthenticationError):
        if isinstance(exc.__cause__, TRANSPORT_ERRORS):  # signing in failed on the way, not by a refusal
            return StorageUnavailable(f"cannot sign in: {type(exc.__cause__).__name__}", ref)
        return FileForbidden(f"refused by Azure ({_code(exc)})", ref)
    if isinstance(exc, aex.HttpResponseError):
        code = _code(exc)
        if exc.status_code == 403:
            return FileForbidden(f"refused by Azure ({code})", ref)
        if exc.status_code == 400 and code in INVALID_CODES:
            return InvalidAddress(f"rejected by Azure: {code}", ref)
        return StorageUnavailable(f"Azure error {exc.status_code} {code}", ref)
    return StorageUnavailable(f"{type(exc).__name__}: {first_line(exc)}", ref)


def _code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None) or getattr(exc, "status_code", None) or type(exc).__name__
    return str(getattr(code, "value", code))  # StorageErrorCode.BLOB_NOT_FOUND is "BlobNotFound" on the wire


def version_of(etag: str | None) -> str:
    """An object's version: its ETag without the quotes."""
    return str(etag or "").strip('"')


def downloaded(download: Callable[[], Any], ref: FileRef, chunk_size: int) -> Blob:
    """A blob over what `download` starts (a blob's or a data lake file's downloader): its size, its
    ETag as version, and its chunks re-cut to `chunk_size`, every error translated."""
    try:
        downloader = download()
    except AZURE_ERRORS as exc:
        raise translate(exc, ref) from None

    def chunks() -> Iterator[bytes]:
        try:
            yield from rechunk(downloader.chunks(), chunk_size)
        except AZURE_ERRORS as exc:
            raise translate(exc, ref) from None

    return Blob(downloader.size, chunks(), lambda: None, version=version_of(downloader.properties.etag))


def etag_version(properties: Callable[[], Any], ref: FileRef) -> str:
    """The version of the object whose `properties` (a blob's or a file's) this reads, errors translated."""
    try:
        return version_of(properties().etag)
    except AZURE_ERRORS as exc:
        raise translate(exc, ref) from None
