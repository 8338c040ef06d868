"""The storage protocol: open a (bucket, location) and stream its bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Protocol

from ..errors import InvalidAddress
from ..ref import FileRef, address_problem


class Blob:
    """An open object: its size, its version, and a stream of its bytes. Close it (or use `with`).

    `size` is the number of bytes the stream yields, unless `exact` is False: a blob that decrypts
    announces an upper bound, at most 15 bytes over (the padding is known only at the end of the
    stream). `version` tells one content of the object from another without reading it: the ETag
    where storage gives one, else size and modification time; empty when storage knows neither.
    """

    def __init__(
        self,
        size: int,
        chunks: Iterator[bytes],
        close: Callable[[], None],
        *,
        version: str = "",
        exact: bool = True,
    ) -> None:
        self.size = size
        self.chunks = chunks
        self.version = version
        self.exact = exact
        self._close = close

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Blob:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Storage(Protocol):
    """Where the files live. Errors are the project's: FileMissing, FileForbidden, InvalidAddress,
    StorageUnavailable."""

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob: ...

    def put(self, bucket: str, location: str, data: bytes) -> None:
        """Write `data` where `open(bucket, location)` reads it: for demos, tests and benchmarks only."""
        ...

    def stat(self, bucket: str, location: str) -> str:
        """The version `open` would give the object (`Blob.version`), without reading it.

        Raises what `open` raises: FileMissing, FileForbidden, InvalidAddress, StorageUnavailable.
        """
        ...

    def check(self) -> str:
        """Raise StorageError when storage cannot be reached; return a one-line description."""
        ...

    def close(self) -> None:
        """Release the backend's connections."""
        ...


def version_of(storage: Storage, bucket: str, location: str) -> str:
    """The object's version: from `stat` where the backend has one, else from opening it unread."""
    stat = getattr(storage, "stat", None)
    if stat is not None:
        return str(stat(bucket, location))
    with storage.open(bucket, location, chunk_size=1) as blob:
        return blob.version


def check_address(bucket: str, location: str) -> FileRef:
    """The file at (bucket, location); InvalidAddress for an address no backend may read."""
    ref = FileRef(bucket, location)
    problem = address_problem(bucket, location)
    if problem:
        raise InvalidAddress(problem, ref)
    return ref


def rechunk(blocks: Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    """The bytes of `blocks` in chunks of exactly `chunk_size` (the last one shorter), holding at most
    one chunk and one block: client libraries read in sizes of their own."""
    pending = bytearray()
    for block in blocks:
        pending += block
        while len(pending) >= chunk_size:
            yield bytes(pending[:chunk_size])
            del pending[:chunk_size]
    if pending:
        yield bytes(pending)
