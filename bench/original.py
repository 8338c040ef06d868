"""RAGFlow's original cache daemon (`rag/svr/cache_file_svr.py`), re-implemented faithfully.

One thread. Every cycle: run the ongoing query under an advisory lock (all task rows, with
the daemon's own address rule `(file.parent_id or document.kb_id, document.location)`,
deduplicated in Python, and printed), then, one pair after the other: `EXISTS key` -> skip;
else read the whole object (boto3 `get_object().read()`, or `open().read()`), and
`MULTI; SET key value EX 720 NX; EXEC`. A failed read sleeps 1 s and yields None, which makes
the SET fail inside the swallowed transaction. Then `sleep(1)`; an empty cycle sleeps 1 s more.

Run as a process: `python -m bench.original` with the same CACHETASKS_* variables as the
service (Redis URL, database URL, storage). BENCH_ORIGINAL_STATUS names a file where the
cycle count and the pairs of the last cycle are written after each cycle (for the benchmark
to know when the daemon is idle); it changes nothing in the algorithm.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import redis
import sqlalchemy as sa

from cachetasks.catalog import make_engine

log = logging.getLogger("original")
EXPIRE = 12 * 60
LOCK_ID = 0x6765745F  # "get_task"

ONGOING_SQL = sa.text(
    """
    SELECT document.id, document.kb_id, document.location, file.parent_id
    FROM task
    JOIN document ON task.doc_id = document.id
    LEFT OUTER JOIN file2document ON file2document.document_id = document.id
    LEFT OUTER JOIN file ON file2document.file_id = file.id
    WHERE document.status = '1' AND document.run = '1' AND NOT (document.type = 'virtual')
      AND task.progress < 1 AND task.create_time >= :since
    """
)

Get = Callable[[str, str], "bytes | None"]


def get_ongoing_doc_name(engine: sa.Engine) -> list[tuple[str, str]]:
    """TaskService.get_ongoing_doc_name: every matching row, deduplicated in Python."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": LOCK_ID})
        try:
            since = int(time.time() * 1000) - 1000 * 600
            docs = [dict(row._mapping) for row in conn.execute(ONGOING_SQL, {"since": since})]
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
            conn.commit()
    if not docs:
        return []
    return list({(d["parent_id"] if d["parent_id"] else d["kb_id"], d["location"]) for d in docs})


def s3_get(client: Any) -> Get:
    def get(bucket: str, fnm: str) -> bytes | None:
        try:
            data: bytes = client.get_object(Bucket=bucket, Key=fnm)["Body"].read()
            return data
        except Exception:
            log.exception("fail get %s/%s", bucket, fnm)
            time.sleep(1)
            return None

    return get


def local_get(root: Path) -> Get:
    def get(bucket: str, fnm: str) -> bytes | None:
        try:
            with open(root / bucket / fnm, "rb") as f:
                return f.read()
        except Exception:
            log.exception("fail get %s/%s", bucket, fnm)
            time.sleep(1)
            return None

    return get


def transaction(client: redis.Redis, key: str, value: bytes | None, exp: int) -> bool:
    """RedisDB.transaction: MULTI; SET key value EX exp NX; EXEC, errors swallowed."""
    try:
        pipeline = client.pipeline(transaction=True)
        pipeline.set(key, value, exp, nx=True)  # type: ignore[arg-type]  # None fails, as in the original
        pipeline.execute()
        return True
    except Exception as exc:
        log.warning("transaction %s failed: %s", key, type(exc).__name__)
    return False


def collect(engine: sa.Engine, out: IO[str]) -> list[tuple[str, str]] | None:
    doc_locations = get_ongoing_doc_name(engine)
    print(doc_locations, file=out)
    if len(doc_locations) == 0:
        time.sleep(1)
        return None
    return doc_locations


def main_cycle(engine: sa.Engine, client: redis.Redis, get: Get, out: IO[str]) -> int:
    """One `main()`: returns how many pairs the query returned."""
    locations = collect(engine, out)
    if not locations:
        return 0
    print(f"TASKS: {len(locations)}", file=out)
    for kb_id, loc in locations:
        try:
            key = f"{kb_id}/{loc}"
            if client.exists(key):
                continue
            file_bin = get(kb_id, loc)
            transaction(client, key, file_bin, EXPIRE)
            log.info("CACHE: %s", loc)
        except Exception:
            log.exception("cycle")
    return len(locations)


def run_forever() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    engine = make_engine(os.environ["CACHETASKS_DATABASE_URL"], connect_timeout=5)
    client = redis.Redis.from_url(os.environ["CACHETASKS_REDIS_URL"])
    if os.environ.get("CACHETASKS_STORAGE") == "s3":
        import boto3

        get = s3_get(boto3.client("s3", endpoint_url=os.environ["CACHETASKS_S3_ENDPOINT_URL"]))
    else:
        get = local_get(Path(os.environ["CACHETASKS_LOCAL_ROOT"]))
    status = os.environ.get("BENCH_ORIGINAL_STATUS")
    cycles = 0
    with open(os.devnull, "w") as out:
        while True:
            pairs = main_cycle(engine, client, get, out)
            cycles += 1
            if status:
                Path(status + ".tmp").write_text(f"{cycles} {pairs}\n")
                os.replace(status + ".tmp", status)
            # close_connection() only closes connections idle for 30 s: the pooled one stays.
            time.sleep(1)


if __name__ == "__main__":
    try:
        run_forever()
    except KeyboardInterrupt:
        sys.exit(0)
