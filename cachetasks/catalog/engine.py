"""The database engine: a driver the service ships for any URL, fast failure, bounded queries."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from ..errors import ConfigError
from ..settings import DRIVERS, canonical_backend


def database_url(url: str) -> URL:
    """Parse `url` and give it a driver the service ships; ConfigError (without the URL) otherwise.

    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which is not installed; the
    common `postgres://` spelling is not a SQLAlchemy dialect at all.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError("CACHETASKS_DATABASE_URL is not a valid database URL") from None
    backend, _, driver = parsed.drivername.partition("+")
    backend = canonical_backend(backend)
    if backend not in DRIVERS:
        raise ConfigError(f"CACHETASKS_DATABASE_URL: unsupported database {backend!r} (postgresql, mysql, sqlite)")
    parsed = parsed.set(drivername=f"{backend}+{driver or DRIVERS[backend]}")
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, sa.exc.NoSuchModuleError):
        raise ConfigError(f"CACHETASKS_DATABASE_URL: the driver {parsed.drivername!r} is not installed") from None
    return parsed


def make_engine(url: str, *, connect_timeout: float) -> sa.Engine:
    """An engine for `url` that fails fast when the database is unreachable and bounds every query."""
    parsed = database_url(url)
    statement_ms = int(connect_timeout * 6000)
    connect_args: dict[str, object] = {}
    if parsed.drivername == "postgresql+psycopg2":
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
        connect_args["keepalives_idle"] = 30  # notice a server that vanished
        connect_args["options"] = f"-c statement_timeout={statement_ms}"
    elif parsed.drivername.endswith("+pymysql"):
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
        connect_args["read_timeout"] = max(1, statement_ms // 1000)
    elif parsed.get_backend_name() == "sqlite":
        connect_args["timeout"] = connect_timeout
    return sa.create_engine(
        parsed,
        connect_args=connect_args,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        pool_recycle=3600,
    )
