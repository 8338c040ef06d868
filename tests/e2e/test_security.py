"""Security: the queue is JSON only, no credential leaks anywhere an operator or a log reader looks, and local
storage stays inside its root."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.errors import InvalidAddress
from cachetasks.ops.demo import insert_document
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE
from cachetasks.storage.local import LocalStorage
from testbed.processes import CELERY, REPO, Processes, service_env
from testbed.proxy import Fault, S3Proxy
from testbed.servers import RedisServer, free_port, wait_until
from testbed.tcpproxy import TcpProxy
from tests.support.e2e import local_root, put_local, put_s3, start_service, wait_for_collects, warnings_in
from tests.support.messages import publish_raw, send_tasks, task_headers

Start = Callable[[dict[str, str]], Processes]


# -- JSON only -----------------------------------------------------------------------------------------------


def _pickled_task(marker: Path) -> bytes:
    """A protocol 2 task body that creates `marker` when unpickled."""

    class Trap:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return pathlib.Path.touch, (marker,)

    return pickle.dumps(((Trap(), "x.pdf"), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}))


def test_a_pickled_message_on_either_queue_is_refused_and_never_unpickled(
    env: dict[str, str],
    redis_server: RedisServer,
    sqlite_engine: sa.Engine,
    cache: Cache,
    processes: Start,
    tmp_path: Path,
) -> None:
    """A pickle put on the queues by hand (one that would create a file) is refused, logged, and gone."""
    # Given a pickle that creates a marker file when loaded (checked here, then the marker removed)
    marker = tmp_path / "unpickled"
    payload = _pickled_task(marker)
    pickle.loads(payload)
    assert marker.exists(), "the trap does not work: the test would prove nothing"
    marker.unlink()
    # and a running service
    procs = processes(env)
    start_service(procs, cache.client)
    # When it is put on the files and the collect queue, as cache_file and collect
    for queue, task in ((FILES_QUEUE, "cachetasks.cache_file"), (COLLECT_QUEUE, "cachetasks.collect")):
        publish_raw(
            env["CELERY_BROKER_URL"],
            queue,
            payload,
            content_type="application/x-python-serialize",
            headers=task_headers(task),
        )
    put_local(env, "kb1", "control.pdf", b"control")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="control.pdf")
    # Expect both refused with a log line, the queues emptied, the worker serving the control document
    wait_until(lambda: procs.log("worker").count("untrusted content") >= 2, timeout=5, what="two refusals logged")
    wait_until(lambda: cache.client.exists("kb1/control.pdf"), timeout=5, what="the control document")
    wait_for_collects(cache.client, 2)
    assert not marker.exists(), "the worker unpickled a message"
    broker = redis_server.client(0)
    try:
        assert broker.llen(FILES_QUEUE) == broker.llen(COLLECT_QUEUE) == 0
    finally:
        broker.close()
    assert procs.procs["worker"].poll() is None


# -- credentials -----------------------------------------------------------------------------------------------

REDIS_PASSWORD = "redis-Pa55-" + uuid.uuid4().hex[:8]
DB_PASSWORD = "db-Pa55-" + uuid.uuid4().hex[:8]
AWS_SECRET = "aws-Secr3t-" + uuid.uuid4().hex[:8]
FLOWER_PASSWORD = "flower-Pa55-" + uuid.uuid4().hex[:8]
SECRETS = (REDIS_PASSWORD, DB_PASSWORD, AWS_SECRET, FLOWER_PASSWORD)


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that requires a password."""
    server = RedisServer(tmp_path / "locked-redis", args=("--requirepass", REDIS_PASSWORD)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_forwarder(pg_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(sa.make_url(pg_url).port or 5432).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _run(settings: dict[str, str], *args: str) -> str:
    """Output (stdout and stderr) of a command run from the repo root with only `settings`."""
    result = subprocess.run(
        args, cwd=REPO, env=service_env(settings), capture_output=True, text=True, timeout=60, check=False
    )
    return f"$ {' '.join(args[1:])} (exit {result.returncode})\n{result.stdout}{result.stderr}"


def _flower_get(url: str) -> str:
    request = urllib.request.Request(url)
    token = base64.b64encode(f"admin:{FLOWER_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
    return f"GET {url}\n" + body.decode(errors="replace")


def _leaks(text: str) -> dict[str, list[str]]:
    """For each secret found in `text`, the lines that hold it (shortened)."""
    found: dict[str, list[str]] = {}
    for secret in SECRETS:
        lines = [line.strip()[:300] for line in text.splitlines() if secret in line]
        if lines:
            found[secret[:8] + "..."] = lines[:3]
    return found


@pytest.mark.slow
def test_no_credential_reaches_logs_errors_flower_or_the_operator_commands(
    s3_env: dict[str, str],
    s3: Any,
    s3_proxy: S3Proxy,
    locked_redis: RedisServer,
    pg_engine: sa.Engine,
    pg_url: str,
    pg_forwarder: TcpProxy,
    processes: Start,
) -> None:
    """Passwords in the Redis and database URLs and an AWS secret: the service works, and no output shows them."""
    # Given the service with a password-protected Redis (broker and cache), a database URL with a password,
    # an S3 secret key, and Flower with basic auth
    db_url = sa.make_url(pg_url).set(port=pg_forwarder.port, password=DB_PASSWORD)
    settings = {
        **s3_env,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "CELERY_BROKER_URL": locked_redis.url(0, password=REDIS_PASSWORD),
        "CACHETASKS_REDIS_URL": locked_redis.url(1, password=REDIS_PASSWORD),
        "CACHETASKS_DATABASE_URL": db_url.render_as_string(hide_password=False),
        "CACHETASKS_DB_CONNECT_TIMEOUT": "2",
        "CACHETASKS_MAX_RETRIES": "1",
    }
    cache = redis.Redis(port=locked_redis.port, db=1, password=REDIS_PASSWORD)
    procs = processes(settings)
    try:
        start_service(procs, cache)
        flower_port = free_port()
        procs.start(
            "flower",
            [
                *CELERY,
                "flower",
                f"--port={flower_port}",
                "--address=127.0.0.1",
                f"--basic-auth=admin:{FLOWER_PASSWORD}",
            ],
        )
        flower = f"http://127.0.0.1:{flower_port}"
        wait_until(lambda: _flower_get(flower + "/healthcheck"), timeout=30, what="Flower")
        # When it caches a file, retries one that storage fails, skips a missing one, refuses a bad message,
        # and loses its database for a while
        kb = "kb" + uuid.uuid4().hex[:12]
        put_s3(s3, kb, "ok.pdf", b"ok")
        put_s3(s3, kb, "flaky.pdf", b"flaky")
        s3_proxy.fail_next(3, Fault(status=503, key_contains="flaky"))
        with pg_engine.begin() as conn:
            for name in ("ok.pdf", "flaky.pdf", "missing.pdf"):
                insert_document(conn, kb_id=kb, location=name)
        wait_until(lambda: cache.exists(f"{kb}/ok.pdf", f"{kb}/flaky.pdf") == 2, timeout=15, what="the files")
        send_tasks(settings, [("cachetasks.cache_file", [1, 2, 3], {}, str(uuid.uuid4()))])
        outputs = [_run(settings, sys.executable, "-m", "cachetasks", cmd) for cmd in ("status", "check")]
        outputs.append(_run(settings, sys.executable, "-m", "cachetasks", "status", "--json"))
        outputs.append(_run(settings, sys.executable, "-m", "cachetasks", "check", "--json"))
        pg_forwarder.pause()
        time.sleep(3)
        outputs.append(_run(settings, sys.executable, "-m", "cachetasks", "status"))
        outputs.append(_run(settings, sys.executable, "-m", "cachetasks", "check"))
        pg_forwarder.resume()
        wait_for_collects(cache, 2)
        outputs.append(_run(settings, *CELERY, "inspect", "conf", "stats", "-t", "5"))
        outputs.append(_flower_get(flower + "/api/tasks"))
        outputs.append(_flower_get(flower + "/api/workers?refresh=1"))
        time.sleep(1)  # Flower inspects the workers (their configuration too) in the background
        workers = json.loads(_flower_get(flower + "/api/workers").split("\n", 1)[1])
        outputs += [_flower_get(f"{flower}/worker/{name}") for name in workers]
        procs.stop_all()
    finally:
        cache.close()
    # Expect the service to have worked, and no secret in any log or output
    assert "CatalogError" in procs.log("worker"), "the database outage did not show in the worker's log"
    assert "InjectedFault" in procs.log("worker"), "the storage failure did not show in the worker's log"
    everything = {name: procs.log(name) for name in ("worker", "beat", "flower")}
    everything |= {f"output {i}": text for i, text in enumerate(outputs)}
    leaks = {name: found for name, text in everything.items() if (found := _leaks(text))}
    assert leaks == {}, json.dumps(leaks, indent=1)


# -- local storage stays inside its root --------------------------------------------------------------------------


def test_local_storage_reads_nothing_outside_its_root_through_bucket_links_or_link_chains(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A bucket folder linked outside, a chain of links out, a link to /etc: refused; a link inside root: read."""
    # Given a running service, a secret folder next to the storage root, and links towards it
    procs = processes(env)
    start_service(procs, cache.client)
    root = local_root(env)
    secret = b"outside the root " + uuid.uuid4().hex.encode()
    outside = Path(env["CACHETASKS_DATA_DIR"]) / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(secret)
    put_local(env, "kb1", "real.txt", b"inside the root")
    (root / "kblink").symlink_to(outside, target_is_directory=True)
    (root / "kb1" / "hop2").symlink_to(outside / "secret.txt")
    (root / "kb1" / "hop1").symlink_to("hop2")
    (root / "kb1" / "passwd").symlink_to("/etc/passwd")
    (root / "kb1" / "inside.txt").symlink_to("real.txt")
    escapes = [("kblink", "secret.txt"), ("kb1", "hop1"), ("kb1", "passwd")]
    # When documents at those addresses become ongoing
    with sqlite_engine.begin() as conn:
        for kb, location in [*escapes, ("kb1", "inside.txt")]:
            insert_document(conn, kb_id=kb, location=location)
    wait_until(lambda: cache.client.exists("kb1/inside.txt"), timeout=5, what="the link inside the root")
    wait_for_collects(cache.client, 2)
    # Expect the escapes refused with a warning each, and no value holding anything from outside
    assert cache.client.get("kb1/inside.txt") == b"inside the root"
    assert cache.client.exists(*(f"{kb}/{loc}" for kb, loc in escapes)) == 0
    values = [cache.client.get(k) for k in cache.client.scan_iter() if cache.client.type(k) == b"string"]
    assert not [v for v in values if v and (secret in v or b"root:" in v)]
    warnings = warnings_in(procs.log("worker"))
    assert [f"{kb}/{loc}" for kb, loc in escapes if not [w for w in warnings if f"{kb}/{loc}" in w]] == []


def test_a_fifo_in_the_storage_root_is_refused_without_blocking(tmp_path: Path) -> None:
    """A named pipe where a file should be is refused at once, instead of blocking its reader for ever."""
    # Given a FIFO inside the storage root
    (tmp_path / "kb1").mkdir()
    fifo = tmp_path / "kb1" / "pipe"
    os.mkfifo(fifo)
    storage = LocalStorage(tmp_path)
    outcome: list[BaseException | str] = []

    def read() -> None:
        try:
            storage.open("kb1", "pipe", chunk_size=1024).close()
            outcome.append("opened")
        except BaseException as exc:  # recorded, judged below
            outcome.append(exc)

    # When a copy opens it
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(2)
    blocked = reader.is_alive()
    if blocked:  # let the blocked open return: a writer arrives
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
    # Expect a quick refusal as not a regular file
    assert not blocked, "opening the FIFO blocked"
    assert len(outcome) == 1 and isinstance(outcome[0], InvalidAddress)
