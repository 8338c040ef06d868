"""The ongoing query's SQL and the engine URL rules, without a database."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, registry, sqlite
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.engine import Dialect

from cachetasks import catalog
from cachetasks.errors import ConfigError
from cachetasks.settings import Settings


class _OtherDriverDialect(PGDialect_psycopg2):
    """A PostgreSQL driver with another name, so an explicit driver can be checked without installing one."""

    driver = "otherdriver"


registry.register("postgresql.otherdriver", __name__, "_OtherDriverDialect")


def _compiled(dialect: Dialect) -> str:
    return " ".join(str(catalog.ongoing_query(1_700_000_000_000).compile(dialect=dialect)).split())


@pytest.fixture
def engines() -> Iterator[list[sa.Engine]]:
    """Engines made by a test, disposed afterwards."""
    made: list[sa.Engine] = []
    yield made
    for engine in made:
        engine.dispose()


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
def test_ongoing_query_starts_from_task_with_explicit_joins(dialect: Dialect) -> None:
    """The query reads task, joins document, then left-joins file2document and file, as RAGFlow does."""
    # When
    sql = _compiled(dialect)
    # Expect
    assert re.search(
        r"FROM task JOIN document ON task\.doc_id = document\.id "
        r"LEFT OUTER JOIN file2document ON file2document\.document_id = document\.id "
        r"LEFT OUTER JOIN file ON file\.id = file2document\.file_id WHERE ",
        sql,
    ), sql
    assert sql.startswith("SELECT DISTINCT ")
    assert "," not in sql.split(" FROM ", 1)[1].split(" WHERE ", 1)[0], "no implicit cross join"


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
def test_ongoing_query_filters_like_ragflow(dialect: Dialect) -> None:
    """Valid, running, non-virtual documents with an unfinished task created inside the window."""
    # When
    where = _compiled(dialect).split(" WHERE ", 1)[1]
    # Expect
    for condition in ("document.status = ", "document.run = ", "document.type != ", "task.progress < "):
        assert condition in where
    assert "task.create_time >= " in where


def test_ongoing_query_binds_the_window_start() -> None:
    """The window start is a bound parameter, never pasted into the SQL."""
    # When
    compiled = catalog.ongoing_query(1_700_000_000_123).compile(dialect=postgresql.dialect())
    # Expect
    assert 1_700_000_000_123 in compiled.params.values()
    assert "1700000000123" not in str(compiled)


@pytest.mark.parametrize(
    "url",
    ["postgresql://rag:pw@db:5432/rag", "postgres://rag:pw@db:5432/rag"],
    ids=["postgresql", "postgres"],
)
def test_make_engine_gives_a_url_without_driver_psycopg2(url: str, engines: list[sa.Engine]) -> None:
    """A bare postgresql:// or postgres:// URL uses psycopg2, the driver the service ships."""
    # When
    engine = catalog.make_engine(url, connect_timeout=2)
    engines.append(engine)
    # Expect
    assert engine.url.drivername == "postgresql+psycopg2"
    assert (engine.url.host, engine.url.database, engine.url.password) == ("db", "rag", "pw")


@pytest.mark.parametrize(
    ("url", "drivername"),
    [
        ("postgresql+otherdriver://rag@db/rag", "postgresql+otherdriver"),
        ("postgresql+psycopg2://rag@db/rag", "postgresql+psycopg2"),
        ("sqlite:///rag.sqlite3", "sqlite+pysqlite"),
        ("sqlite+pysqlite:///rag.sqlite3", "sqlite+pysqlite"),
    ],
)
def test_make_engine_keeps_an_explicit_driver(url: str, drivername: str, engines: list[sa.Engine]) -> None:
    """A URL that names its driver is used as given; SQLite's default driver is named explicitly."""
    # When
    engine = catalog.make_engine(url, connect_timeout=2)
    engines.append(engine)
    # Expect
    assert engine.url.drivername == drivername


def test_make_engine_refuses_an_unparsable_url_without_echoing_it() -> None:
    """An unparsable URL is a ConfigError naming the variable, never repeating a password."""
    # When
    with pytest.raises(ConfigError) as caught:
        catalog.make_engine("rag:s3cr3t-pw@db/rag", connect_timeout=2)
    # Expect
    assert "CACHETASKS_DATABASE_URL" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["postgres+psycopg2://rag@db/rag", "mysql://rag@db/rag", "mariadb://rag@db/rag"],
    ids=["postgres+psycopg2", "mysql", "mariadb"],
)
def test_every_database_url_settings_accept_builds_an_engine(url: str, engines: list[sa.Engine]) -> None:
    """A URL that passes Settings validation gives an engine, not an error at the first collect."""
    # Given
    settings = Settings.from_env({"CACHETASKS_DATABASE_URL": url})
    # When
    engine = catalog.make_engine(settings.sqlalchemy_url, connect_timeout=2)
    engines.append(engine)
    # Expect
    assert engine.url.get_backend_name() in ("postgresql", "mysql", "mariadb")


@pytest.mark.parametrize("url", ["postgresql+psycopg://rag@db/rag", "oracle://rag@db/rag"], ids=["psycopg3", "oracle"])
def test_a_database_url_the_service_cannot_use_is_refused_at_start(url: str) -> None:
    """A driver that is not installed, or an unsupported database, is a ConfigError when settings are read."""
    # When
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CACHETASKS_DATABASE_URL": url})
    # Expect
    assert "CACHETASKS_DATABASE_URL" in str(caught.value)
