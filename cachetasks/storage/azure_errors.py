"""Azure Storage's errors, blob and data lake alike, as the project's; and its ETags as versions."""

from __future__ import annotations

from azure.core import exceptions as aex

from ..errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable, first_line
from ..ref import FileRef

INVALID_CODES = {"InvalidResourceName", "InvalidUri", "InvalidInput", "OutOfRangeInput"}
# Errors of the client, not of the file: a connection, a timeout, a body cut short.
TRANSPORT_ERRORS = (aex.ServiceRequestError, aex.ServiceResponseError, aex.IncompleteReadError, OSError)


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
