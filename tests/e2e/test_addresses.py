"""Where the service reads each ongoing file, and the key it caches it under, end to end."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.ops.demo import LinkedFile, insert_document
from testbed.processes import Processes
from testbed.proxy import S3Proxy
from testbed.servers import wait_until
from tests.support.e2e import backend_settings, put_s3, start_service, wait_for_collects

Start = Callable[[dict[str, str]], Processes]
ONE_BUCKET, PREFIX = "onebucket", "some/prefix"


def _object_path(layout: str, bucket: str, location: str) -> str:
    """The path of (bucket, location)'s object on the S3 server, as the proxy counts it."""
    if layout == "single-bucket":
        return f"/{ONE_BUCKET}/{PREFIX}/{bucket}/{location}"
    return f"/{bucket}/{location}"


@pytest.mark.parametrize("layout", ["bucket-per-kb", "single-bucket"])
def test_uploads_are_read_from_the_kb_bucket_and_file_manager_files_from_their_folder(
    layout: str,
    s3_env: dict[str, str],
    s3: Any,
    s3_proxy: S3Proxy,
    pg_engine: sa.Engine,
    pg_url: str,
    cache: Cache,
    processes: Start,
) -> None:
    """An upload lives at (kb_id, document.location), a file-manager file at (file.parent_id, file.location)."""
    # Given a running service on this layout, and each file at its real address (with decoys elsewhere)
    settings = {**s3_env, "CACHETASKS_DATABASE_URL": pg_url}
    if layout == "single-bucket":
        settings |= {"CACHETASKS_S3_BUCKET": ONE_BUCKET, "CACHETASKS_S3_PREFIX": PREFIX}
        s3.create_bucket(Bucket=ONE_BUCKET)
    start_service(processes(settings), cache.client)
    kb, upload_folder, manager_folder = (p + uuid.uuid4().hex[:12] for p in ("kb", "folder", "manager"))

    def put(bucket: str, location: str, data: bytes) -> None:
        real_bucket, _, key = _object_path(layout, bucket, location)[1:].partition("/")
        put_s3(s3, real_bucket, key, data)

    put(kb, "uploads/report 1.pdf", b"the upload")
    put(upload_folder, "uploads/report 1.pdf", b"decoy: the upload's folder")
    put(upload_folder, "upload-file-row.pdf", b"decoy: the upload's file row")
    put(manager_folder, "files/notes 2.pdf", b"the file-manager file")
    put(kb, "manager-doc-row.pdf", b"decoy: the file-manager document row")
    # When a knowledge-base upload and a linked file-manager file become ongoing
    with pg_engine.begin() as conn:
        insert_document(
            conn,
            kb_id=kb,
            location="uploads/report 1.pdf",
            file=LinkedFile(parent_id=upload_folder, location="upload-file-row.pdf", source_type="knowledgebase"),
        )
        insert_document(
            conn,
            kb_id=kb,
            location="manager-doc-row.pdf",
            file=LinkedFile(parent_id=manager_folder, location="files/notes 2.pdf", source_type=""),
        )
    # Expect each cached from its real address, under "{bucket}/{location}" of that address
    upload_key, manager_key = f"{kb}/uploads/report 1.pdf", f"{manager_folder}/files/notes 2.pdf"
    wait_until(lambda: cache.client.exists(upload_key, manager_key) == 2, timeout=3, what="both files")
    assert cache.client.get(upload_key) == b"the upload"
    assert cache.client.get(manager_key) == b"the file-manager file"
    wait_for_collects(cache.client, 1)
    assert {path: n for path, n in s3_proxy.gets.items() if n} == {
        _object_path(layout, kb, "uploads/report 1.pdf"): 1,
        _object_path(layout, manager_folder, "files/notes 2.pdf"): 1,
    }
    decoys = [
        f"{upload_folder}/uploads/report 1.pdf",
        f"{upload_folder}/upload-file-row.pdf",
        f"{kb}/manager-doc-row.pdf",
    ]
    assert cache.client.exists(*decoys) == 0


LOCATIONS = [
    "a/b/c/deep file.txt",
    "reports/2026/Q3 résumé.pdf",
    "数据/年度 报告.docx",
    "emoji 📄 and  two spaces.txt",
    "symbols +&=;,@$!'()[] ~%20.txt",
]


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_locations_with_slashes_spaces_and_unicode_are_cached_under_the_same_text(
    backend: str,
    sqlite_engine: sa.Engine,
    cache: Cache,
    processes: Start,
    request: pytest.FixtureRequest,
) -> None:
    """A location is read and cached verbatim, whatever '/', spaces, unicode or URL-special characters it holds."""
    # Given a running service and one file per location
    settings, put = backend_settings(request, backend)
    start_service(processes(settings), cache.client)
    for i, location in enumerate(LOCATIONS):
        put("kb1", location, f"file {i}".encode())
    # When their documents become ongoing
    with sqlite_engine.begin() as conn:
        for location in LOCATIONS:
            insert_document(conn, kb_id="kb1", location=location)
    # Expect every one cached at "kb1/{location}" with its own bytes
    keys = [f"kb1/{location}" for location in LOCATIONS]
    wait_until(lambda: cache.client.exists(*keys) == len(keys), timeout=3, what="every location")
    assert [cache.client.get(key) for key in keys] == [f"file {i}".encode() for i in range(len(LOCATIONS))]
