"""The Data Lake backend (`azure_spn`) up to the wire: sign-in, reads by range, and the service's answers.

No emulator offers Data Lake's DFS endpoint or Entra ID, so these run against the HTTPS
stand-in of `testbed/datalake.py`, which answers as Microsoft's REST reference documents. The
contract shared with every backend is in `test_storage.py`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from cachetasks.errors import FileForbidden, FileMissing, StorageUnavailable
from cachetasks.settings import Settings
from cachetasks.storage import azure_datalake
from cachetasks.storage.azure_datalake import AzureDataLakeStorage
from testbed.datalake import CLIENT_ID, TENANT_ID, DataLakeStub, Failure, Read
from tests.adapters.test_storage import datalake_storage

CHUNK = 4000  # CACHETASKS_CHUNK_BYTES of datalake_storage
DATA = bytes(range(256)) * 40  # 10,240 bytes: three ranges


@pytest.fixture
def file_system(datalake: DataLakeStub) -> Iterator[str]:
    """A file system of this test's own; failures it queued and left unused go with it."""
    name = "fs" + uuid.uuid4().hex[:12]
    datalake.create_file_system(name)
    yield name
    datalake.forget_failures()


@pytest.fixture
def storage(datalake: DataLakeStub, file_system: str) -> Iterator[AzureDataLakeStorage]:
    """The backend, with kb1/doc.pdf in its file system."""
    made = datalake_storage(datalake, file_system)
    made.put("kb1", "doc.pdf", DATA)
    yield made
    made.close()


def read_all(storage: AzureDataLakeStorage) -> bytes:
    with storage.open("kb1", "doc.pdf", chunk_size=CHUNK) as blob:
        return b"".join(blob.chunks)


def test_the_client_signs_in_once_and_reads_in_ranges_pinned_to_the_first_etag(
    datalake: DataLakeStub, file_system: str
) -> None:
    """One token from Entra ID serves every request; a file is read in chunk-sized ranges, the later ones If-Match."""
    # Given a new client, and a file placed by create, append and flush
    tokens = datalake.token_requests
    storage = datalake_storage(datalake, file_system)
    storage.put("kb1", "doc.pdf", DATA)
    version = storage.stat("kb1", "doc.pdf")
    reads = len(datalake.reads)
    # When
    data = read_all(storage)
    storage.close()
    # Expect
    assert data == DATA
    assert datalake.token_requests - tokens == 1
    path, etag = "kb1/doc.pdf", f'"{version}"'
    assert datalake.reads[reads:] == [
        Read(path, "bytes=0-3999", ""),
        Read(path, "bytes=4000-7999", etag),
        Read(path, "bytes=8000-10239", etag),
    ]


def test_a_file_replaced_while_it_is_read_fails_the_read_instead_of_mixing_two_contents(
    storage: AzureDataLakeStorage,
) -> None:
    """The ranges after the first are conditional on its ETag: a replaced file is StorageUnavailable, retried later."""
    # Given a read under way
    with storage.open("kb1", "doc.pdf", chunk_size=CHUNK) as blob:
        first = next(blob.chunks)
        # When the file is replaced
        storage.put("kb1", "doc.pdf", b"the new content" * 1000)
        # Expect
        with pytest.raises(StorageUnavailable, match="ConditionNotMet"):
            list(blob.chunks)
    assert first == DATA[:CHUNK]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_is_file_forbidden_at_once(
    datalake: DataLakeStub, storage: AzureDataLakeStorage, status: int
) -> None:
    """A 401 or 403 (no permission on the path) is FileForbidden for open and stat, each after one request."""
    # Given
    datalake.fail_next(2, Failure(status, "AuthorizationPermissionMismatch", "kb1/doc.pdf"))
    sent = datalake.storage_requests
    # When
    with pytest.raises(FileForbidden):
        storage.open("kb1", "doc.pdf", chunk_size=CHUNK)
    with pytest.raises(FileForbidden):
        storage.stat("kb1", "doc.pdf")
    # Expect
    assert datalake.storage_requests - sent == 2


def test_a_5xx_that_persists_is_storage_unavailable_after_one_quick_retry(
    datalake: DataLakeStub, storage: AzureDataLakeStorage
) -> None:
    """Server Busy on every attempt is StorageUnavailable after one retry within 2 s, not the SDK's 18 s wait."""
    # Given
    datalake.fail_next(3, Failure(503, "ServerBusy", "kb1/doc.pdf"))
    sent, started = datalake.storage_requests, time.monotonic()
    # When
    with pytest.raises(StorageUnavailable, match="503 ServerBusy"):
        storage.open("kb1", "doc.pdf", chunk_size=CHUNK)
    # Expect
    assert datalake.storage_requests - sent == 2
    assert time.monotonic() - started < 5  # the SDK alone would wait 15 to 21 s


def test_a_single_5xx_is_absorbed_by_the_retry(datalake: DataLakeStub, storage: AzureDataLakeStorage) -> None:
    """One Internal Server Error costs one more request, not a failed copy."""
    # Given
    datalake.fail_next(1, Failure(500, "InternalError", "kb1/doc.pdf"))
    # When
    data = read_all(storage)
    # Expect
    assert data == DATA


def test_a_wrong_secret_is_file_forbidden_and_never_shown(
    datalake: DataLakeStub, file_system: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Entra ID refusing the service principal is FileForbidden, not retried by copies; the secret is in no message."""
    # Given
    secret = "wrong-secret-" + uuid.uuid4().hex
    storage = datalake_storage(datalake, file_system, CACHETASKS_AZURE_CLIENT_SECRET=secret)
    # When
    with caplog.at_level(logging.DEBUG), pytest.raises(FileForbidden) as caught:
        storage.open("kb1", "doc.pdf", chunk_size=CHUNK)
    storage.close()
    # Expect
    assert "Invalid client secret" in caplog.text
    assert secret not in f"{caught.value} {caplog.text}"


def test_a_server_whose_certificate_is_not_trusted_gets_no_secret(datalake: DataLakeStub, file_system: str) -> None:
    """Signing in at a server with an untrusted certificate fails the handshake: StorageUnavailable, nothing sent."""
    # Given a client that trusts only the usual authorities
    settings = Settings.from_env(
        {
            "CACHETASKS_STORAGE": "azure_spn",
            "CACHETASKS_AZURE_ACCOUNT_URL": datalake.url,
            "CACHETASKS_AZURE_CONTAINER_NAME": file_system,
            "CACHETASKS_AZURE_TENANT_ID": TENANT_ID,
            "CACHETASKS_AZURE_CLIENT_ID": CLIENT_ID,
            "CACHETASKS_AZURE_CLIENT_SECRET": "would-be-sent-" + uuid.uuid4().hex,
        }
    )
    storage = AzureDataLakeStorage(azure_datalake.make_client(settings, authority=datalake.authority))
    tokens = datalake.token_requests
    # When
    with pytest.raises(StorageUnavailable, match="cannot sign in"):
        storage.open("kb1", "doc.pdf", chunk_size=CHUNK)
    storage.close()
    # Expect
    assert datalake.token_requests == tokens


def test_a_missing_file_system_is_file_missing_naming_it(datalake: DataLakeStub) -> None:
    """check() and open() on a file system that does not exist are FileMissing, check naming the file system."""
    # Given
    storage = datalake_storage(datalake, "no-such-file-system")
    # When
    with pytest.raises(FileMissing) as checking:
        storage.check()
    with pytest.raises(FileMissing) as opening:
        storage.open("kb1", "doc.pdf", chunk_size=CHUNK)
    storage.close()
    # Expect
    assert "no-such-file-system" in str(checking.value)
    assert opening.value.reason == "not found (ContainerNotFound)"
