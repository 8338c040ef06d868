"""The service as a user runs it: beat and worker processes, real Redis, database and storage."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.cache.keys import TMP
from cachetasks.ops.demo import LinkedFile, insert_document
from testbed.processes import Processes
from testbed.proxy import Fault, S3Proxy
from testbed.servers import wait_until
from tests.support.e2e import put_local, put_s3, start_service, wait_for_collects

Start = Callable[[dict[str, str]], Processes]
MiB = 1024 * 1024


def _upload(folder: str) -> LinkedFile:
    return LinkedFile(parent_id=folder, location="ignored", source_type="knowledgebase")


@pytest.mark.parametrize("database", ["mysql", "postgresql"])
def test_ongoing_document_on_ragflows_database_and_s3_is_cached_with_exact_bytes_and_ttl(
    database: str, s3_env: dict[str, str], s3: Any, cache: Cache, processes: Start, request: pytest.FixtureRequest
) -> None:
    """A document that becomes ongoing in RAGFlow's MySQL or PostgreSQL is in Redis, byte for byte, with a TTL
    of about 720 s, within 3 s."""
    # Given a running beat and worker
    prefix = "pg" if database == "postgresql" else "mysql"
    pg_engine: sa.Engine = request.getfixturevalue(f"{prefix}_engine")
    url: str = request.getfixturevalue(f"{prefix}_url")
    start_service(processes({**s3_env, "CACHETASKS_DATABASE_URL": url}), cache.client)
    kb = "kb" + uuid.uuid4().hex[:16]
    data = bytes(range(256)) * 1000 + b"\x00\xff"
    put_s3(s3, kb, "folder/a file é.pdf", data)
    # When the document becomes ongoing
    with pg_engine.begin() as conn:
        insert_document(conn, kb_id=kb, location="folder/a file é.pdf", file=_upload("folder" + kb))
    # Expect
    key = f"{kb}/folder/a file é.pdf"
    wait_until(lambda: cache.client.exists(key), timeout=3, what=key)
    assert cache.client.get(key) == data
    assert abs(cache.client.ttl(key) - 720) <= 2


def test_ongoing_document_on_sqlite_and_local_folder_is_cached_with_exact_bytes_and_ttl(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """With no database URL and no storage set, the SQLite file and the local folder serve the same way."""
    # Given a running beat and worker on the defaults
    start_service(processes(env), cache.client)
    data = bytes(range(256)) * 300 + b"\x00\xff"
    put_local(env, "kb1", "folder/a file é.pdf", data)
    # When the document becomes ongoing
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="folder/a file é.pdf", file=_upload("folder1"))
    # Expect
    key = "kb1/folder/a file é.pdf"
    wait_until(lambda: cache.client.exists(key), timeout=3, what=key)
    assert cache.client.get(key) == data
    assert abs(cache.client.ttl(key) - 720) <= 2


NOT_ONGOING: dict[str, dict[str, Any]] = {
    "done": {"run": "3"},
    "cancelled": {"run": "2"},
    "failed": {"run": "4"},
    "unstarted": {"run": "0"},
    "invalid": {"status": "0"},
    "virtual": {"doc_type": "virtual"},
    "finished-task": {"progress": (1.0,)},
    "too-old": {"created_ms": int((time.time() - 601) * 1000)},
    "no-task": {"progress": ()},
    "no-location": {"location": None},
    "file-without-location": {"file": LinkedFile(parent_id="folder1", location=None, source_type="")},
}


def test_documents_that_are_not_ongoing_are_never_fetched_nor_cached(
    s3_env: dict[str, str],
    s3: Any,
    s3_proxy: S3Proxy,
    pg_engine: sa.Engine,
    pg_url: str,
    cache: Cache,
    processes: Start,
) -> None:
    """Only running, valid, non-virtual documents with a task unfinished in the last 600 s, and an address, are read."""
    # Given a running service, and a file in storage for every document
    start_service(processes({**s3_env, "CACHETASKS_DATABASE_URL": pg_url}), cache.client)
    kb = "kb" + uuid.uuid4().hex[:16]
    for name in [*NOT_ONGOING, "control"]:
        put_s3(s3, kb, f"{name}.pdf", name.encode())
    # When one ongoing control document and one document of each other kind are recorded together
    with pg_engine.begin() as conn:
        for name, columns in NOT_ONGOING.items():
            ongoing = {"location": f"{name}.pdf", "file": _upload("f" + kb), "created_ms": int(time.time() * 1000)}
            insert_document(conn, kb_id=kb, **{**ongoing, **columns})
        insert_document(conn, kb_id=kb, location="control.pdf", file=_upload("f" + kb))
    wait_until(lambda: cache.client.exists(f"{kb}/control.pdf"), timeout=3, what="the control document")
    wait_for_collects(cache.client, 2)
    # Expect only the control document was read and cached
    assert [key for key in cache.client.scan_iter() if not key.startswith(b"cachetasks:")] == [
        f"{kb}/control.pdf".encode()
    ]
    assert {path: n for path, n in s3_proxy.gets.items() if n} == {f"/{kb}/control.pdf": 1}


def test_large_file_is_cached_whole_and_readers_never_see_part_of_it(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A 20 MiB object is streamed in 1 MiB chunks, yet a reader only ever sees nothing or all of it."""
    # Given a running service and a 20 MiB object that storage serves slowly
    start_service(processes(s3_env), cache.client)
    data = uuid.uuid4().bytes * (20 * MiB // 16)
    put_s3(s3, "kb1", "big.bin", data)
    s3_proxy.fail_next(1, Fault(stall=2.0, key_contains="big.bin"))
    # When the document becomes ongoing while a reader polls its key
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="big.bin", file=_upload("folder1"))
    seen: list[int | None] = []
    writing = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with cache.client.pipeline(transaction=False) as pipe:
            value, temporary = pipe.get("kb1/big.bin").keys(TMP + "*").execute()
        writing += bool(temporary)
        seen.append(None if value is None else len(value))
        if value is not None:
            break
    # Expect the polls to have overlapped the write, and to have seen no partial value
    assert seen[-1] == len(data), "the file was not cached in time"
    assert writing > 0, "no poll happened while the value was being written"
    assert set(seen) == {None, len(data)}
    assert cache.client.get("kb1/big.bin") == data
    assert s3_proxy.gets["/kb1/big.bin"] == 1


def test_stream_stalling_longer_than_the_inflight_ttl_is_never_cached_in_part(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A read that stalls mid-stream for longer than CACHETASKS_INFLIGHT_TTL leaves the whole file or nothing."""
    # Given a service with 1 s claims and 100-byte chunks, and storage whose next reads stall halfway
    settings = {**s3_env, "CACHETASKS_INFLIGHT_TTL": "1", "CACHETASKS_CHUNK_BYTES": "100"}
    start_service(processes(settings), cache.client)
    data = bytes(range(200)) * 10
    put_s3(s3, "kb1", "stalls.bin", data)
    s3_proxy.fail_next(2, Fault(stall=2.0, stall_after=1000, key_contains="stalls.bin"))
    # When its document becomes ongoing
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="stalls.bin")
    # Expect the first value to appear to be the whole file
    value = wait_until(lambda: cache.client.get("kb1/stalls.bin"), timeout=15, what="the file")
    assert value == data, f"cached {len(value)} of {len(data)} bytes"  # type: ignore[arg-type]
