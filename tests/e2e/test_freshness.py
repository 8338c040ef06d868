"""A truthful cache, with real worker and beat processes: the data changes under the service, the cache follows.

A re-upload under the same name, an object replaced in place, a file rewritten while it is read,
a key deleted by someone else, a file-manager file moved to another folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.cache.keys import TMP
from cachetasks.catalog import schema
from cachetasks.ops.demo import LinkedFile, insert_document
from testbed.observe import keys_matching
from testbed.processes import Processes
from testbed.proxy import S3Proxy
from testbed.servers import wait_until
from tests.support.e2e import put_local, put_s3, start_service
from tests.support.watch import Watcher

Start = Callable[[dict[str, str]], Processes]
MiB = 1024 * 1024


def delete_document(engine: sa.Engine, doc: str) -> None:
    """Remove a document's rows, as RAGFlow does when a user deletes it."""
    with engine.begin() as conn:
        conn.execute(schema.task.delete().where(schema.task.c.doc_id == doc))
        conn.execute(schema.file2document.delete().where(schema.file2document.c.document_id == doc))
        conn.execute(schema.document.delete().where(schema.document.c.id == doc))


@pytest.fixture(params=["postgresql", "mysql"])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[str, sa.Engine]]:
    """RAGFlow's two databases: PostgreSQL, and MySQL (MariaDB here) as RAGFlow ships it."""
    url: str = request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'mysql'}_url")
    engine: sa.Engine = request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'mysql'}_engine")
    yield url, engine


def test_a_re_upload_under_the_same_name_is_cached_within_2_s_and_replaces_the_old_bytes_in_one_step(
    s3_env: dict[str, str],
    s3: Any,
    database: tuple[str, sa.Engine],
    cache: Cache,
    processes: Start,
) -> None:
    """Delete a document and upload a corrected file under its name: the key holds v2 within 2 s, never nothing."""
    # Given v1 of a document cached by a running service
    url, engine = database
    start_service(processes({**s3_env, "CACHETASKS_DATABASE_URL": url}), cache.client)
    put_s3(s3, "kb1", "guide.pdf", b"v1: the first upload " * 100)
    with engine.begin() as conn:
        first = insert_document(conn, kb_id="kb1", location="guide.pdf")
    wait_until(lambda: cache.client.exists("kb1/guide.pdf"), timeout=5, what="v1")
    # When the user deletes it and uploads a corrected file with the same name into the same dataset
    with Watcher(cache, "kb1/guide.pdf") as watcher:
        delete_document(engine, first)
        put_s3(s3, "kb1", "guide.pdf", b"v2: the corrected upload " * 100)
        with engine.begin() as conn:
            insert_document(conn, kb_id="kb1", location="guide.pdf")
        started = time.monotonic()
        wait_until(
            lambda: cache.client.get("kb1/guide.pdf") == b"v2: the corrected upload " * 100,
            timeout=5,
            interval=0.01,
            what="v2",
        )
        took = time.monotonic() - started
        time.sleep(0.1)
    # Expect v2 within 2 s, and a reader that saw v1 then v2, never a missing or other value
    assert took <= 2.0, f"v2 took {took:.2f}s"
    assert watcher.seen == [b"v1: the first upload " * 100, b"v2: the corrected upload " * 100]
    assert 700 <= cache.client.ttl("kb1/guide.pdf") <= 720


def test_an_object_replaced_in_place_is_cached_again_within_one_renewal(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """CACHETASKS_TTL=6: an object rewritten while its document stays ongoing is in the cache within one
    renewal (3 s, at the first full collect after: 2 s) and its copy; while it is unchanged, renewals check
    its version without reading it."""
    # Given a document cached by a service with a 6 s TTL (renewed, and checked, once under 3 s are left,
    # at a full collect: every 1.5 s, so every other collect)
    start_service(processes({**s3_env, "CACHETASKS_TTL": "6"}), cache.client)
    put_s3(s3, "kb1", "doc.pdf", b"v1")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="doc.pdf")
    wait_until(lambda: cache.client.exists("kb1/doc.pdf"), timeout=5, what="v1")
    wait_until(lambda: s3_proxy.heads["/kb1/doc.pdf"] >= 1, timeout=6, interval=0.05, what="a renewal")
    assert s3_proxy.gets["/kb1/doc.pdf"] == 1  # the renewal checked the version, and read nothing
    # When the object is replaced in storage, the document still ongoing
    put_s3(s3, "kb1", "doc.pdf", b"v2, replaced in place")
    started = time.monotonic()
    wait_until(lambda: cache.client.get("kb1/doc.pdf") == b"v2, replaced in place", timeout=8, what="v2")
    # Expect it by the next renewal: half a TTL, the wait for a full collect, and the copy
    assert time.monotonic() - started <= 6.0


def test_a_local_file_rewritten_while_it_is_copied_is_never_published_torn(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A 48 MiB file truncated and rewritten as 6 MiB mid-copy: the key is only ever the new file, whole."""
    # Given a running service copying in 1 MiB chunks, and a large local file
    start_service(processes({**env, "CACHETASKS_CHUNK_BYTES": str(MiB)}), cache.client)
    path = put_local(env, "kb1", "big.bin", b"o" * (48 * MiB))
    rewritten = b"n" * (6 * MiB)
    # When its document becomes ongoing, and the file is rewritten in place once the copy is under way
    with Watcher(cache, "kb1/big.bin") as watcher:
        with sqlite_engine.begin() as conn:
            insert_document(conn, kb_id="kb1", location="big.bin")
        wait_until(
            lambda: any(cache.client.strlen(k) >= MiB for k in keys_matching(cache.client, TMP + "*")),
            timeout=10,
            interval=0.002,
            what="the copy to be under way",
        )
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(rewritten)
        value = wait_until(lambda: cache.client.get("kb1/big.bin"), timeout=15, what="a cached value")
        time.sleep(0.2)
    os.unlink(path)
    # Expect only the rewritten file, whole
    assert value == rewritten, f"cached {len(value)} bytes"  # type: ignore[arg-type]
    assert [len(v) if v else v for v in watcher.seen] == [None, len(rewritten)]


def test_a_key_deleted_by_someone_else_is_cached_again_at_the_next_full_collect(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """With Redis evicting nothing, a DEL of a cached file is not taken for an eviction: the next full collect
    (every 3 s here) caches it again, within that interval and a collect."""
    # Given a running service (no maxmemory, a full collect every 3 s) that cached a file
    start_service(processes({**env, "CACHETASKS_RECONCILE_INTERVAL": "3"}), cache.client)
    put_local(env, "kb1", "doc.pdf", b"document")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="doc.pdf")
    wait_until(lambda: cache.client.exists("kb1/doc.pdf"), timeout=5, what="the file")
    # When someone deletes its key
    cache.client.delete("kb1/doc.pdf")
    started = time.monotonic()
    # Expect it cached again within 3 s and a collect
    wait_until(lambda: cache.client.exists("kb1/doc.pdf"), timeout=8, interval=0.02, what="the file again")
    assert time.monotonic() - started <= 4.0
    assert cache.client.get("kb1/doc.pdf") == b"document"


def test_a_moved_file_manager_file_is_cached_at_its_new_address_within_2_s_and_the_old_key_is_left_to_expire(
    s3_env: dict[str, str], s3: Any, database: tuple[str, sa.Engine], cache: Cache, processes: Start
) -> None:
    """RAGFlow's move_files: object copied to the new folder's bucket, row updated; the new key appears within 2 s."""
    # Given a file-manager file of an ongoing document, cached from its folder
    url, engine = database
    start_service(processes({**s3_env, "CACHETASKS_DATABASE_URL": url}), cache.client)
    put_s3(s3, "folder1", "notes.pdf", b"notes")
    with engine.begin() as conn:
        doc = insert_document(conn, kb_id="kb1", location="notes.pdf", file=LinkedFile("folder1", "notes.pdf", ""))
    wait_until(lambda: cache.client.exists("folder1/notes.pdf"), timeout=5, what="the file in its first folder")
    # When the user moves it to another folder, as RAGFlow does
    put_s3(s3, "folder2", "notes.pdf", b"notes")
    s3.delete_object(Bucket="folder1", Key="notes.pdf")
    f, f2d = schema.file, schema.file2document
    with engine.begin() as conn:
        file_id = conn.execute(sa.select(f2d.c.file_id).where(f2d.c.document_id == doc)).scalar_one()
        conn.execute(f.update().where(f.c.id == file_id).values(parent_id="folder2", update_time=_now_ms()))
    started = time.monotonic()
    # Expect the new address cached within 2 s, and the old key no longer renewed
    wait_until(lambda: cache.client.exists("folder2/notes.pdf"), timeout=5, interval=0.02, what="the new address")
    assert time.monotonic() - started <= 2.0
    cache.client.expire("folder1/notes.pdf", 100)
    time.sleep(2.5)
    assert 0 < cache.client.ttl("folder1/notes.pdf") <= 98


def _now_ms() -> int:
    return int(time.time() * 1000)
