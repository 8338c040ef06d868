"""How an OS error reading a local file is classified: missing, forbidden, invalid, or worth another try."""

from __future__ import annotations

import errno

import pytest

from cachetasks.errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable
from cachetasks.ref import FileRef
from cachetasks.storage.local import os_error

REF = FileRef("kb1", "doc.pdf")
CASES = [
    (errno.ENOENT, FileMissing),
    (errno.ENOTDIR, FileMissing),  # a folder on the path is a file: nothing there either
    (errno.EACCES, FileForbidden),
    (errno.EPERM, FileForbidden),
    (errno.ELOOP, InvalidAddress),
    (errno.ENAMETOOLONG, InvalidAddress),
    (errno.EIO, StorageUnavailable),  # a failing disk or a flaky network filesystem
    (errno.ESTALE, StorageUnavailable),  # an NFS handle gone stale: the next open gets a fresh one
    (errno.ETIMEDOUT, StorageUnavailable),
    (errno.EMFILE, StorageUnavailable),
]


@pytest.mark.parametrize(("code", "expected"), CASES, ids=[errno.errorcode[c] for c, _ in CASES])
def test_each_os_error_becomes_the_storage_error_that_says_what_to_do(code: int, expected: type[StorageError]) -> None:
    """Missing and forbidden are remembered, an invalid address is refused, anything else is retried."""
    # When
    error = os_error(OSError(code, "some reason"), REF)
    # Expect
    assert type(error) is expected
    assert error.ref == REF
    assert expected is FileMissing or "some reason" in str(error)
