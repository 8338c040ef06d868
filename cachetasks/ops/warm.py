"""Collect and copy in this process, without a broker: `python -m cachetasks warm`."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import sqlalchemy as sa

from .. import collector, copier
from ..cache import Cache
from ..errors import Transient
from ..ref import FileRef
from ..settings import Settings
from ..storage import Storage

Progress = Callable[[int, int], None]


def warm_once(
    engine: sa.Engine, cache: Cache, storage: Storage, settings: Settings, *, progress: Progress = lambda d, t: None
) -> collections.Counter[str]:
    """One collect whose copies run here, on a pool of CACHETASKS_CONCURRENCY threads; count outcomes."""
    outcomes: collections.Counter[str] = collections.Counter()
    owner = f"warm-{uuid.uuid4().hex}"

    def copy(ref: FileRef) -> str:
        try:
            return copier.copy_file(cache, storage, ref, settings, owner=owner).outcome.value
        except Transient as exc:
            cache.release(ref, owner)
            return f"error:{type(exc).__name__}"

    def run_copies(refs: Sequence[FileRef]) -> None:
        progress(0, len(refs))
        with ThreadPoolExecutor(settings.concurrency) as pool:
            for done, future in enumerate(as_completed(pool.submit(copy, ref) for ref in refs), 1):
                outcomes[future.result()] += 1
                progress(done, len(refs))

    report = collector.collect(engine, cache, settings, enqueue=run_copies)
    if report is None:
        outcomes["collect-busy"] += 1
    else:
        outcomes["already-cached"] += report.cached
        outcomes["in-flight-elsewhere"] += report.in_flight
    return outcomes


def bar(done: int, total: int, width: int = 30) -> str:
    filled = width if total == 0 else width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
