"""Configuration as a user sets it: a custom ongoing query, and bad settings that stop the processes at start."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.ops.demo import insert_document
from testbed.processes import CELERY, REPO, Processes, service_env
from testbed.servers import stop_process, wait_until
from tests.support.e2e import put_local, start_service, wait_for_collects

Start = Callable[[dict[str, str]], Processes]
SECRET = "s3cr3t"


def test_custom_ongoing_sql_decides_what_is_cached(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """CACHETASKS_ONGOING_SQL replaces RAGFlow's query: its rows since :since_ms are cached, nothing else."""
    # Given a queue table of our own in the task database, and a service that reads it
    with sqlite_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE my_queue (bucket TEXT, path TEXT, added_ms BIGINT)"))
    sql = "SELECT bucket, path FROM my_queue WHERE added_ms >= :since_ms"
    start_service(processes({**env, "CACHETASKS_ONGOING_SQL": sql}), cache.client)
    for name in ("queued.txt", "queued-long-ago.txt", "ragflow.txt"):
        put_local(env, "q", name, name.encode())
    # When a file is queued now, one was queued 601 s ago, and a RAGFlow document is ongoing
    now_ms = int(time.time() * 1000)
    with sqlite_engine.begin() as conn:
        rows = [
            {"bucket": "q", "path": "queued.txt", "added_ms": now_ms},
            {"bucket": "q", "path": "queued-long-ago.txt", "added_ms": now_ms - 601_000},
        ]
        conn.execute(sa.text("INSERT INTO my_queue VALUES (:bucket, :path, :added_ms)"), rows)
        insert_document(conn, kb_id="q", location="ragflow.txt")
    # Expect only the recent queue entry cached
    wait_until(lambda: cache.client.exists("q/queued.txt"), timeout=5, what="the queued file")
    wait_for_collects(cache.client, 2)
    assert cache.client.get("q/queued.txt") == b"queued.txt"
    assert cache.client.exists("q/queued-long-ago.txt", "q/ragflow.txt") == 0


BAD_SETTINGS = {
    "negative-ttl": ({"CACHETASKS_TTL": "-1"}, "CACHETASKS_TTL"),
    "unknown-storage": ({"CACHETASKS_STORAGE": "ftp"}, "CACHETASKS_STORAGE"),
    "broker-not-a-url": ({"CELERY_BROKER_URL": "notaurl"}, "CELERY_BROKER_URL"),
    "s3-without-endpoint-or-region": ({"CACHETASKS_STORAGE": "s3"}, "CACHETASKS_S3_ENDPOINT_URL"),
    "broker-bad-port": ({"CELERY_BROKER_URL": f"redis://:{SECRET}@host:bad/0"}, "CELERY_BROKER_URL"),
    "database-bad-port": (
        {"CACHETASKS_DATABASE_URL": f"postgresql://app:{SECRET}@db:bad/ragflow"},
        "CACHETASKS_DATABASE_URL",
    ),
}


@pytest.mark.parametrize(("bad", "variable"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_setting_stops_worker_and_beat_at_start_naming_the_variable_but_no_password(
    bad: dict[str, str], variable: str, env: dict[str, str]
) -> None:
    """With a bad setting, worker and beat exit non-zero within seconds; stderr names the variable, not the secret."""
    # Given settings that are good but for one value (on our private Redis, should it be accepted)
    settings = service_env({**env, **bad})
    # When a worker and a beat are started with them
    started = time.monotonic()
    procs = {
        command: subprocess.Popen(
            [*CELERY, command],
            cwd=REPO,
            env=settings,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for command in ("worker", "beat")
    }
    outputs = {}
    try:
        for command, proc in procs.items():
            out, err = proc.communicate(timeout=20)
            outputs[command] = (proc.returncode, time.monotonic() - started, out.decode(), err.decode())
    finally:
        for proc in procs.values():
            stop_process(proc, grace=2)
    # Expect both to have stopped quickly, each saying which variable is wrong
    for command, (code, seconds, out, err) in outputs.items():
        assert code != 0, command
        assert seconds < 10, command
        assert variable in err, (command, err)
        assert SECRET not in out + err, command
