"""Real servers for the tests: private redis-server and moto S3 processes, a PostgreSQL database.

Each helper starts a process on a free port of the loopback interface, waits until it
answers, and stops it (and only it) when done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("CACHETASKS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("CACHETASKS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
# RAGFlow's MySQL 8 (docker/.env): utf8mb4_unicode_ci, and MySQL 8's default sql_mode, which has
# ONLY_FULL_GROUP_BY (MariaDB's default lacks it): set for every session of a test database.
MYSQL_COLLATION = "utf8mb4_unicode_ci"
MYSQL8_SQL_MODE = (
    "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], object], *, timeout: float, interval: float = 0.05, what: str = "") -> object:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # keep polling; the last error is reported
            last, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}" + (f": {last!r}" if last else ""))


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (at once if 0); the process group goes with it."""
    if proc.poll() is not None:
        return
    if grace > 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


class RedisServer:
    """A private redis-server; it may be stopped and started again on the same port."""

    def __init__(self, workdir: Path, *, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary

    def url(self, db: int = 0, *, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.workdir), "--databases", "32", *self.args]
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 -- owned by the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        password = dict(zip(self.args[::2], self.args[1::2], strict=False)).get("--requirepass")
        client = redis.Redis(port=self.port, password=password, socket_connect_timeout=0.5)
        wait_until(client.ping, timeout=10, what=f"redis-server on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            self.proc = None

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db)


class S3Server:
    """moto's standalone S3 server: a real HTTP endpoint boto3 talks to."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"moto-{self.port}.log", "ab")  # noqa: SIM115 -- owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self._answers, timeout=30, what="moto's S3 server")
        return self

    def _answers(self) -> bool:
        with urllib.request.urlopen(self.url + "/moto-api/", timeout=1) as response:
            return bool(response.status == 200)

    def reset(self) -> None:
        """Forget every bucket and object."""
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            self.proc = None


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A database of our own on the shared PostgreSQL server, dropped afterwards."""
    name = f"cachetasks_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def mysql_database() -> Iterator[str]:
    """A database of our own on the shared MySQL or MariaDB server, created like RAGFlow's, dropped afterwards.

    The URL sets MySQL 8's default sql_mode for each session, so that a query MySQL 8 refuses
    fails on MariaDB too.
    """
    name = f"cachetasks_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {MYSQL_COLLATION}"))
    try:
        url = sa.make_url(MYSQL_ADMIN_URL).set(
            database=name, query={"charset": "utf8mb4", "init_command": f"SET SESSION sql_mode='{MYSQL8_SQL_MODE}'"}
        )
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
