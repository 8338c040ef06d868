"""The task database: which files are ongoing, read from RAGFlow's tables (or a query of your own).

- `schema`     RAGFlow's task tables, as far as the service reads them
- `queries`    the ongoing query and its parts
- `addresses`  the address book a worker keeps between collects
- `engine`     engines with a shipped driver, fast failure and bounded queries
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from ..ref import FileRef
from .addresses import AddressBook, usable
from .engine import database_url, make_engine
from .queries import custom_query, ongoing_query, run

__all__ = ["AddressBook", "database_url", "first_seen", "make_engine", "ongoing", "ongoing_query"]

log = logging.getLogger(__name__)


def ongoing(
    engine: sa.Engine,
    *,
    window_seconds: int,
    sql: str | None = None,
    now: float | None = None,
) -> set[FileRef]:
    """Run the ongoing query once and return its distinct, non-empty addresses."""
    now_ms = int((time.time() if now is None else now) * 1000)
    params = {"since_ms": now_ms - window_seconds * 1000, "now_ms": now_ms}
    statement: sa.Executable
    if sql is None:
        statement = ongoing_query(params["since_ms"])
        params = {}
    else:
        text = custom_query(sql)
        statement = text
        params = {name: value for name, value in params.items() if name in text.compile().params}
    return _refs(run(engine, statement, params, width=2))


def first_seen(engine: sa.Engine, *, window_seconds: int, sql: str | None = None) -> dict[FileRef, int | None]:
    """Ongoing addresses with the creation time (ms) of their oldest task; None for a custom query."""
    if sql is not None:
        return dict.fromkeys(ongoing(engine, window_seconds=window_seconds, sql=sql))
    since_ms = int(time.time() * 1000) - window_seconds * 1000
    rows = run(engine, ongoing_query(since_ms, first_seen=True), {}, width=3)
    return {FileRef(str(b), str(loc)): int(ms) for b, loc, ms in rows if usable(b, loc)}


def _refs(rows: Iterable[Sequence[object]]) -> set[FileRef]:
    refs: set[FileRef] = set()
    unusable = 0
    for bucket, location in rows:
        if usable(bucket, location):
            refs.add(FileRef(str(bucket), str(location)))
        else:
            unusable += 1
    if unusable:
        log.debug("skipped %d ongoing rows without a bucket or location", unusable)
    return refs
