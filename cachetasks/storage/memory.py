"""Files held in a dict: the storage double for tests.

It keeps the contract of the real backends (the same address rules, errors and streaming)
and counts every open, so a test can tell how often a file was read.
"""

from __future__ import annotations

import collections
import hashlib
import threading

from ..errors import FileMissing
from ..ref import FileRef
from .base import Blob, check_address


class MemoryStorage:
    def __init__(self, files: dict[FileRef, bytes] | None = None) -> None:
        self.files: dict[FileRef, bytes] = dict(files or {})
        self.opens: collections.Counter[FileRef] = collections.Counter()
        self._lock = threading.Lock()

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        ref = check_address(bucket, location)
        with self._lock:
            self.opens[ref] += 1
            data = self.files.get(ref)
        if data is None:
            raise FileMissing("no such file", ref)
        view = memoryview(data)
        chunks = (bytes(view[i : i + chunk_size]) for i in range(0, len(data), chunk_size))
        return Blob(len(data), chunks, lambda: None, version=_version(data))

    def stat(self, bucket: str, location: str) -> str:
        """The version of the file, without counting an open."""
        ref = check_address(bucket, location)
        with self._lock:
            data = self.files.get(ref)
        if data is None:
            raise FileMissing("no such file", ref)
        return _version(data)

    def put(self, bucket: str, location: str, data: bytes) -> None:
        ref = check_address(bucket, location)
        with self._lock:
            self.files[ref] = bytes(data)

    def delete(self, bucket: str, location: str) -> None:
        with self._lock:
            self.files.pop(FileRef(bucket, location), None)

    def check(self) -> str:
        return f"memory ({len(self.files)} files)"

    def close(self) -> None:
        pass


def _version(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()
