"""Files in a local folder: `{root}/{bucket}/{location}`, never anything outside root."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..errors import FileMissing, InvalidAddress, StorageUnavailable
from .base import Blob, check_address


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path_of(self, bucket: str, location: str) -> Path:
        """The real path of a file, after symlinks, refusing anything that leaves root."""
        check_address(bucket, location)
        candidate = self.root / bucket / location
        try:
            real = candidate.resolve(strict=True)
        except FileNotFoundError:
            raise FileMissing(bucket, location, "no such file") from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise InvalidAddress(bucket, location, f"cannot resolve: {type(exc).__name__}") from None
        if not real.is_relative_to(self.root):
            raise InvalidAddress(bucket, location, "resolves outside the storage root")
        return real

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        path = self.path_of(bucket, location)
        try:
            # O_NOFOLLOW: the resolved path has no link left; refuse one swapped in since.
            # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise FileMissing(bucket, location, "no such file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidAddress(bucket, location, "is a symlink") from None
            raise StorageUnavailable(bucket, location, f"{type(exc).__name__}: {exc.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise InvalidAddress(bucket, location, "is not a regular file")
        handle = os.fdopen(fd, "rb", buffering=0)

        def chunks() -> Iterator[bytes]:
            while block := handle.read(chunk_size):
                yield block

        return Blob(info.st_size, chunks(), handle.close)

    def check(self) -> str:
        if not self.root.is_dir():
            raise StorageUnavailable("", "", f"storage root {self.root} is not a directory")
        return f"local folder {self.root}"
