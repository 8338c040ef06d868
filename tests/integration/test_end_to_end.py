"""The service as a user runs it: beat and worker processes, real Redis, database and storage."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import redis
import sqlalchemy as sa

from cachetasks.demo import LinkedFile, insert_document
from tests.support.servers import wait_until
from tests.support.service import Processes


def test_ongoing_document_on_postgres_and_s3_is_cached_with_exact_bytes_and_ttl(
    s3_env: dict[str, str], s3: Any, pg_engine: sa.Engine, pg_url: str,
    processes: Callable[[dict[str, str]], Processes],
) -> None:
    """A document that becomes ongoing is in Redis, byte for byte, with a TTL of about 720 s, within 3 s."""
    # Given a running beat and worker
    procs = processes({**s3_env, "CACHETASKS_DATABASE_URL": pg_url})
    procs.worker()
    procs.beat()
    kb = "kb" + uuid.uuid4().hex[:16]
    data = bytes(range(256)) * 1000 + b"\x00\xff"
    s3.create_bucket(Bucket=kb)
    s3.put_object(Bucket=kb, Key="folder/a file é.pdf", Body=data)
    cache = redis.Redis.from_url(s3_env["CACHETASKS_REDIS_URL"])
    wait_until(lambda: cache.get("cachetasks:last-collect"), timeout=20, what="the first collect")
    # When the document becomes ongoing
    with pg_engine.begin() as conn:
        insert_document(conn, kb_id=kb, location="folder/a file é.pdf",
                        file=LinkedFile(parent_id="folder" + kb, location="x", source_type="knowledgebase"))
    # Expect
    key = f"{kb}/folder/a file é.pdf"
    wait_until(lambda: cache.exists(key), timeout=3, what=key)
    assert cache.get(key) == data
    assert abs(cache.ttl(key) - 720) <= 2
