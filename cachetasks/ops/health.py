"""Can the service reach everything it is configured to use? `python -m cachetasks check`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sqlalchemy as sa

from .. import catalog, storage
from ..cache.client import make_redis
from ..catalog import schema
from ..environment import masked_url
from ..errors import CachetasksError, first_line
from ..settings import Settings


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_all(settings: Settings) -> list[Check]:
    probes: list[tuple[str, Callable[[], str]]] = [
        ("broker", lambda: _redis(settings, settings.broker_url, cache=False)),
        ("cache", lambda: _redis(settings, settings.redis_url, cache=True)),
        ("database", lambda: _database(settings)),
        ("storage", lambda: _storage(settings)),
    ]
    return [_run(name, probe) for name, probe in probes]


def _run(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except CachetasksError as exc:
        return Check(name, False, str(exc).strip(": ") or type(exc).__name__)
    except Exception as exc:  # any library's failure is a failed check, with its reason
        return Check(name, False, f"{type(exc).__name__}: {first_line(exc)}")


def _redis(settings: Settings, url: str, *, cache: bool) -> str:
    client = make_redis(url, timeout=settings.redis_timeout)
    try:
        client.ping()
        where = masked_url(url)
        if not cache:
            return f"Redis at {where}"
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "?")
        note = "" if not str(policy).startswith("allkeys") else " (allkeys-* can evict queued tasks: use volatile-*)"
        return f"Redis at {where}, maxmemory-policy {policy}{note}"
    finally:
        client.close()


def _database(settings: Settings) -> str:
    engine = catalog.make_engine(settings.sqlalchemy_url, connect_timeout=settings.db_connect_timeout)
    try:
        if settings.ongoing_sql is None:
            tables = set(sa.inspect(engine).get_table_names())
            missing = sorted({t.name for t in schema.metadata.sorted_tables} - tables)
            if missing:
                raise CachetasksError(f"missing tables: {', '.join(missing)} (python -m cachetasks initdb)")
        ongoing = catalog.ongoing(engine, window_seconds=settings.ongoing_window, sql=settings.ongoing_sql)
        where = masked_url(engine.url.render_as_string(hide_password=True))
        return f"{where}: {len(ongoing.documents)} ongoing files"
    finally:
        engine.dispose()


def _storage(settings: Settings) -> str:
    backend = storage.from_settings(settings)
    try:
        return backend.check()
    finally:
        backend.close()
