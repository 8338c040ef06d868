"""One collect cycle: ongoing files -> which are uncached -> claim them -> enqueue their copies.

Most collects look only at what changed since the last one (new tasks, changed rows); one every
CACHETASKS_RECONCILE_INTERVAL is full: every ongoing file, so that TTLs are renewed, keys deleted
or evicted are noticed, and files no longer ongoing are let go.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis
import sqlalchemy as sa

from . import catalog
from .cache import Cache, FileState
from .dispatch import Enqueue, dispatch
from .errors import CacheUnavailable, CatalogError, first_line
from .outage import OUTAGE_LOG_EVERY, OutageLog
from .settings import Settings

log = logging.getLogger(__name__)

Waiting = Callable[[], int]  # how many copy messages wait in the broker's queue


class Outages:
    """A dependency of collects that stays down: one warning per interval, and one line when it is back.

    Celery logs each failed collect at INFO, as the expected failure it is; operators watch WARNING.
    """

    def __init__(self, every: float = OUTAGE_LOG_EVERY) -> None:
        self.database = OutageLog(
            log, "collects fail: the task database does not answer", "collects reach the task database again", every
        )
        self.redis = OutageLog(log, "collects fail: Redis does not answer", "collects reach Redis again", every)

    def succeeded(self) -> None:
        self.database.succeeded()
        self.redis.succeeded()


WORKER_OUTAGES = Outages()  # the worker process's, for its collects (Celery logs their failures at INFO)


@dataclass(frozen=True)
class CollectReport:
    full: bool  # every ongoing file checked; else only those whose tasks or rows changed since the last collect
    ongoing: int  # files ongoing as of the last full collect, with the changes seen since
    checked: int  # files this collect checked in Redis (the counts below are of those)
    enqueued: int
    caught: int  # of those enqueued, files not cached (or cached for another document): a listener missed them
    cached: int
    in_flight: int
    skipped: int
    evicted: int
    invalid: int
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def collect(
    engine: sa.Engine,
    cache: Cache,
    settings: Settings,
    enqueue: Enqueue,
    *,
    addresses: catalog.AddressBook | None = None,
    waiting: Waiting | None = None,
    outages: Outages | None = None,
) -> CollectReport | None:
    """Run one cycle; None when another collect holds the lock (collects never overlap).

    The address book (the worker keeps one per process; without one, a new one looks every
    address up) says which document is ongoing at each address, so a value copied for another
    document there is replaced. With `waiting` (copies are queued in a broker), the claims of
    copies still waiting there are kept however long the queue. Raises CatalogError when the
    database fails and CacheUnavailable when Redis does, first reporting it to `outages` if
    given (a caller that reports errors itself gives none).
    """
    try:
        with cache.collect_lock() as ours:
            if not ours:
                log.info("collect skipped: another collect is running")
                return None
            report = _collect(engine, cache, settings, enqueue, addresses, waiting)
    except CatalogError as exc:
        if outages:
            outages.database.failed(exc)
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if outages:
            outages.redis.failed(exc)
        raise CacheUnavailable(f"{type(exc).__name__}: {first_line(exc)}") from exc
    if outages:
        outages.succeeded()
    return report


def _collect(
    engine: sa.Engine,
    cache: Cache,
    settings: Settings,
    enqueue: Enqueue,
    addresses: catalog.AddressBook | None,
    waiting: Waiting | None,
) -> CollectReport:
    started = time.perf_counter()
    book = addresses or catalog.AddressBook()
    try:
        return _look(engine, cache, settings, enqueue, book, waiting, started)
    except BaseException:
        book.look_at_everything()  # what this collect read as changed is lost with it: the next one is full
        raise


def _look(
    engine: sa.Engine,
    cache: Cache,
    settings: Settings,
    enqueue: Enqueue,
    book: catalog.AddressBook,
    waiting: Waiting | None,
    started: float,
) -> CollectReport:
    if waiting is not None:  # before this collect queues anything; cheap, and claims lapse unless renewed in time
        cache.keep_waiting(waiting(), inflight_ttl=settings.inflight_ttl)
    # Half an interval of slack: beat's ticks jitter, and a full collect is due at the tick nearest the interval.
    full = settings.ongoing_sql is not None or book.full_due(
        0 if settings.reconciles_every_collect else settings.reconcile_interval, slack=settings.collect_interval / 2
    )
    if settings.ongoing_sql is not None:  # its rows name no task to follow: every collect reads them all
        ongoing = catalog.ongoing(engine, window_seconds=settings.ongoing_window, sql=settings.ongoing_sql)
    elif full:
        ongoing = book.ongoing(engine, window_seconds=settings.ongoing_window)
    else:
        ongoing = book.changes(engine, window_seconds=settings.ongoing_window)
    refs = ongoing.documents
    # A full collect checks the owners of the addresses whose document changed since the last one; another
    # checks every file it names: those are the ones that changed.
    check = {ref: refs[ref] for ref in (ongoing.fresh if full else refs) if refs[ref]}
    # Only full collects start a period for telling evicted keys from deleted ones: the others see too few keys.
    dispatched = dispatch(cache, settings, refs, enqueue, check=check, collecting=full, queued=waiting is not None)
    valid, scan = dispatched.valid, dispatched.scan
    cache.prune()
    if full and settings.evict_on_done:
        done = cache.owned() - {ref.key for ref in valid}
        if done:
            log.info("evicted %d files whose documents are no longer ongoing", cache.evict(done))
    cache.collected()
    report = CollectReport(
        full=full,
        ongoing=len(refs) if full else book.files,
        checked=len(refs),
        enqueued=len(scan.claimed),
        caught=dispatched.caught,
        cached=scan.counts[FileState.CACHED],
        in_flight=scan.counts[FileState.IN_FLIGHT],
        skipped=scan.counts[FileState.SKIPPED],
        evicted=scan.counts[FileState.EVICTED],
        invalid=len(refs) - len(valid),
        seconds=round(time.perf_counter() - started, 4),
    )
    # Every second: say something at INFO only when there was something to do.
    log.log(
        logging.INFO if report.enqueued else logging.DEBUG,
        "collect (%s): %d ongoing, %d checked, %d enqueued, %d cached, %d in flight, %d skipped, "
        "%d evicted by Redis in %.3fs",
        "full" if report.full else "changes",
        report.ongoing,
        report.checked,
        report.enqueued,
        report.cached,
        report.in_flight,
        report.skipped,
        report.evicted,
        report.seconds,
    )
    return report
