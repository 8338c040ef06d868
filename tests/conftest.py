"""Fixtures that bring the real servers: a private redis-server, moto's S3 server, a PostgreSQL
database of our own, and the storage emulators. The worker and beat processes are `e2e/conftest.py`'s.

Tiers, each with its own per-test timeout: `unit/` (no I/O), `adapters/` (real servers, no
worker or beat: `make test-fast`), `e2e/` (worker and beat processes). A missing PostgreSQL
skips the tests that need it on a laptop, and fails them in CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import sqlalchemy as sa

from cachetasks import catalog, storage
from cachetasks.cache import Cache
from cachetasks.catalog import schema
from cachetasks.settings import Settings
from testbed.datalake import DataLakeStub
from testbed.proxy import S3Proxy
from testbed.servers import RedisServer, S3Server, mysql_database, postgres_database
from testbed.storage_servers import AzuriteServer, GcsEmulator, Missing

RAGFLOW_VARIABLES = ("STORAGE_IMPL", "DB_TYPE")  # RAGFlow's own, read with CACHETASKS_RAGFLOW_CONF
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own cachetasks, Celery, AWS or RAGFlow settings."""
    for name in list(os.environ):
        if name.startswith(("CACHETASKS_", "CELERY_", "AWS_", "FLOWER_", "RAGFLOW_")) or name in RAGFLOW_VARIABLES:
            monkeypatch.delenv(name)


# -- servers (one per session) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    try:
        with postgres_database() as url:
            yield url
    except sa.exc.OperationalError as exc:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL is not reachable: {exc.orig}")


def _missing(what: str, reason: object) -> None:
    """A server that is not here: a skip on a laptop, a failure in CI."""
    if IN_CI:
        pytest.fail(f"{what}: {reason}")
    pytest.skip(f"{what}: {reason}")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite's Blob service, from the npm registry (scripts/ensure-services.sh azurite installs it)."""
    try:
        server = AzuriteServer(tmp_path_factory.mktemp("azurite")).start()
    except Missing as exc:
        _missing("Azurite", exc)
    yield server
    server.stop()


GCS_BUCKET = "ragflow-gcs"


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """The GCS emulator, with RAGFlow's one bucket; google-cloud-storage finds it by STORAGE_EMULATOR_HOST."""
    try:
        server = GcsEmulator(tmp_path_factory.mktemp("gcs"), GCS_BUCKET).start()
    except Missing as exc:
        _missing("the GCS emulator", exc)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        yield server
    server.stop()


@pytest.fixture(scope="session")
def datalake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataLakeStub]:
    """The HTTPS stand-in for Data Lake's DFS endpoint and Entra ID (no emulator offers them)."""
    stub = DataLakeStub(tmp_path_factory.mktemp("datalake")).start()
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def mariadb_url(mysql_url: str) -> str:
    """Our MySQL/MariaDB database as a plain `mysql://user@host:port/db` URL, as OpenDAL's mysql scheme takes it."""
    return sa.make_url(mysql_url).set(drivername="mysql", query={}).render_as_string(hide_password=False)


# -- per-test state ----------------------------------------------------------------------------


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path) -> dict[str, str]:
    """Settings (as environment variables) for one test: an empty private Redis, SQLite, a local folder."""
    redis_server.client().flushall()  # our own server: nobody else's data
    return {
        "CELERY_BROKER_URL": redis_server.url(0),
        "CACHETASKS_REDIS_URL": redis_server.url(1),
        "CACHETASKS_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[Any]:
    """A boto3 client talking straight to an empty S3 server (for setting up objects)."""
    s3_server.reset()
    client = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1", **_aws_kwargs())
    yield client
    client.close()


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[S3Proxy]:
    """The counting, fault-injecting proxy in front of the S3 server; the service talks to this."""
    proxy = S3Proxy(s3_server.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def s3_env(env: dict[str, str], s3: Any, s3_proxy: S3Proxy) -> dict[str, str]:
    """`env` with S3 storage behind the proxy."""
    return {**env, **AWS, "CACHETASKS_STORAGE": "s3", "CACHETASKS_S3_ENDPOINT_URL": s3_proxy.url}


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    """RAGFlow's tables in our PostgreSQL database, emptied after the test."""
    engine = catalog.make_engine(pg_url, connect_timeout=5)
    schema.create_missing(engine)
    yield engine
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE task, document, file, file2document"))
    engine.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    try:
        with mysql_database() as url:
            yield url
    except sa.exc.OperationalError as exc:
        if IN_CI:
            raise
        pytest.skip(f"MySQL/MariaDB is not reachable: {exc.orig}")


@pytest.fixture
def mysql_engine(mysql_url: str) -> Iterator[sa.Engine]:
    """RAGFlow's tables in our MySQL/MariaDB database (RAGFlow's collation, MySQL 8's sql_mode), emptied after."""
    engine = catalog.make_engine(mysql_url, connect_timeout=5)
    schema.create_missing(engine)
    yield engine
    with engine.begin() as conn:
        for table in ("task", "document", "file", "file2document"):
            conn.execute(sa.text(f"TRUNCATE TABLE {table}"))
    engine.dispose()


@pytest.fixture
def sqlite_engine(env: dict[str, str]) -> Iterator[sa.Engine]:
    """RAGFlow's tables in the test's SQLite file (the embedded default)."""
    engine = catalog.make_engine(Settings.from_env(env).sqlalchemy_url, connect_timeout=5)
    Path(env["CACHETASKS_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    schema.create_missing(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def cache(redis_server: RedisServer) -> Iterator[Cache]:
    """The cache on the test's Redis database (db 1, as in `env`)."""
    client = redis_server.client(1)
    yield Cache(client)
    client.close()


@pytest.fixture
def redis_server_with(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers of this test's own with the given arguments; all are stopped after the test."""
    servers: list[RedisServer] = []

    def make(*args: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", args=args).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


TIMEOUTS = {"unit": 10, "adapters": 30, "e2e": 120}  # seconds per test, unless a test says otherwise


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIMEOUTS and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUTS[tier]))
    items[:] = _long_ones_first_in_each_half(items)


def _long_ones_first_in_each_half(items: list[pytest.Item]) -> list[pytest.Item]:
    """The tests marked slow or soak, shared between the two halves of the list and first in each.

    `scripts/test.sh` runs the suite on two processes that each take one half of this list in
    order and then take over the end of the other's: every long test starts at once, each beside
    the other half's, instead of two of them ending the run one after the other.
    """
    long = [item for item in items if item.get_closest_marker("slow") or item.get_closest_marker("soak")]
    rest = [item for item in items if item not in long]
    first, second = long[::2], long[1::2]
    middle = len(items) // 2 - len(first)
    return [*first, *rest[:middle], *second, *rest[middle:]]


def settings_for(env: dict[str, str], **overrides: str) -> Settings:
    return Settings.from_env({**env, **overrides})


def storage_for(env: dict[str, str], **overrides: str) -> storage.Storage:
    return storage.from_settings(settings_for(env, **overrides))


def redis_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _aws_kwargs() -> dict[str, str]:
    return {"aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"]}
