"""The storage contract, run against a local folder, an S3 server in both layouts, and the in-memory double."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cachetasks.errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable
from cachetasks.ref import FileRef
from cachetasks.settings import Settings
from cachetasks.storage import LocalStorage, MemoryStorage, Storage
from cachetasks.storage.s3 import S3Storage, make_client
from testbed.processes import REPO
from testbed.proxy import Fault, S3Proxy
from testbed.servers import S3Server, free_port

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
SHARED_BUCKET = "ragflow-shared"
PREFIX = "/tenants/t1/"  # stripped of its slashes by S3Storage
CHUNK = 1000


@dataclass
class Backend:
    """A storage under test, a way to put a file where it will look, and a count of requests it sent."""

    storage: Storage
    put: Callable[[str, str, bytes], None]
    requests: Callable[[], int]


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


@pytest.fixture(params=["local", "s3", "s3 shared bucket", "memory"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each storage backend in turn."""
    fixture = f"{request.param.replace(' shared bucket', '_shared')}_backend"
    made: Backend = request.getfixturevalue(fixture)
    return made


def test_the_shared_layout_puts_the_logical_bucket_and_prefix_in_the_key(s3: Any, s3_shared_backend: Backend) -> None:
    """`put` and `open` agree on `{prefix}/{bucket}/{location}` inside the one real bucket."""
    # When
    s3_shared_backend.put("kb1", "dir/doc.pdf", b"here")
    # Expect
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=SHARED_BUCKET)["Contents"]]
    assert keys == [f"{PREFIX.strip('/')}/kb1/dir/doc.pdf"]


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
    assert size == len(data)
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


def test_an_empty_file_has_size_zero_and_no_chunks(backend: Backend) -> None:
    """A 0-byte object opens fine and yields nothing, not an empty chunk."""
    # Given
    backend.put("kb1", "empty.txt", b"")
    # When
    size, chunks = read(backend.storage, "kb1", "empty.txt")
    # Expect
    assert (size, chunks) == (0, [])


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
    """No such object, or no such bucket, is FileMissing: permanent, never retried."""
    # Given
    backend.put("kb1", "doc.pdf", b"here")
    # When
    with pytest.raises(FileMissing) as caught:
        backend.storage.open(bucket, location, chunk_size=CHUNK)
    # Expect
    assert caught.value.ref == FileRef(bucket, location)


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
    """Traversal, absolute, NUL, empty or over-long addresses are InvalidAddress and reach no file or server."""
    # Given a file where a careless backend would end up
    backend.put("kb2", "doc.pdf", b"secret")
    sent = backend.requests()
    # When
    with pytest.raises(InvalidAddress):
        backend.storage.open(bucket, location, chunk_size=CHUNK)
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
    """A location naming a folder is InvalidAddress, not an empty file or an OS error."""
    (root / "kb1" / "folder.pdf").mkdir()
    with pytest.raises(InvalidAddress):
        LocalStorage(root).open("kb1", "folder.pdf", chunk_size=CHUNK)


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
