"""A cached value always belongs to the document ongoing at its address and to what storage holds.

Collect and copies run in this process (as `warm` runs them) against a private Redis, SQLite
and in-memory or local storage.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache, FileState, Source
from cachetasks.cache.keys import inflight_key
from cachetasks.catalog import schema
from cachetasks.copier import Copy, copy_file
from cachetasks.errors import StorageUnavailable
from cachetasks.ops.demo import insert_document
from cachetasks.ops.warm import warm_once
from cachetasks.ref import FileRef
from cachetasks.settings import Settings
from cachetasks.storage import Blob, LocalStorage, MemoryStorage
from tests.support.watch import Watcher

GUIDE = FileRef("kb1", "guide.pdf")
SETTINGS = Settings(ttl=720, inflight_ttl=30, chunk_bytes=1000)


@pytest.fixture
def cache(cache: Cache) -> Cache:
    """The shared fixture's cache, on an emptied database of our private redis-server."""
    cache.client.flushdb()
    return cache


def upload(engine: sa.Engine, storage: MemoryStorage, data: bytes) -> str:
    """Put `data` at kb1/guide.pdf and record an ongoing document for it, as RAGFlow does on an upload."""
    storage.put(*GUIDE, data)
    with engine.begin() as conn:
        return insert_document(conn, kb_id=GUIDE.bucket, location=GUIDE.location)


def delete_document(engine: sa.Engine, doc: str) -> None:
    """Remove a document's rows, as RAGFlow does when a user deletes it."""
    with engine.begin() as conn:
        conn.execute(schema.task.delete().where(schema.task.c.doc_id == doc))
        conn.execute(schema.document.delete().where(schema.document.c.id == doc))


def test_a_re_upload_under_the_same_name_replaces_the_old_bytes_without_a_gap(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """A document deleted and uploaded again at the same address: the next collect replaces v1 by v2 in one step."""
    # Given v1 cached for the first document
    storage = MemoryStorage()
    first = upload(sqlite_engine, storage, b"v1 " * 2000)
    warm_once(sqlite_engine, cache, storage, SETTINGS)
    assert cache.client.get(GUIDE.key) == b"v1 " * 2000
    # When the user deletes it and uploads a corrected file under the same name
    delete_document(sqlite_engine, first)
    second = upload(sqlite_engine, storage, b"v2! " * 3000)
    with Watcher(cache, GUIDE.key) as watcher:
        outcomes = warm_once(sqlite_engine, cache, storage, SETTINGS)
    # Expect the new bytes, copied for the new document, and a reader never without a value
    assert outcomes["cached"] == 1
    assert cache.client.get(GUIDE.key) == b"v2! " * 3000
    assert cache.source(GUIDE) == Source(second, storage.stat(*GUIDE))
    assert None not in watcher.seen and set(watcher.seen) <= {b"v1 " * 2000, b"v2! " * 3000}
    assert cache.held_bytes() == len(b"v2! " * 3000)


def test_a_value_whose_new_document_has_no_file_is_deleted_rather_than_served(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """If the new document's file cannot be read (missing), the old document's bytes are not left in its place."""
    # Given v1 cached for a first document
    storage = MemoryStorage()
    first = upload(sqlite_engine, storage, b"v1")
    warm_once(sqlite_engine, cache, storage, SETTINGS)
    # When a new document takes the address but its object is missing
    delete_document(sqlite_engine, first)
    upload(sqlite_engine, storage, b"unused")
    storage.delete(*GUIDE)
    outcomes = warm_once(sqlite_engine, cache, storage, SETTINGS)
    # Expect
    assert outcomes["missing"] == 1
    assert not cache.client.exists(GUIDE.key)


def test_an_object_replaced_in_storage_is_copied_again_when_its_value_is_renewed(
    sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """While its document stays ongoing, a value whose TTL falls below half is checked against storage's
    version: an unchanged object is not read again, a changed one replaces the value."""
    # Given v1 cached, and its TTL below half
    storage = MemoryStorage()
    upload(sqlite_engine, storage, b"v1")
    warm_once(sqlite_engine, cache, storage, SETTINGS)
    cache.client.expire(GUIDE.key, 300)
    # When a collect renews it with storage unchanged
    outcomes = warm_once(sqlite_engine, cache, storage, SETTINGS)
    # Expect the TTL back to full, without a read
    assert (outcomes["cached"], storage.opens[GUIDE]) == (1, 1)
    assert 718 <= cache.client.ttl(GUIDE.key) <= 720
    # When the object is replaced in storage, and the value is due again
    storage.put(*GUIDE, b"v2, rewritten in place")
    cache.client.expire(GUIDE.key, 300)
    warm_once(sqlite_engine, cache, storage, SETTINGS)
    # Expect the new bytes
    assert cache.client.get(GUIDE.key) == b"v2, rewritten in place"
    assert storage.opens[GUIDE] == 2
    assert not cache.client.exists(inflight_key(GUIDE.key))


def test_bytes_held_are_those_of_files_in_redis_now(cache: Cache) -> None:
    """Once its TTL runs out a file's bytes are no longer counted, without waiting for a collect."""
    # Given a file cached for 1 s
    storage = MemoryStorage({GUIDE: b"x" * 1234})
    copy_file(cache, storage, GUIDE, Settings(ttl=1), owner="task-1")
    assert cache.stored_bytes() == 1234
    # When its TTL runs out
    time.sleep(1.1)
    # Expect
    assert cache.stored_bytes() == 0


class Rewritten(LocalStorage):
    """Local storage whose file is rewritten in place by someone else after the first chunk is read."""

    def __init__(self, root: Path, rewrite: bytes) -> None:
        super().__init__(root)
        self.rewrite = rewrite

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        blob = super().open(bucket, location, chunk_size=chunk_size)
        path = self.root / bucket / location

        def chunks() -> Iterator[bytes]:
            for i, chunk in enumerate(blob.chunks):
                if i == 1:
                    with open(path, "r+b") as f:  # truncate and write: the same inode, new content
                        f.truncate(0)
                        f.write(self.rewrite)
                        f.flush()
                        os.fsync(f.fileno())
                yield chunk

        return Blob(blob.size, chunks(), blob.close, version=blob.version)


@pytest.mark.parametrize("rewrite", [b"s" * 6000, b"t" * 12_000], ids=["shorter", "same size"])
def test_a_local_file_rewritten_while_it_is_read_is_never_published(
    cache: Cache, tmp_path: Path, rewrite: bytes
) -> None:
    """12,000 bytes announced, rewritten in place mid-read: the copy fails as transient (it will be retried),
    nothing is cached, and the claim stays the copy's."""
    # Given
    storage = Rewritten(tmp_path / "storage", rewrite)
    storage.put(*GUIDE, b"o" * 12_000)
    # When
    with pytest.raises(StorageUnavailable, match="changed while"):
        copy_file(cache, storage, GUIDE, SETTINGS, owner="task-1")
    # Expect
    assert not cache.client.exists(GUIDE.key)
    assert cache.client.get(inflight_key(GUIDE.key)) == b"task-1"
    # and the retry, reading the file as it is now, caches it whole
    done = copy_file(cache, LocalStorage(storage.root), GUIDE, SETTINGS, owner="task-1")
    assert done == Copy(FileState.CACHED, len(rewrite))
    assert cache.client.get(GUIDE.key) == rewrite
