"""The storage contract, run against every backend: a local folder, an S3 server in several of RAGFlow's
layouts, Azurite (Azure Blob with a SAS token), Data Lake with a service principal against its HTTPS
stand-in (no emulator exists), the GCS emulator, OpenDAL over a folder and over MariaDB (RAGFlow's
`mysql` scheme), RAGFlow's encryption over a folder, and the in-memory double."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymysql
import pytest
from azure.storage.blob import ContainerClient

from cachetasks.errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable
from cachetasks.ref import FileRef
from cachetasks.settings import Settings
from cachetasks.storage import LocalStorage, MemoryStorage, Storage, azure_blob, azure_datalake, gcs, opendal_store
from cachetasks.storage.encrypted import EncryptedStorage
from cachetasks.storage.layouts import S3Layout
from cachetasks.storage.s3 import S3Storage, make_client
from testbed.datalake import CLIENT_ID, CLIENT_SECRET, TENANT_ID, DataLakeStub
from testbed.processes import REPO
from testbed.proxy import Fault, S3Proxy
from testbed.servers import S3Server, free_port
from testbed.storage_servers import AzuriteServer, GcsEmulator

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
SHARED_BUCKET = "ragflow-shared"
PREFIX = "tenants/t1"
CHUNK = 1000
# The table RAGFlow's OpenDAL connector creates for the `mysql` scheme (rag/utils/opendal_conn.py).
RAGFLOW_OPENDAL_TABLE = """CREATE TABLE IF NOT EXISTS `{}` (
    `key` VARCHAR(255) PRIMARY KEY,
    `value` LONGBLOB,
    `created_at` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    `updated_at` TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
)"""


def _mysql_args(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {"host": parts.hostname, "port": parts.port, "user": parts.username, "database": parts.path.strip("/")}


@dataclass
class Backend:
    """A storage under test, a way to put a file where it will look, and a count of requests it sent."""

    storage: Storage
    put: Callable[[str, str, bytes], None]
    requests: Callable[[], int]
    size_slack: int = 0  # how many bytes more than the file a blob may announce (a decrypting one: 15)


@contextlib.contextmanager
def s3_client(endpoint: str, **env: str) -> Iterator[Any]:
    """The service's own S3 client for `endpoint`, built from settings as the worker builds it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in AWS.items():
            monkeypatch.setenv(name, value)  # read once, when the client is made
        client = make_client(_s3_settings(endpoint, **env))
    try:
        yield client
    finally:
        client.close()


def _s3_settings(endpoint: str, **env: str) -> Settings:
    return Settings.from_env(
        {
            "CACHETASKS_STORAGE": "s3",
            "CACHETASKS_S3_ENDPOINT_URL": endpoint,
            "CACHETASKS_S3_CONNECT_TIMEOUT": "2",
            "CACHETASKS_S3_READ_TIMEOUT": "5",
            **env,
        }
    )


@pytest.fixture(scope="module")
def service_client(s3_server: S3Server) -> Iterator[tuple[Any, Callable[[], int]]]:
    """One client for the module (making one takes a while), and the number of requests it has sent."""
    sent = [0]

    def count(**_: object) -> None:
        sent[0] += 1

    with s3_client(s3_server.url) as client:
        client.meta.events.register("before-send.s3", count)
        yield client, lambda: sent[0]


@pytest.fixture
def local_backend(tmp_path: Path) -> Backend:
    """A folder per test: files at `{root}/{bucket}/{location}`."""
    storage = LocalStorage(tmp_path / "storage")
    storage.root.mkdir()
    return Backend(storage, storage.put, lambda: 0)


@pytest.fixture
def s3_backend(s3: Any, service_client: tuple[Any, Callable[[], int]]) -> Backend:
    """Bucket-per-kb layout, as RAGFlow's MinIO: bucket = kb_id, object key = location.

    Files are put through another client of the same layout, so that only reads are counted.
    """
    client, requests = service_client
    return Backend(S3Storage(client), S3Storage(s3).put, requests)


@pytest.fixture
def s3_shared_backend(s3: Any, service_client: tuple[Any, Callable[[], int]]) -> Backend:
    """Single-bucket layout: objects at `{prefix}/{bucket}/{location}` in one bucket."""
    s3.create_bucket(Bucket=SHARED_BUCKET)
    client, requests = service_client
    return Backend(
        S3Storage(client, bucket=SHARED_BUCKET, prefix=PREFIX),
        S3Storage(s3, bucket=SHARED_BUCKET, prefix=PREFIX).put,
        requests,
    )


@pytest.fixture
def memory_backend() -> Backend:
    """The in-memory double the direct tests of the copy use."""
    storage = MemoryStorage()
    return Backend(storage, storage.put, lambda: sum(storage.opens.values()))


@pytest.fixture
def s3_aws_prefix_backend(s3: Any, service_client: tuple[Any, Callable[[], int]]) -> Backend:
    """AWS S3's layout with a prefix and no default bucket: bucket = kb_id, key `{prefix}/{kb_id}/{location}`."""
    client, requests = service_client
    layout = S3Layout("aws_s3", None, PREFIX)
    return Backend(S3Storage(client, layout=layout), S3Storage(s3, layout=layout).put, requests)


@pytest.fixture
def azure_sas_backend(azurite: AzuriteServer) -> Iterator[Backend]:
    """A container of Azurite's read through a SAS token; blobs `{bucket}/{location}`."""
    container = "c" + uuid.uuid4().hex[:12]
    url = azurite.create_container(container)
    sent = [0]

    def count(_: object) -> None:
        sent[0] += 1

    settings = Settings.from_env(
        {
            "CACHETASKS_STORAGE": "azure_sas",
            "CACHETASKS_AZURE_CONTAINER_URL": url,
            "CACHETASKS_AZURE_SAS_TOKEN": azurite.container_sas(container),
            "CACHETASKS_CHUNK_BYTES": "4000",  # several requests per file
        }
    )
    client = ContainerClient.from_container_url(
        f"{url}?{settings.azure_sas_token}", raw_request_hook=count, **azure_blob.client_options(settings)
    )
    storage = azure_blob.AzureBlobStorage(client)
    writer = azure_blob.AzureBlobStorage(azure_blob.make_client(settings))
    yield Backend(storage, writer.put, lambda: sent[0])
    storage.close()
    writer.close()


def datalake_storage(datalake: DataLakeStub, file_system: str, **env: str) -> azure_datalake.AzureDataLakeStorage:
    """The service's Data Lake backend for a file system of the stand-in, signing in at the stand-in."""
    settings = Settings.from_env(
        {
            "CACHETASKS_STORAGE": "azure_spn",
            "CACHETASKS_AZURE_ACCOUNT_URL": datalake.url,
            "CACHETASKS_AZURE_CONTAINER_NAME": file_system,
            "CACHETASKS_AZURE_TENANT_ID": TENANT_ID,
            "CACHETASKS_AZURE_CLIENT_ID": CLIENT_ID,
            "CACHETASKS_AZURE_CLIENT_SECRET": CLIENT_SECRET,
            "CACHETASKS_CHUNK_BYTES": "4000",  # several ranged reads per file
            **env,
        }
    )
    client = azure_datalake.make_client(settings, authority=datalake.authority, connection_verify=datalake.ca_file)
    return azure_datalake.AzureDataLakeStorage(client)


@pytest.fixture
def azure_spn_backend(datalake: DataLakeStub) -> Iterator[Backend]:
    """A file system of the Data Lake stand-in, read with a service principal; paths `{bucket}/{location}`.

    Files are placed through the backend's own `put` (create, append, flush, as RAGFlow's connector writes).
    """
    file_system = "fs" + uuid.uuid4().hex[:12]
    datalake.create_file_system(file_system)
    storage = datalake_storage(datalake, file_system)
    yield Backend(storage, storage.put, lambda: datalake.storage_requests)
    storage.close()


@pytest.fixture
def gcs_backend(gcs_emulator: GcsEmulator) -> Iterator[Backend]:
    """A bucket of the GCS emulator of this test's own; objects `{bucket}/{location}`."""
    client = gcs.make_client()
    bucket = client.create_bucket("b" + uuid.uuid4().hex[:12])
    sent = [0]

    def count(response: object, *args: object, **kwargs: object) -> None:
        sent[0] += 1

    client._http.hooks["response"].append(count)  # the session every request of this client goes through
    storage = gcs.GcsStorage(client, bucket.name, timeout=(2, 5))
    yield Backend(storage, storage.put, lambda: sent[0])
    storage.close()


@pytest.fixture
def opendal_fs_backend(tmp_path: Path) -> Backend:
    """OpenDAL's `fs` scheme over a folder: files at `{root}/{bucket}/{location}`."""
    settings = Settings.from_env(
        {
            "CACHETASKS_STORAGE": "opendal",
            "CACHETASKS_OPENDAL_SCHEME": "fs",
            "CACHETASKS_OPENDAL_OPTIONS": json.dumps({"root": str(tmp_path / "dal")}),
        }
    )
    storage = opendal_store.OpenDalStorage(opendal_store.make_operator(settings), "fs")
    return Backend(storage, storage.put, lambda: 0)


@pytest.fixture
def opendal_mysql_backend(mariadb_url: str) -> Iterator[Backend]:
    """OpenDAL's `mysql` scheme, RAGFlow's default: rows of a table of its own in a MariaDB database."""
    table = "opendal_" + uuid.uuid4().hex[:12]
    with pymysql.connect(**_mysql_args(mariadb_url)) as conn, conn.cursor() as cursor:
        cursor.execute(RAGFLOW_OPENDAL_TABLE.format(table))
    settings = Settings.from_env(
        {
            "CACHETASKS_STORAGE": "opendal",
            "CACHETASKS_OPENDAL_SCHEME": "mysql",
            "CACHETASKS_OPENDAL_OPTIONS": json.dumps({"connection_string": mariadb_url, "table": table}),
        }
    )
    storage = opendal_store.OpenDalStorage(opendal_store.make_operator(settings), "mysql")
    yield Backend(storage, storage.put, lambda: 0)
    with pymysql.connect(**_mysql_args(mariadb_url)) as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP TABLE `{table}`")


@pytest.fixture
def encrypted_backend(tmp_path: Path) -> Backend:
    """RAGFlow's AES-256-CBC encryption at rest over a local folder: reads return the decrypted bytes."""
    inner = LocalStorage(tmp_path / "storage")
    inner.root.mkdir()
    storage = EncryptedStorage(inner, algorithm="aes-256-cbc", key="test key")
    return Backend(storage, storage.put, lambda: 0, size_slack=15)


BACKENDS = [
    "local",
    "s3",
    "s3_shared",
    "s3_aws_prefix",
    "azure_sas",
    "azure_spn",
    "gcs",
    "opendal_fs",
    "opendal_mysql",
    "encrypted",
    "memory",
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each storage backend in turn."""
    made: Backend = request.getfixturevalue(f"{request.param}_backend")
    return made


def test_the_shared_layout_puts_the_logical_bucket_and_prefix_in_the_key(s3: Any, s3_shared_backend: Backend) -> None:
    """`put` and `open` agree on `{prefix}/{bucket}/{location}` inside the one real bucket."""
    # When
    s3_shared_backend.put("kb1", "dir/doc.pdf", b"here")
    # Expect
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=SHARED_BUCKET)["Contents"]]
    assert keys == [f"{PREFIX}/kb1/dir/doc.pdf"]


def read(storage: Storage, bucket: str, location: str, chunk_size: int = CHUNK) -> tuple[int, list[bytes]]:
    with storage.open(bucket, location, chunk_size=chunk_size) as blob:
        return blob.size, list(blob.chunks)


# -- the contract: every backend ------------------------------------------------------------------


def test_a_file_streams_its_exact_bytes_in_chunks_of_the_requested_size(backend: Backend) -> None:
    """Every chunk but the last has exactly chunk_size bytes; together they are the file; size is announced."""
    # Given
    data = bytes(range(256)) * 40 + b"\x00tail\xff"
    backend.put("kb1", "doc.pdf", data)
    # When
    size, chunks = read(backend.storage, "kb1", "doc.pdf")
    # Expect
    assert len(data) <= size <= len(data) + backend.size_slack
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [CHUNK] * (len(data) // CHUNK) + [len(data) % CHUNK]


def test_a_blob_has_a_version_that_changes_when_the_object_is_replaced(backend: Backend) -> None:
    """Two uploads to one address differ in version (ETag, or size and mtime); the same content read twice does not."""
    # Given
    backend.put("kb1", "doc.pdf", b"first upload")
    with backend.storage.open("kb1", "doc.pdf", chunk_size=CHUNK) as blob:
        first = blob.version
    with backend.storage.open("kb1", "doc.pdf", chunk_size=CHUNK) as blob:
        again = blob.version
    # When the object is replaced by another of another size
    backend.put("kb1", "doc.pdf", b"second, corrected upload")
    with backend.storage.open("kb1", "doc.pdf", chunk_size=CHUNK) as blob:
        second = blob.version
    # Expect
    assert first and first == again
    assert second and second != first


def test_stat_gives_the_version_open_gives_without_reading_the_object(backend: Backend) -> None:
    """stat equals open's Blob.version, in at most one request and no open; it changes when the object is replaced."""
    # Given
    backend.put("kb1", "doc.pdf", b"first upload")
    with backend.storage.open("kb1", "doc.pdf", chunk_size=CHUNK) as blob:
        opened = blob.version
    sent = backend.requests()
    # When
    first = backend.storage.stat("kb1", "doc.pdf")
    cost = backend.requests() - sent
    backend.put("kb1", "doc.pdf", b"second, corrected upload")
    second = backend.storage.stat("kb1", "doc.pdf")
    # Expect
    assert first == opened and cost <= 1
    assert second != first
    with backend.storage.open("kb1", "doc.pdf", chunk_size=CHUNK) as blob:
        assert blob.version == second


def test_an_empty_file_has_size_zero_and_no_chunks(backend: Backend) -> None:
    """A 0-byte object opens fine and yields nothing, not an empty chunk."""
    # Given
    backend.put("kb1", "empty.txt", b"")
    # When
    size, chunks = read(backend.storage, "kb1", "empty.txt")
    # Expect
    assert size <= backend.size_slack
    assert chunks == []


@pytest.mark.parametrize(
    "location",
    ["reports/2026/q3.pdf", "a file with spaces.docx", "résumé 日本語.txt", "dir with space/ü/x+y=z&.bin"],
)
def test_any_ordinary_name_can_be_read(backend: Backend, location: str) -> None:
    """Folders, spaces, unicode and URL-special characters in a location reach the right file."""
    # Given
    backend.put("kb1", location, location.encode())
    backend.put("kb1", "decoy.txt", b"decoy")
    # When
    _, chunks = read(backend.storage, "kb1", location)
    # Expect
    assert b"".join(chunks) == location.encode()


@pytest.mark.parametrize(("bucket", "location"), [("kb1", "missing.pdf"), ("kb-missing", "doc.pdf")])
def test_a_missing_file_or_bucket_is_file_missing(backend: Backend, bucket: str, location: str) -> None:
    """No such object, or no such bucket, is FileMissing for open and stat: permanent, never retried."""
    # Given
    backend.put("kb1", "doc.pdf", b"here")
    # When
    with pytest.raises(FileMissing) as opening:
        backend.storage.open(bucket, location, chunk_size=CHUNK)
    with pytest.raises(FileMissing) as statting:
        backend.storage.stat(bucket, location)
    # Expect
    assert opening.value.ref == statting.value.ref == FileRef(bucket, location)


@pytest.mark.parametrize(
    ("bucket", "location"),
    [
        ("kb1", "../kb2/doc.pdf"),
        ("..", "kb2/doc.pdf"),
        ("kb1", "/kb2/doc.pdf"),
        ("kb1", "dir/../../kb2/doc.pdf"),
        ("kb1", "..\\kb2\\doc.pdf"),
        ("kb1/../kb2", "doc.pdf"),
        ("kb1", "doc\x00.pdf"),
        ("kb1", ""),
        ("", "doc.pdf"),
        ("kb1", "x" * 1025),
    ],
    ids=repr,
)
def test_an_invalid_address_is_refused_before_any_read(backend: Backend, bucket: str, location: str) -> None:
    """Traversal, absolute, NUL, empty or over-long addresses are InvalidAddress (open, stat), sent to no server."""
    # Given a file where a careless backend would end up
    backend.put("kb2", "doc.pdf", b"secret")
    sent = backend.requests()
    # When
    with pytest.raises(InvalidAddress):
        backend.storage.open(bucket, location, chunk_size=CHUNK)
    with pytest.raises(InvalidAddress):
        backend.storage.stat(bucket, location)
    # Expect
    assert backend.requests() == sent


def test_check_describes_a_reachable_storage(backend: Backend) -> None:
    """check() answers with a one-line description when storage can be reached."""
    # Given
    backend.put("kb1", "doc.pdf", b"x")
    # When
    description = backend.storage.check()
    # Expect
    assert description and "\n" not in description


# -- S3 only ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "error"),
    [("Bad_Bucket!", InvalidAddress), ("Bad_Bucket", FileMissing), ("ab", FileMissing)],
    ids=["refused by the client", "uppercase and underscore", "too short"],
)
def test_a_bucket_name_s3_rejects_is_a_permanent_error(
    s3_backend: Backend, bucket: str, error: type[StorageError]
) -> None:
    """A bucket name S3 cannot have is InvalidAddress or FileMissing: never retried as StorageUnavailable."""
    # When
    with pytest.raises(StorageError) as caught:
        s3_backend.storage.open(bucket, "doc.pdf", chunk_size=CHUNK)
    # Expect
    assert type(caught.value) is error


def test_in_the_shared_layout_a_bad_bucket_name_is_only_a_missing_key(s3_shared_backend: Backend) -> None:
    """With one real bucket, the logical bucket is part of the key: an odd name is simply not found."""
    with pytest.raises(FileMissing):
        s3_shared_backend.storage.open("Bad_Bucket!", "doc.pdf", chunk_size=CHUNK)


def test_a_missing_shared_bucket_is_file_missing(s3: Any, service_client: tuple[Any, Callable[[], int]]) -> None:
    """A configured single bucket that does not exist fails opens and check() with FileMissing, not a retry."""
    storage = S3Storage(service_client[0], bucket="no-such-shared-bucket")
    with pytest.raises(FileMissing):
        storage.open("kb1", "doc.pdf", chunk_size=CHUNK)
    with pytest.raises(FileMissing):
        storage.check()


def test_an_unreachable_s3_server_is_storage_unavailable() -> None:
    """Nothing listening at the endpoint is StorageUnavailable, for open and for check."""
    # Given
    endpoint = f"http://127.0.0.1:{free_port()}"
    with s3_client(endpoint, CACHETASKS_S3_CONNECT_TIMEOUT="0.5") as client:
        storage = S3Storage(client)
        # Expect
        with pytest.raises(StorageUnavailable):
            storage.open("kb1", "doc.pdf", chunk_size=CHUNK)
        with pytest.raises(StorageUnavailable):
            storage.check()


@pytest.fixture
def proxied(s3: Any, s3_proxy: S3Proxy) -> Iterator[S3Storage]:
    """Bucket-per-kb storage talking to the S3 server through the fault-injecting proxy; kb1/doc.pdf exists."""
    s3.create_bucket(Bucket="kb1")
    s3.put_object(Bucket="kb1", Key="doc.pdf", Body=b"x" * (3 * CHUNK))
    with s3_client(s3_proxy.url, CACHETASKS_S3_READ_TIMEOUT="1") as client:
        yield S3Storage(client)


def test_a_503_that_persists_is_storage_unavailable(proxied: S3Storage, s3_proxy: S3Proxy) -> None:
    """Service Unavailable on every attempt is transient: StorageUnavailable, to be retried later."""
    # Given
    s3_proxy.fail_next(10, Fault(status=503, key_contains="doc.pdf"))
    # When
    with pytest.raises(StorageUnavailable):
        proxied.open("kb1", "doc.pdf", chunk_size=CHUNK)
    # Expect
    assert 1 < s3_proxy.gets["/kb1/doc.pdf"] <= 3, "a few quick retries by the client; the task's backoff does the rest"


def test_a_single_503_is_absorbed_by_the_clients_retry(proxied: S3Storage, s3_proxy: S3Proxy) -> None:
    """One 503 costs one more request, not a failed copy."""
    # Given
    s3_proxy.fail_next(1, Fault(status=503, key_contains="doc.pdf"))
    # When
    _, chunks = read(proxied, "kb1", "doc.pdf")
    # Expect
    assert b"".join(chunks) == b"x" * (3 * CHUNK)
    assert s3_proxy.gets["/kb1/doc.pdf"] == 2


@pytest.mark.parametrize("code", ["AccessDenied", "AllAccessDisabled"])
def test_an_object_s3_refuses_us_is_file_forbidden_and_asked_once(
    proxied: S3Storage, s3_proxy: S3Proxy, code: str
) -> None:
    """403 (AccessDenied): permanent until someone changes a policy, so neither retried nor transient."""
    # Given
    s3_proxy.fail_next(10, Fault(status=403, code=code, key_contains="doc.pdf"))
    # When
    with pytest.raises(FileForbidden) as caught:
        proxied.open("kb1", "doc.pdf", chunk_size=CHUNK)
    # Expect
    assert code in str(caught.value)
    assert s3_proxy.gets["/kb1/doc.pdf"] == 1


def test_a_reset_connection_is_storage_unavailable(proxied: S3Storage, s3_proxy: S3Proxy) -> None:
    """A connection reset on every attempt is StorageUnavailable."""
    s3_proxy.fail_next(10, Fault(reset=True, key_contains="doc.pdf"))
    with pytest.raises(StorageUnavailable):
        proxied.open("kb1", "doc.pdf", chunk_size=CHUNK)


def test_a_body_that_stalls_past_the_read_timeout_is_storage_unavailable(proxied: S3Storage, s3_proxy: S3Proxy) -> None:
    """A stream that stops mid-way fails the read with StorageUnavailable, not a raw botocore error."""
    # Given
    s3_proxy.fail_next(1, Fault(stall=3, key_contains="doc.pdf"))
    # When
    with proxied.open("kb1", "doc.pdf", chunk_size=CHUNK) as blob, pytest.raises(StorageUnavailable):
        list(blob.chunks)


# -- local folder only -----------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    (root / "kb1").mkdir(parents=True)
    return root


def test_a_symlink_leading_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    """A link inside the root to a file outside it is InvalidAddress: nothing outside root is read."""
    # Given
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "kb1" / "link.pdf").symlink_to(tmp_path / "secret.txt")
    # Expect
    with pytest.raises(InvalidAddress):
        LocalStorage(root).open("kb1", "link.pdf", chunk_size=CHUNK)


def test_a_bucket_symlinked_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    """A bucket folder that links outside the root is InvalidAddress too."""
    # Given
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "doc.pdf").write_bytes(b"secret")
    (root / "kb2").symlink_to(tmp_path / "elsewhere")
    # Expect
    with pytest.raises(InvalidAddress):
        LocalStorage(root).open("kb2", "doc.pdf", chunk_size=CHUNK)


def test_a_symlink_within_the_root_is_followed(root: Path) -> None:
    """A link to another file inside the root reads that file."""
    # Given
    (root / "kb1" / "real.pdf").write_bytes(b"real bytes")
    (root / "kb1" / "alias.pdf").symlink_to(root / "kb1" / "real.pdf")
    # When
    size, chunks = read(LocalStorage(root), "kb1", "alias.pdf")
    # Expect
    assert (size, b"".join(chunks)) == (10, b"real bytes")


def test_a_symlink_loop_is_refused(root: Path) -> None:
    """A link that points at itself is InvalidAddress, not a hang or a crash."""
    (root / "kb1" / "loop.pdf").symlink_to(root / "kb1" / "loop.pdf")
    with pytest.raises(InvalidAddress):
        LocalStorage(root).open("kb1", "loop.pdf", chunk_size=CHUNK)


def test_a_directory_is_refused(root: Path) -> None:
    """A location naming a folder is InvalidAddress for open and stat, not an empty file or an OS error."""
    (root / "kb1" / "folder.pdf").mkdir()
    with pytest.raises(InvalidAddress):
        LocalStorage(root).open("kb1", "folder.pdf", chunk_size=CHUNK)
    with pytest.raises(InvalidAddress):
        LocalStorage(root).stat("kb1", "folder.pdf")


def test_open_closes_its_file_descriptor(root: Path) -> None:
    """Closing a blob, read or not, releases its file descriptor."""
    # Given
    (root / "kb1" / "doc.pdf").write_bytes(b"x" * 10)
    before = len(os.listdir("/proc/self/fd"))
    # When
    for _ in range(20):
        with LocalStorage(root).open("kb1", "doc.pdf", chunk_size=CHUNK):
            pass
    # Expect
    assert len(os.listdir("/proc/self/fd")) == before


def _without_root_privilege() -> None:
    """In a child about to run: drop the capabilities that let root read any file (no-op for others)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, from the bounding set
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


_OPEN_AND_NAME_THE_ERROR = """
import sys
from cachetasks.storage import LocalStorage
try:
    with LocalStorage(sys.argv[1]).open(sys.argv[2], sys.argv[3], chunk_size=4) as blob:
        b"".join(blob.chunks)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("unreadable", ["file", "bucket folder"])
def test_a_local_file_the_os_refuses_us_is_file_forbidden(root: Path, unreadable: str) -> None:
    """EACCES on the file or on its folder is FileForbidden (permanent, remembered), not invalid nor transient."""
    # Given a file that the service's user may not read, or inside a folder it may not enter
    (root / "kb1" / "doc.pdf").write_bytes(b"secret")
    (root / "kb1" / "doc.pdf" if unreadable == "file" else root / "kb1").chmod(0)
    # When a process without root's override opens it
    try:
        done = subprocess.run(
            [sys.executable, "-c", _OPEN_AND_NAME_THE_ERROR, str(root), "kb1", "doc.pdf"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=_without_root_privilege,
            check=False,
        )
    finally:
        (root / "kb1").chmod(0o755)
        (root / "kb1" / "doc.pdf").chmod(0o644)
    # Expect
    assert done.stdout.split(" ", 1)[0] == "FileForbidden", done.stdout + done.stderr
    assert "kb1/doc.pdf" in done.stdout and "ermission" in done.stdout


def test_check_fails_when_the_root_is_missing(tmp_path: Path) -> None:
    """A storage root that is not a folder makes check() raise StorageUnavailable naming it."""
    with pytest.raises(StorageUnavailable) as caught:
        LocalStorage(tmp_path / "nowhere").check()
    assert "nowhere" in str(caught.value)
