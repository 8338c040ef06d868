"""Apache OpenDAL, as RAGFlow's `OPENDAL` connector keeps files: the path `"{bucket}/{location}"`.

Any scheme OpenDAL's Python package ships works, given its options. RAGFlow's default is
`mysql`: the files are rows of a table (`opendal_storage`) in RAGFlow's own database, a key
and a LONGBLOB; OpenDAL reads such a value whole, so a worker holds the whole file while it
copies it (other schemes stream in chunks).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import opendal
from opendal import exceptions as dal

from ..errors import ConfigError, FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable
from ..ref import FileRef
from .base import Blob, check_address

if TYPE_CHECKING:
    from ..settings import Settings

_INVALID = (dal.IsADirectory, dal.NotADirectory, dal.IsSameFile)
_ERRORS = (
    dal.NotFound,
    dal.PermissionDenied,
    *_INVALID,
    dal.Unexpected,
    dal.RateLimited,
    dal.Unsupported,
    dal.ConfigInvalid,
    dal.ConditionNotMatch,
    dal.Conflict,
    dal.AlreadyExists,
    dal.RangeNotSatisfied,
    OSError,
)


def make_operator(settings: Settings) -> opendal.Operator:
    """The operator for the settings' scheme and options, with the storage timeouts on every call."""
    try:
        operator = opendal.Operator(settings.opendal_scheme, **dict(settings.opendal_options))
    except (dal.ConfigInvalid, dal.Unsupported) as exc:
        # OpenDAL's message names the scheme and the option at fault, never an option's value.
        raise ConfigError(f"CACHETASKS_OPENDAL_SCHEME/OPTIONS: {str(exc).splitlines()[0]}") from None
    timeout = opendal.layers.TimeoutLayer(timeout=settings.s3_connect_timeout, io_timeout=settings.s3_read_timeout)
    return operator.layer(timeout)


def path_of(bucket: str, location: str) -> str:
    return f"{bucket}/{location}"


class OpenDalStorage:
    def __init__(self, operator: opendal.Operator, scheme: str) -> None:
        self.operator = operator
        self.scheme = scheme

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        ref = check_address(bucket, location)
        path = path_of(bucket, location)
        try:
            meta = self.operator.stat(path)
            if meta.is_dir:
                raise InvalidAddress("is a directory", ref)
            reader = self.operator.open(path, "rb")
        except _ERRORS as exc:
            raise _translate(exc, ref) from None
        size = int(meta.content_length or 0)

        def chunks() -> Iterator[bytes]:
            try:
                while block := reader.read(chunk_size):
                    yield bytes(block)
            except _ERRORS as exc:
                raise _translate(exc, ref) from None

        return Blob(size, chunks(), reader.close, version=_version(meta, size))

    def stat(self, bucket: str, location: str) -> str:
        ref = check_address(bucket, location)
        try:
            meta = self.operator.stat(path_of(bucket, location))
        except _ERRORS as exc:
            raise _translate(exc, ref) from None
        if meta.is_dir:
            raise InvalidAddress("is a directory", ref)
        return _version(meta, int(meta.content_length or 0))

    def put(self, bucket: str, location: str, data: bytes) -> None:
        check_address(bucket, location)
        self.operator.write(path_of(bucket, location), data)

    def check(self) -> str:
        try:
            self.operator.exists("cachetasks-check")  # any answer, found or not, means storage is reachable
        except _ERRORS as exc:
            raise _translate(exc) from None
        return f"OpenDAL {self.scheme}"

    def close(self) -> None:
        pass  # the operator holds a pool that goes with it


def _version(meta: opendal.types.Metadata, size: int) -> str:
    """The ETag or version where the service keeps one; else size and modification time, or size alone
    (the `mysql` scheme keeps neither)."""
    if meta.etag or meta.version:
        return str(meta.etag or meta.version).strip('"')
    if meta.last_modified is not None:
        return f"{size}-{int(meta.last_modified.timestamp() * 1_000_000)}"
    return str(size)


def _translate(exc: Exception, ref: FileRef | None = None) -> StorageError:
    kind = type(exc).__name__
    if isinstance(exc, dal.NotFound):
        return FileMissing("not found", ref)
    if isinstance(exc, dal.PermissionDenied):
        return FileForbidden("refused by storage (PermissionDenied)", ref)
    if isinstance(exc, _INVALID):
        return InvalidAddress(f"rejected by storage ({kind})", ref)
    # OpenDAL's first line names the operation and the kind of failure, not the options.
    return StorageUnavailable(f"{kind}: {str(exc).splitlines()[0][:200] if str(exc) else kind}", ref)
