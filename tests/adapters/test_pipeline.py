"""Collect and copies in this process, as `python -m cachetasks warm` runs them, against real servers.

Which address each ongoing file is read from, that each is read once however often collect
sees it, and what bad input does: behaviours of the pipeline, not of the worker processes.
"""

from __future__ import annotations

import collections
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cachetasks import storage as storages
from cachetasks.cache import Cache
from cachetasks.cache.keys import skip_key
from cachetasks.collector import collect
from cachetasks.ops.demo import LinkedFile, insert_document
from cachetasks.ops.warm import warm_once
from cachetasks.settings import Settings
from cachetasks.storage import Storage
from testbed.proxy import S3Proxy

ONE_BUCKET, PREFIX = "onebucket", "some/prefix"


@dataclass
class InProcess:
    """The service's settings, storage and cache, with cycles of collect-and-copy run here."""

    engine: sa.Engine
    cache: Cache
    settings: Settings
    storage: Storage

    def cycle(self, times: int = 1) -> collections.Counter[str]:
        outcomes: collections.Counter[str] = collections.Counter()
        for _ in range(times):
            outcomes += warm_once(self.engine, self.cache, self.storage, self.settings)
        return outcomes


Make = Callable[..., InProcess]


@pytest.fixture
def cache(cache: Cache) -> Cache:
    """The shared fixture's cache, on an emptied database of our private redis-server."""
    cache.client.flushdb()
    return cache


@pytest.fixture
def in_process(cache: Cache, monkeypatch: pytest.MonkeyPatch) -> Iterator[Make]:
    """Build an InProcess from settings as environment variables (AWS credentials reach boto3 as they would)."""
    made: list[Storage] = []

    def make(env: dict[str, str], engine: sa.Engine, **overrides: str) -> InProcess:
        for name, value in env.items():
            if name.startswith("AWS_"):
                monkeypatch.setenv(name, value)
        settings = Settings.from_env({**env, **overrides})
        made.append(storages.from_settings(settings))
        return InProcess(engine, cache, settings, made[-1])

    yield make
    for storage in made:
        storage.close()


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


# -- where each file is read from ---------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgresql", "mysql"])
@pytest.mark.parametrize("layout", ["bucket-per-kb", "single-bucket"])
def test_uploads_are_read_from_the_kb_bucket_and_file_manager_files_from_their_folder(
    layout: str,
    database: str,
    s3_env: dict[str, str],
    s3: Any,
    s3_proxy: S3Proxy,
    in_process: Make,
    request: pytest.FixtureRequest,
) -> None:
    """An upload lives at (kb_id, document.location), a file-manager file at (file.parent_id, file.location),
    on RAGFlow's PostgreSQL and on its MySQL (RAGFlow's collation, MySQL 8's sql_mode)."""
    pg_engine: sa.Engine = request.getfixturevalue("pg_engine" if database == "postgresql" else "mysql_engine")
    # Given the service on this layout, and each file at its real address (with decoys elsewhere)
    settings = dict(s3_env)
    if layout == "single-bucket":
        settings |= {"CACHETASKS_S3_BUCKET": ONE_BUCKET, "CACHETASKS_S3_PREFIX": PREFIX}
    service = in_process(settings, pg_engine)
    kb, upload_folder, manager_folder = (p + uuid.uuid4().hex[:12] for p in ("kb", "folder", "manager"))
    service.storage.put(kb, "uploads/report 1.pdf", b"the upload")
    service.storage.put(upload_folder, "uploads/report 1.pdf", b"decoy: the upload's folder")
    service.storage.put(upload_folder, "upload-file-row.pdf", b"decoy: the upload's file row")
    service.storage.put(manager_folder, "files/notes 2.pdf", b"the file-manager file")
    service.storage.put(kb, "manager-doc-row.pdf", b"decoy: the file-manager document row")
    s3_proxy.gets.clear()
    # When a knowledge-base upload and a linked file-manager file become ongoing, over two cycles
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
    service.cycle(2)
    # Expect each cached from its real address, under "{bucket}/{location}" of that address, read once
    upload_key, manager_key = f"{kb}/uploads/report 1.pdf", f"{manager_folder}/files/notes 2.pdf"
    assert service.cache.client.get(upload_key) == b"the upload"
    assert service.cache.client.get(manager_key) == b"the file-manager file"

    def path(bucket: str, location: str) -> str:
        return f"/{ONE_BUCKET}/{PREFIX}/{bucket}/{location}" if layout == "single-bucket" else f"/{bucket}/{location}"

    assert {p: n for p, n in s3_proxy.gets.items() if n} == {
        path(kb, "uploads/report 1.pdf"): 1,
        path(manager_folder, "files/notes 2.pdf"): 1,
    }
    decoys = [
        f"{upload_folder}/uploads/report 1.pdf",
        f"{upload_folder}/upload-file-row.pdf",
        f"{kb}/manager-doc-row.pdf",
    ]
    assert service.cache.client.exists(*decoys) == 0


LOCATIONS = [
    "a/b/c/deep file.txt",
    "reports/2026/Q3 résumé.pdf",
    "数据/年度 报告.docx",
    "emoji 📄 and  two spaces.txt",
    "symbols +&=;,@$!'()[] ~%20.txt",
]


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_locations_with_slashes_spaces_and_unicode_are_cached_under_the_same_text(
    backend: str, request: pytest.FixtureRequest, sqlite_engine: sa.Engine, in_process: Make
) -> None:
    """A location is read and cached verbatim, whatever '/', spaces, unicode or URL-special characters it holds."""
    # Given one file per location
    service = in_process(request.getfixturevalue("s3_env" if backend == "s3" else "env"), sqlite_engine)
    for i, location in enumerate(LOCATIONS):
        service.storage.put("kb1", location, f"file {i}".encode())
    # When their documents become ongoing
    with sqlite_engine.begin() as conn:
        for location in LOCATIONS:
            insert_document(conn, kb_id="kb1", location=location)
    service.cycle()
    # Expect every one cached at "kb1/{location}" with its own bytes
    keys = [f"kb1/{location}" for location in LOCATIONS]
    assert [service.cache.client.get(key) for key in keys] == [f"file {i}".encode() for i in range(len(LOCATIONS))]


# -- read once ------------------------------------------------------------------------------------------------


def test_one_file_of_a_thousand_tasks_is_read_once_and_the_size_limit_holds_to_the_byte(
    s3_env: dict[str, str],
    s3_proxy: S3Proxy,
    sqlite_engine: sa.Engine,
    in_process: Make,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 tasks of one document: one read. Limit 1000 bytes: 0 and 1000 cached, 1001 refused once."""
    # Given a 1000-byte file limit
    service = in_process(s3_env, sqlite_engine, CACHETASKS_MAX_FILE_BYTES="1000")
    files = {"book.pdf": b"b" * 10, "empty.bin": b"", "limit.bin": b"x" * 1000, "over.bin": b"y" * 1001}
    for name, data in files.items():
        service.storage.put("kb1", name, data)
    # When a document split into 1,000 tasks and one document per file are ongoing for three cycles
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="book.pdf", progress=[0.0] * 1000)
        for name in ("empty.bin", "limit.bin", "over.bin"):
            insert_document(conn, kb_id="kb1", location=name)
    with caplog.at_level(logging.WARNING, logger="cachetasks"):
        service.cycle(3)
    # Expect each read once, the ones in bounds cached exactly, and the larger one refused with one warning
    cached = ["kb1/book.pdf", "kb1/empty.bin", "kb1/limit.bin"]
    assert service.cache.client.mget(*cached) == [files["book.pdf"], b"", files["limit.bin"]]
    assert {path: n for path, n in s3_proxy.gets.items() if n} == {f"/kb1/{name}": 1 for name in files}
    assert not service.cache.client.exists("kb1/over.bin")
    assert len([w for w in warnings_about(caplog, "kb1/over.bin") if "too-large" in w]) == 1


def test_a_file_already_in_redis_is_never_read_and_its_ttl_renewed_only_below_half(
    s3_env: dict[str, str], s3_proxy: S3Proxy, sqlite_engine: sa.Engine, in_process: Make
) -> None:
    """A cached file is kept as it is (0 reads); while ongoing, a TTL under half of 720 s goes back to 720 s."""
    # Given files in storage, and two of them already in Redis
    service = in_process(s3_env, sqlite_engine)
    for name in ("fresh", "stale", "control"):
        service.storage.put("kb1", f"{name}.pdf", b"from storage")
    client = service.cache.client
    client.set("kb1/fresh.pdf", b"cached before", ex=700)
    client.set("kb1/stale.pdf", b"cached before", ex=100)
    # When their documents become ongoing, with a control document that is not cached yet
    with sqlite_engine.begin() as conn:
        for name in ("fresh", "stale", "control"):
            insert_document(conn, kb_id="kb1", location=f"{name}.pdf")
    service.cycle(2)
    # Expect the cached values untouched and never read from storage
    assert client.get("kb1/control.pdf") == b"from storage"
    assert s3_proxy.gets["/kb1/fresh.pdf"] == s3_proxy.gets["/kb1/stale.pdf"] == 0
    assert client.mget("kb1/fresh.pdf", "kb1/stale.pdf") == [b"cached before", b"cached before"]
    assert 0 < client.ttl("kb1/fresh.pdf") <= 700
    assert abs(client.ttl("kb1/stale.pdf") - 720) <= 5


# -- files that cannot be cached ------------------------------------------------------------------------------


def test_a_missing_object_is_warned_about_once_and_not_read_again_for_the_negative_ttl(
    s3_env: dict[str, str],
    s3_proxy: S3Proxy,
    sqlite_engine: sa.Engine,
    in_process: Make,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A missing object or bucket: no key, one warning naming it, neighbours cached, one read in five cycles."""
    # Given two of four ongoing files in storage
    service = in_process(s3_env, sqlite_engine)
    service.storage.put("kb1", "here-1.pdf", b"one")
    service.storage.put("kb1", "here-2.pdf", b"two")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="here-1.pdf")
        insert_document(conn, kb_id="kb1", location="no such key.pdf")
        insert_document(conn, kb_id="kb1", location="here-2.pdf")
        insert_document(conn, kb_id="no-such-bucket", location="dir/file.pdf")
    # When five cycles run
    with caplog.at_level(logging.WARNING, logger="cachetasks"):
        service.cycle(5)
    # Expect the present files cached, each missing one warned about once and read once
    client = service.cache.client
    assert client.exists("kb1/here-1.pdf", "kb1/here-2.pdf") == 2
    missing = ["kb1/no such key.pdf", "no-such-bucket/dir/file.pdf"]
    assert client.exists(*missing) == 0
    assert [s3_proxy.gets["/kb1/no such key.pdf"], s3_proxy.gets["/no-such-bucket/dir/file.pdf"]] == [1, 1]
    assert [len(warnings_about(caplog, key)) for key in missing] == [1, 1]


def test_a_missing_file_is_read_again_after_the_negative_ttl_and_cached_once_it_appears(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, in_process: Make
) -> None:
    """A miss is remembered only for CACHETASKS_NEGATIVE_TTL seconds: a file uploaded late is cached then."""
    # Given misses forgotten after 1 s, and an ongoing document whose file is not there yet
    service = in_process(s3_env, sqlite_engine, CACHETASKS_NEGATIVE_TTL="1")
    s3.create_bucket(Bucket="kb1")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="late.pdf")
    service.cycle()
    assert s3_proxy.gets["/kb1/late.pdf"] == 1
    # When the file arrives in storage, and the miss is forgotten
    service.storage.put("kb1", "late.pdf", b"arrived late")
    service.cycle()
    assert s3_proxy.gets["/kb1/late.pdf"] == 1, "read again within the negative TTL"
    time.sleep(1.1)
    service.cycle()
    # Expect it cached
    assert service.cache.client.get("kb1/late.pdf") == b"arrived late"


def test_local_addresses_that_leave_the_storage_root_are_refused_and_never_read(
    env: dict[str, str], sqlite_engine: sa.Engine, in_process: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """'..' parts, absolute locations and symlinks out of the storage root: not read, not cached, warned about."""
    # Given a secret file next to the storage root, and links to it inside the root
    service = in_process(env, sqlite_engine)
    root = service.settings.storage_root
    secret = b"outside the storage root " + uuid.uuid4().hex.encode()
    outside = Path(env["CACHETASKS_DATA_DIR"]) / "outside.txt"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(secret)
    service.storage.put("kb1", "control.txt", b"control")
    (root / "kb1" / "link.txt").symlink_to(outside)
    (root / "kb1" / "dir").symlink_to(outside.parent, target_is_directory=True)
    escapes = [
        ("kb1", "../../outside.txt"),
        ("..", "outside.txt"),
        ("kb1", str(outside)),
        ("kb1", "link.txt"),
        ("kb1", "dir/outside.txt"),
    ]
    # When documents at those addresses become ongoing, with a control document
    with sqlite_engine.begin() as conn:
        for kb, location in [*escapes, ("kb1", "control.txt")]:
            insert_document(conn, kb_id=kb, location=location)
    with caplog.at_level(logging.WARNING, logger="cachetasks"):
        service.cycle(2)
    # Expect the control cached, none of the others, the secret in no value, and a warning for each
    client = service.cache.client
    assert client.get("kb1/control.txt") == b"control"
    assert client.exists(*(f"{kb}/{location}" for kb, location in escapes)) == 0
    values = [client.get(key) for key in client.scan_iter() if client.type(key) == b"string"]
    assert not [value for value in values if value and secret in value]
    warnings = warnings_about(caplog, "")
    assert [(kb, loc) for kb, loc in escapes if not any(kb in line and loc in line for line in warnings)] == []


def test_a_named_pipe_is_refused_without_blocking_the_copy(
    env: dict[str, str], sqlite_engine: sa.Engine, in_process: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """A named pipe at an ongoing location is refused with a warning, instead of blocking its copy forever."""
    # Given a named pipe (with no writer) where a file is expected, and a control file
    service = in_process(env, sqlite_engine)
    service.storage.put("kb1", "control.txt", b"control")
    os.mkfifo(service.settings.storage_root / "kb1" / "pipe.pdf")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="pipe.pdf")
        insert_document(conn, kb_id="kb1", location="control.txt")
    # When a cycle runs
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cachetasks"):
        outcomes = service.cycle()
    # Expect the control cached and the pipe refused, at once
    assert time.monotonic() - started < 5
    assert outcomes["cached"] == 1 and outcomes["invalid"] == 1
    assert service.cache.client.get("kb1/control.txt") == b"control"
    assert warnings_about(caplog, "kb1/pipe.pdf")
    assert service.cache.client.get(skip_key("kb1/pipe.pdf")) == b"invalid"


# -- bad input from the database ---------------------------------------------------------------------------------


def _sql_text(value: str | None) -> str:
    """An SQLite expression for `value`: NULL, or a literal with NUL bytes spliced in with char(0)."""
    if value is None:
        return "NULL"
    return " || ".join("'" + part.replace("'", "''") + "'" for part in value.split("\x00")).replace(
        "' || '", "' || char(0) || '"
    )


def _ongoing_sql(pairs: list[tuple[str | None, str | None]]) -> str:
    return " UNION ALL ".join(f"SELECT {_sql_text(b)} AS bucket, {_sql_text(loc)} AS location" for b, loc in pairs)


NO_ADDRESS: list[tuple[str | None, str | None]] = [
    ("kb1", None),
    ("kb1", ""),
    ("kb1", "   "),
    (None, "x.pdf"),
    ("", "x.pdf"),
]
REFUSED: list[tuple[str, str]] = [
    (" ", "x.pdf"),  # a blank bucket is refused (with a warning) rather than dropped like a blank location
    ("kb1", "../secret.pdf"),
    ("..", "x.pdf"),
    ("kb1", "a/../../b.pdf"),
    ("kb1", "/abs.pdf"),
    ("kb1", "\\abs.pdf"),
    ("kb1", "..\\up.pdf"),
    ("kb\\1", "x.pdf"),
    ("kb1", "a\x00b.pdf"),
    ("kb1", "long-" + "x" * 1100),
    ("b" * 1100, "x.pdf"),
]
S3_REJECTS = ("Bad_Bucket!", "x.pdf")
CACHED: list[tuple[str, str]] = [
    ("kb1", "dir\\mid.pdf"),  # a backslash inside a name is an ordinary character
    ("kb1", "café au lait/naïve résumé 📄.pdf"),
    ("kb1", "n" * 1024),  # exactly the 1024-byte limit
    ("kb1", "control.pdf"),
]


def test_unusable_and_unsafe_addresses_are_dropped_or_refused_once_while_the_rest_is_cached(
    s3_env: dict[str, str],
    s3_proxy: S3Proxy,
    sqlite_engine: sa.Engine,
    in_process: Make,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """NULL/blank parts dropped; '..', absolute, NUL, over-long refused with one warning; nothing of them read."""
    # Given an ongoing query that returns every kind of bad address next to good ones
    # (SQLite, unlike PostgreSQL, can return a NUL byte in a text value)
    sql = _ongoing_sql([*NO_ADDRESS, *REFUSED, S3_REJECTS, *CACHED])
    service = in_process(s3_env, sqlite_engine, CACHETASKS_ONGOING_SQL=sql)
    for bucket, location in CACHED:
        service.storage.put(bucket, location, f"{bucket}/{location}".encode())
    s3_proxy.gets.clear()
    # When it runs for a few cycles
    with caplog.at_level(logging.WARNING, logger="cachetasks"):
        outcomes = service.cycle(3)
    # Expect the good ones cached as they are, read once each, and nothing else read
    client = service.cache.client
    keys = [f"{b}/{loc}" for b, loc in CACHED]
    assert [client.get(key) for key in keys] == [key.encode() for key in keys]
    assert {path: n for path, n in s3_proxy.gets.items() if n} == {f"/{key}": 1 for key in keys}
    # and each unsafe address refused with one warning in all those cycles, never cached
    warnings = warnings_about(caplog, "")
    for bucket, location in REFUSED:
        shown = f"ignoring ongoing file {bucket!r:.200} / {location!r:.200}: "  # the collector's %.200r
        said = [w for w in warnings if shown in w]
        assert len(said) == 1, f"{len(said)} warnings for {bucket[:20]!r}/{location[:20]!r}"
        assert not client.exists(f"{bucket}/{location}")
    # and the name S3 rejects: one warning, remembered as not cacheable
    rejected = "/".join(S3_REJECTS)
    assert len([w for w in warnings if rejected in w and "invalid" in w]) == 1
    assert client.exists(skip_key(rejected))
    assert outcomes["invalid"] == 1
    # and the counts of a collect say so
    report = collect(service.engine, service.cache, service.settings, enqueue=lambda refs: None)
    assert report is not None
    assert (report.invalid, report.enqueued) == (len(REFUSED), 0)
    assert report.ongoing == len(REFUSED) + 1 + len(CACHED)
