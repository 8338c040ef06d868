"""The task database: which files are ongoing, read from RAGFlow's tables (or a query of your own).

- `schema`     RAGFlow's task tables, as far as the service reads them
- `queries`    the ongoing query and its parts
- `addresses`  the address book: which document is ongoing at which address, kept between collects;
               and the addresses of announced documents, if ongoing
- `watermark`  the tasks created or updated since the last look, for collects of what changed
- `engine`     engines with a shipped driver, fast failure and bounded queries

Addresses are compared byte for byte, in Python: a database collation that merges 'Guide.pdf'
and 'guide.pdf' never decides which files are ongoing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from ..batches import batched
from ..ref import FileRef
from .addresses import AddressBook, Ongoing, addresses_of_ongoing, usable
from .engine import database_url, make_engine
from .queries import addresses_query, custom_query, first_tasks_query, ongoing_query, run

__all__ = [
    "AddressBook",
    "Ongoing",
    "addresses_of_ongoing",
    "database_url",
    "first_seen",
    "make_engine",
    "ongoing",
    "ongoing_query",
]

log = logging.getLogger(__name__)


def ongoing(
    engine: sa.Engine,
    *,
    window_seconds: int,
    sql: str | None = None,
    now: float | None = None,
) -> Ongoing:
    """The ongoing files, from RAGFlow's tables or from `sql` (whose rows name no document)."""
    if sql is None:
        return AddressBook().ongoing(engine, window_seconds=window_seconds, now=now)
    now_ms = int((time.time() if now is None else now) * 1000)
    params = {"since_ms": now_ms - window_seconds * 1000, "now_ms": now_ms}
    text = custom_query(sql)
    params = {name: value for name, value in params.items() if name in text.compile().params}
    refs = _refs(run(engine, text, params, width=2))
    return Ongoing(dict.fromkeys(refs, ""), refs)


def first_seen(engine: sa.Engine, *, window_seconds: int, sql: str | None = None) -> dict[FileRef, int | None]:
    """Ongoing addresses with the creation time (ms) of their oldest task; None for a custom query.

    Grouped by document in SQL and by address here, so that every database (MySQL's
    ONLY_FULL_GROUP_BY included) accepts it and addresses differing only in case stay apart.
    """
    if sql is not None:
        return dict.fromkeys(ongoing(engine, window_seconds=window_seconds, sql=sql).refs)
    since_ms = int(time.time() * 1000) - window_seconds * 1000
    first = {str(doc): int(ms) for doc, ms in run(engine, first_tasks_query(since_ms), {}, width=2)}
    seen: dict[FileRef, int | None] = {}
    for batch in batched(list(first)):
        for doc, bucket, location, _ in run(engine, addresses_query(), {"ids": batch}, width=4):
            if usable(bucket, location):
                ref, ms = FileRef(str(bucket), str(location)), first[str(doc)]
                earlier = seen.get(ref)
                seen[ref] = ms if earlier is None else min(earlier, ms)
    return seen


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
