"""The servers and data one scenario needs, all of its own, all removed at the end.

A private redis-server on a free port (broker in DB 0, cache in DB 1), moto's S3 server
as a process, a PostgreSQL database created on the local server and dropped afterwards,
and a temporary folder for local storage, logs and the service's data directory.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import redis
import sqlalchemy as sa

from cachetasks import catalog
from cachetasks.cache.keys import LAST_COLLECT
from cachetasks.catalog import schema
from cachetasks.settings import FILES_QUEUE
from cachetasks.storage import LocalStorage, Storage
from cachetasks.storage.s3 import S3Storage
from testbed.processes import REPO as REPO
from testbed.processes import Processes, service_env
from testbed.servers import RedisServer, S3Server, free_port, postgres_database, stop_process, wait_until

AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
KiB, MiB = 1024, 1024 * 1024
BROKER_DB, CACHE_DB = 0, 1


@dataclass
class Lab:
    workdir: Path
    redis_server: RedisServer
    pg_url: str
    engine: sa.Engine
    s3_server: S3Server | None = None
    started: list[Any] = field(default_factory=list)  # extra processes (proxies, the original) to stop
    services: list[Processes] = field(default_factory=list)  # worker/beat groups to stop

    @property
    def pg_name(self) -> str:
        return str(sa.make_url(self.pg_url).database)

    # -- clients -------------------------------------------------------------------------------

    @property
    def cache(self) -> redis.Redis:
        return self.redis_server.client(CACHE_DB)

    @property
    def broker(self) -> redis.Redis:
        return self.redis_server.client(BROKER_DB)

    @property
    def local_root(self) -> Path:
        return self.workdir / "storage"

    def s3_client(self, endpoint: str | None = None, *, pool: int = 16) -> Any:
        assert self.s3_server is not None
        config = botocore.config.Config(max_pool_connections=pool, s3={"addressing_style": "path"})
        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.s3_server.url,
            region_name="us-east-1",
            aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
            config=config,
        )

    # -- settings for the service and the original ------------------------------------------------

    def env(self, storage: str, *, s3_endpoint: str | None = None, **extra: str) -> dict[str, str]:
        """Environment for a worker/beat (and the original): this lab's servers and `storage`."""
        env = {
            "CELERY_BROKER_URL": self.redis_server.url(BROKER_DB),
            "CACHETASKS_REDIS_URL": self.redis_server.url(CACHE_DB),
            "CACHETASKS_DATABASE_URL": self.pg_url,
            "CACHETASKS_DATA_DIR": str(self.workdir / "data"),
            "CACHETASKS_STORAGE": storage,
            **extra,
        }
        if storage == "s3":
            assert self.s3_server is not None
            env.update(AWS, CACHETASKS_S3_ENDPOINT_URL=s3_endpoint or self.s3_server.url)
        else:
            env["CACHETASKS_LOCAL_ROOT"] = str(self.local_root)
        return env

    def processes(self, env: dict[str, str], name: str) -> Processes:
        procs = Processes(service_env(env), self.workdir / "logs" / name)
        self.services.append(procs)
        return procs

    # -- a proxy process that adds latency -----------------------------------------------------------

    def start_proxy(self, latency: float) -> tuple[str, int]:
        """`python -m testbed.proxy` in front of the S3 server; returns (url, pid)."""
        import subprocess
        import sys

        assert self.s3_server is not None
        port_file = self.workdir / f"proxy-{uuid.uuid4().hex[:6]}.url"
        log = open(self.workdir / "proxy.log", "ab")  # noqa: SIM115 -- handed to the process
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "testbed.proxy", "--upstream", self.s3_server.url),
                *("--latency", str(latency), "--port-file", str(port_file)),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append(proc)
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), timeout=20, what="the proxy")
        return port_file.read_text().strip(), proc.pid

    # -- the cache between runs -------------------------------------------------------------------------

    def flush_cache(self) -> None:
        """Empty the cache DB of our private redis-server (cached files, claims, locks)."""
        self.cache.flushdb()

    def keys_present(self, keys: Sequence[str]) -> int:
        return int(self.cache.exists(*keys)) if keys else 0

    def wait_keys(self, keys: Sequence[str], *, timeout: float, interval: float = 0.02) -> tuple[float, float]:
        """Poll until every key exists; return the perf_counter times the first of them was seen, and
        all of them.

        One EXISTS over the keys still missing per poll; every 10th poll drops the keys that
        arrived, so the poll stays cheap for the server and for this process.
        """
        deadline = time.perf_counter() + timeout
        client = self.cache
        missing = list(keys)
        first: float | None = None
        polls = 0
        while True:
            now = time.perf_counter()
            present = client.exists(*missing) if missing else 0
            if first is None and (present or len(missing) < len(keys)):
                first = now
            if present == len(missing):  # (nothing missing: the last ones arrived while pruning)
                return first or now, now
            if now > deadline:
                raise TimeoutError(f"{len(missing) - present} of {len(keys)} keys missing after {timeout}s")
            polls += 1
            if present and polls % 10 == 0:
                with client.pipeline(transaction=False) as pipe:
                    for key in missing:
                        pipe.exists(key)
                    missing = [k for k, found in zip(missing, pipe.execute(), strict=True) if not found]
            time.sleep(interval)

    def wait_collects(self, count: int = 2, *, timeout: float = 30) -> None:
        """Wait until the running service has finished `count` more collects."""
        client = self.cache
        seen = client.get(LAST_COLLECT)
        for _ in range(count):
            wait_until(partial(_changed, client, seen), timeout=timeout, what="a collect")
            seen = client.get(LAST_COLLECT)

    def wait_service_idle(self, *, timeout: float = 120) -> None:
        """No copy queued or running (the service's rows must already be gone)."""
        self.wait_collects(2)

        def idle() -> bool:
            queued = self.broker.llen(FILES_QUEUE)
            inflight = next(iter(self.cache.scan_iter(match="cachetasks:inflight:*", count=1000)), None)
            return queued == 0 and inflight is None

        wait_until(idle, timeout=timeout, interval=0.1, what="the worker to finish its copies")


# -- the database: RAGFlow's tables, filled with generate_series ------------------------------------------

_INSERT = [
    """
    INSERT INTO document (id, kb_id, parser_id, parser_config, source_type, type, created_by, name, location,
                          size, token_num, chunk_num, progress, process_duration, suffix, run, status,
                          create_time, create_date, update_time, update_date)
    SELECT md5(:tag || i), :bucket, 'naive', '{}', 'local', 'pdf', '', :prefix || lpad(i::text, 7, '0') || :suffix,
           :prefix || lpad(i::text, 7, '0') || :suffix, :size, 0, 0, 0, 0, 'pdf', :run, '1',
           :now - (i % :spread) * 60000, now(), :now, now()
    FROM generate_series(:start, :stop) AS i
    """,
    # A file-manager file (source_type ''), linked to its document: RAGFlow's real resolver and the
    # original daemon's rule agree on (file.parent_id, location), so both read the same objects.
    """
    INSERT INTO file (id, parent_id, tenant_id, created_by, name, location, size, type, source_type,
                      create_time, create_date, update_time, update_date)
    SELECT md5('f' || :tag || i), :bucket, '', '', :prefix || lpad(i::text, 7, '0') || :suffix,
           :prefix || lpad(i::text, 7, '0') || :suffix, :size, 'pdf', '', :now, now(), :now, now()
    FROM generate_series(:start, :stop) AS i
    """,
    """
    INSERT INTO file2document (id, file_id, document_id, create_time, create_date, update_time, update_date)
    SELECT md5('l' || :tag || i), md5('f' || :tag || i), md5(:tag || i), :now, now(), :now, now()
    FROM generate_series(:start, :stop) AS i
    """,
    """
    INSERT INTO task (id, doc_id, from_page, to_page, task_type, priority, progress, retry_count,
                      create_time, create_date, update_time, update_date)
    SELECT md5('t' || :tag || i || '-' || p), md5(:tag || i), p * 12, p * 12 + 12, '', 0, :progress, 0,
           :now - (i % :spread) * 60000, now(), :now, now()
    FROM generate_series(:start, :stop) AS i, generate_series(0, :tasks - 1) AS p
    """,
]


def document_id(bucket: str, i: int, prefix: str = "docs/f") -> str:
    """The id of document `i`, as `insert_documents` makes it (md5 of its tag and number)."""
    return hashlib.md5(f"{bucket}:{prefix}:{i}".encode()).hexdigest()


def file_name(prefix: str, i: int, suffix: str = ".bin") -> str:
    """The location of document `i`, as `insert_documents` writes it."""
    return f"{prefix}{i:07d}{suffix}"


def insert_documents(
    conn: sa.Connection,
    *,
    bucket: str,
    start: int,
    count: int,
    prefix: str = "docs/f",
    suffix: str = ".bin",
    size: int = 0,
    ongoing: bool = True,
    tasks: int = 1,
    spread_minutes: int = 1,
) -> None:
    """Insert documents start..start+count-1 (document, file, file2document and task rows).

    Ongoing ones are running with tasks in progress created now; the others are done
    (run '3', progress 1) with creation times spread over `spread_minutes`.
    """
    if count <= 0:
        return
    params = {
        "tag": f"{bucket}:{prefix}:",
        "bucket": bucket,
        "prefix": prefix,
        "suffix": suffix,
        "size": size,
        "run": "1" if ongoing else "3",
        "progress": 0.1 if ongoing else 1.0,
        "now": int(time.time() * 1000),
        "spread": max(1, spread_minutes),
        "start": start,
        "stop": start + count - 1,
        "tasks": tasks,
    }
    for statement in _INSERT:
        conn.execute(sa.text(statement), params)


def insert_ragflow_sized(engine: sa.Engine, *, bucket: str, before: int, after: int) -> None:
    """Add ongoing documents before+1..after (two tasks each) and ten times as many finished ones, as a
    RAGFlow database holds them, then ANALYZE. Large loads drop the indexes and build them afterwards."""
    big = after - before > 50_000
    indexes = [i for t in schema.metadata.sorted_tables for i in t.indexes]
    with engine.begin() as conn:
        if big:  # a bulk load builds indexes far faster afterwards than row by row
            for index in indexes:
                conn.execute(sa.text(f'DROP INDEX "{index.name}"'))
        insert_documents(conn, bucket=bucket, start=before + 1, count=after - before, tasks=2)
        insert_documents(
            conn,
            bucket=bucket,
            prefix="old/f",
            start=10 * before + 1,
            count=10 * (after - before),
            ongoing=False,
            spread_minutes=20,
        )
        if big:
            conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
            for index in indexes:
                index.create(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))


def clear_documents(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE task, document, file, file2document"))


# -- storage data ------------------------------------------------------------------------------------------


def payload(i: int, size: int, block: bytes) -> bytes:
    """`size` incompressible bytes, unique per file."""
    head = f"file {i}\n".encode()
    body = (block * (size // len(block) + 1))[: size - len(head)]
    return head + body


def put_files(storage: Storage, bucket: str, names: Sequence[str], size: int, *, threads: int = 8) -> None:
    """`size` bytes, unique per file, at each of `names` in `bucket`, where `storage` reads them."""
    block = os.urandom(min(size, 1 * MiB) or 1)
    storage.put(bucket, names[0], payload(0, size, block))  # first alone: it may create the bucket
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: storage.put(bucket, names[i], payload(i, size, block)), range(1, len(names))))


def put_s3(client: Any, bucket: str, names: Sequence[str], size: int, *, threads: int = 8) -> None:
    put_files(S3Storage(client), bucket, names, size, threads=threads)


def put_local(root: Path, bucket: str, names: Sequence[str], size: int) -> None:
    put_files(LocalStorage(root), bucket, names, size, threads=1)


# -- the lab itself ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def lab(*, s3: bool = True) -> Iterator[Lab]:
    """Start everything a scenario needs; stop and remove all of it, also on Ctrl-C or SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="cachetasks-bench-"))
    stack = contextlib.ExitStack()
    try:
        with stack:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            server = RedisServer(workdir / "redis", port=free_port()).start()
            stack.callback(server.stop)
            s3_server = None
            if s3:
                s3_server = S3Server(workdir / "moto").start()
                stack.callback(s3_server.stop)
            pg_url = stack.enter_context(postgres_database())
            engine = catalog.make_engine(pg_url, connect_timeout=5)
            stack.callback(engine.dispose)
            schema.create_missing(engine)
            the_lab = Lab(workdir=workdir, redis_server=server, pg_url=pg_url, engine=engine, s3_server=s3_server)
            stack.callback(_stop_all, the_lab)
            yield the_lab
    finally:
        signal.signal(signal.SIGTERM, previous)


def _changed(client: redis.Redis, seen: object) -> bool:
    return client.get(LAST_COLLECT) not in (None, seen)


def _stop_all(the_lab: Lab) -> None:
    for procs in the_lab.services:
        procs.stop_all()
    for proc in the_lab.started:
        stop_process(proc, grace=5)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
