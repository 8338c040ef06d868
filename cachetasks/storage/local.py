"""Files in a local folder: `{root}/{bucket}/{location}`, never anything outside root."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable
from ..ref import FileRef
from .base import Blob, check_address

MISSING = {errno.ENOENT, errno.ENOTDIR}
FORBIDDEN = {errno.EACCES, errno.EPERM}
INVALID = {errno.ELOOP, errno.ENAMETOOLONG}


def os_error(exc: OSError, ref: FileRef) -> StorageError:
    """What an OS error reading `ref` means: missing, forbidden, invalid, or (EIO, ESTALE, ...) worth another try."""
    reason = f"{type(exc).__name__}: {exc.strerror or exc}"
    if exc.errno in MISSING:
        return FileMissing("no such file", ref)
    if exc.errno in FORBIDDEN:
        return FileForbidden(reason, ref)
    if exc.errno in INVALID:
        return InvalidAddress(f"cannot resolve: {reason}", ref)
    return StorageUnavailable(f"{errno.errorcode.get(exc.errno or 0, '')} {reason}".strip(), ref)


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path_of(self, bucket: str, location: str) -> Path:
        """The real path of a file, after symlinks, refusing anything that leaves root."""
        ref = check_address(bucket, location)
        candidate = self.root / bucket / location
        try:
            real = candidate.resolve(strict=True)
        except OSError as exc:
            raise os_error(exc, ref) from None
        except RuntimeError:  # a symlink loop, on Pythons that do not raise ELOOP
            raise InvalidAddress("cannot resolve: a symlink loop", ref) from None
        if not real.is_relative_to(self.root):
            raise InvalidAddress("resolves outside the storage root", ref)
        return real

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        path = self.path_of(bucket, location)
        ref = FileRef(bucket, location)
        try:
            # O_NOFOLLOW: the resolved path has no link left; refuse one swapped in since.
            # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidAddress("is a symlink", ref) from None
            raise os_error(exc, ref) from None
        try:
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise os_error(exc, ref) from None
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise InvalidAddress("is not a regular file", ref)
        handle = os.fdopen(fd, "rb", buffering=0)
        version = _version(info)

        def chunks() -> Iterator[bytes]:
            while True:
                try:
                    block = handle.read(chunk_size)
                except OSError as exc:
                    raise os_error(exc, ref) from None
                if not block:
                    break
                yield block
                del block  # not held while the next one is read
            # Rewritten in place while it was read (a rename leaves this file as it was): what was
            # read may mix two contents, so it must not be published.
            if _version(os.fstat(handle.fileno())) != version:
                raise StorageUnavailable("changed while it was read", ref)

        return Blob(info.st_size, chunks(), handle.close, version=_version(info))

    def stat(self, bucket: str, location: str) -> str:
        path = self.path_of(bucket, location)
        ref = FileRef(bucket, location)
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError as exc:
            raise os_error(exc, ref) from None
        if stat.S_ISLNK(info.st_mode):  # swapped in since the path was resolved, as `open` refuses it
            raise InvalidAddress("is a symlink", ref)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidAddress("is not a regular file", ref)
        return _version(info)

    def put(self, bucket: str, location: str, data: bytes) -> None:
        ref = check_address(bucket, location)
        path = self.root / bucket / location
        if not path.parent.resolve().is_relative_to(self.root):  # a parent folder linked elsewhere
            raise InvalidAddress("resolves outside the storage root", ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def check(self) -> str:
        if not self.root.is_dir():
            raise StorageUnavailable(f"storage root {self.root} is not a directory")
        return f"local folder {self.root}"

    def close(self) -> None:
        pass  # nothing held between reads


def _version(info: os.stat_result) -> str:
    """Size and modification time: what tells one content of a file from another without reading it."""
    return f"{info.st_size}-{info.st_mtime_ns}"
