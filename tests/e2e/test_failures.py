"""Files the service cannot or must not cache: missing, too large, or outside the storage root."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.ops.demo import insert_document
from testbed.processes import Processes
from testbed.proxy import S3Proxy
from testbed.servers import wait_until
from tests.support.e2e import (
    backend_settings,
    local_root,
    put_local,
    put_s3,
    start_service,
    wait_for_collects,
    warnings_in,
)

Start = Callable[[dict[str, str]], Processes]


def test_missing_object_is_warned_about_once_and_not_fetched_again_for_the_negative_ttl(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A missing object or bucket: no key, one warning naming it, neighbours cached, one read in 60 s."""
    # Given a running service, and two of four ongoing files in storage
    procs = processes(s3_env)
    start_service(procs, cache.client)
    put_s3(s3, "kb1", "here-1.pdf", b"one")
    put_s3(s3, "kb1", "here-2.pdf", b"two")
    # When the four documents become ongoing in the same collect
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="here-1.pdf")
        insert_document(conn, kb_id="kb1", location="no such key.pdf")
        insert_document(conn, kb_id="kb1", location="here-2.pdf")
        insert_document(conn, kb_id="no-such-bucket", location="dir/file.pdf")
    # Expect the present files cached, and each missing one warned about by bucket and location
    wait_until(lambda: cache.client.exists("kb1/here-1.pdf", "kb1/here-2.pdf") == 2, timeout=3, what="present files")
    missing = ["kb1/no such key.pdf", "no-such-bucket/dir/file.pdf"]

    def warned(key: str) -> list[str]:
        return [line for line in warnings_in(procs.log("worker")) if key in line]

    wait_until(lambda: all(warned(key) for key in missing), timeout=3, what="a warning for each missing file")
    # Expect them not to be read again over the next five collects
    wait_for_collects(cache.client, 5)
    assert cache.client.exists(*missing) == 0
    assert [s3_proxy.gets["/kb1/no such key.pdf"], s3_proxy.gets["/no-such-bucket/dir/file.pdf"]] == [1, 1]
    assert [len(warned(key)) for key in missing] == [1, 1]


def test_missing_file_is_tried_again_after_the_negative_ttl_and_cached_once_it_appears(
    s3_env: dict[str, str], s3: Any, s3_proxy: S3Proxy, sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A miss is remembered only for CACHETASKS_NEGATIVE_TTL seconds: a file uploaded late is cached then."""
    # Given a running service that forgets misses after 1 s, and an ongoing document whose file is not there yet
    start_service(processes({**s3_env, "CACHETASKS_NEGATIVE_TTL": "1"}), cache.client)
    s3.create_bucket(Bucket="kb1")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="late.pdf")
    wait_until(lambda: s3_proxy.gets["/kb1/late.pdf"], timeout=3, what="the first read")
    # When the file arrives in storage
    put_s3(s3, "kb1", "late.pdf", b"arrived late")
    # Expect it cached within the negative TTL and a collect or two
    wait_until(lambda: cache.client.exists("kb1/late.pdf"), timeout=4, what="the late file")
    assert cache.client.get("kb1/late.pdf") == b"arrived late"


def test_local_addresses_that_leave_the_storage_root_are_refused_and_never_read(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """'..' parts, absolute locations and symlinks out of the storage root: not read, not cached, warned about."""
    # Given a running service, a secret file next to the storage root, and links to it inside the root
    procs = processes(env)
    start_service(procs, cache.client)
    secret = b"outside the storage root " + uuid.uuid4().hex.encode()
    outside = Path(env["CACHETASKS_DATA_DIR"]) / "outside.txt"
    outside.write_bytes(secret)
    put_local(env, "kb1", "control.txt", b"control")
    (local_root(env) / "kb1" / "link.txt").symlink_to(outside)
    (local_root(env) / "kb1" / "dir").symlink_to(outside.parent, target_is_directory=True)
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
    wait_until(lambda: cache.client.exists("kb1/control.txt"), timeout=3, what="the control document")
    wait_for_collects(cache.client, 2)
    # Expect none cached, the secret in no value at all, and a warning for each kind of refusal
    assert cache.client.exists(*(f"{kb}/{location}" for kb, location in escapes)) == 0
    values = [cache.client.get(key) for key in cache.client.scan_iter() if cache.client.type(key) == b"string"]
    assert not [value for value in values if value and secret in value]
    warnings = warnings_in(procs.log("worker"))
    assert [(kb, loc) for kb, loc in escapes if not any(kb in line and loc in line for line in warnings)] == []


def test_local_file_that_is_not_a_regular_file_is_refused_without_holding_a_worker(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A named pipe at an ongoing location is refused with a warning, instead of blocking its copy forever."""
    # Given a running service, and a named pipe (with no writer) where a file is expected
    procs = processes(env)
    start_service(procs, cache.client)
    put_local(env, "kb1", "control.txt", b"control")
    pipe = local_root(env) / "kb1" / "pipe.pdf"
    os.mkfifo(pipe)
    try:
        # When its document becomes ongoing, with a control document
        with sqlite_engine.begin() as conn:
            insert_document(conn, kb_id="kb1", location="pipe.pdf")
            insert_document(conn, kb_id="kb1", location="control.txt")
        wait_until(lambda: cache.client.exists("kb1/control.txt"), timeout=5, what="the control document")
        # Expect the pipe refused and warned about, not waited on
        wait_until(
            lambda: [line for line in warnings_in(procs.log("worker")) if "kb1/pipe.pdf" in line],
            timeout=3,
            what="a warning about the named pipe",
        )
        assert not cache.client.exists("kb1/pipe.pdf")
    finally:
        with contextlib.suppress(OSError):  # a writer ends an open() blocked on the pipe, so the worker can stop
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_files_up_to_the_size_limit_are_cached_and_larger_ones_are_not(
    backend: str, sqlite_engine: sa.Engine, cache: Cache, processes: Start, request: pytest.FixtureRequest
) -> None:
    """With CACHETASKS_MAX_FILE_BYTES=1000, files of 0 and 1000 bytes are cached, one of 1001 bytes is not."""
    # Given a running service with a 1000-byte limit, and files of 0, 1000 and 1001 bytes
    settings, put = backend_settings(request, backend)
    procs = processes({**settings, "CACHETASKS_MAX_FILE_BYTES": "1000"})
    start_service(procs, cache.client)
    files = {"empty.bin": b"", "limit.bin": b"x" * 1000, "over.bin": b"y" * 1001}
    for name, data in files.items():
        put("kb1", name, data)
    # When their documents become ongoing
    with sqlite_engine.begin() as conn:
        for name in files:
            insert_document(conn, kb_id="kb1", location=name)
    # Expect the empty and the 1000-byte file cached as they are, and a warning instead of the larger one
    wait_until(lambda: cache.client.exists("kb1/empty.bin", "kb1/limit.bin") == 2, timeout=3, what="files in bounds")
    assert cache.client.mget("kb1/empty.bin", "kb1/limit.bin") == [b"", files["limit.bin"]]
    wait_until(
        lambda: [line for line in warnings_in(procs.log("worker")) if "kb1/over.bin" in line and "too-large" in line],
        timeout=3,
        what="a warning about the larger file",
    )
    assert not cache.client.exists("kb1/over.bin")
