"""One collect cycle: ongoing files -> which are missing -> claim them -> enqueue their copies."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import redis
import sqlalchemy as sa

from . import catalog
from .cache import COLLECT_LOCK, LAST_COLLECT, Cache, Scan
from .ref import FileRef, address_problem
from .settings import Settings

log = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[FileRef]], None]


@dataclass(frozen=True)
class CollectReport:
    ongoing: int
    enqueued: int
    cached: int
    in_flight: int
    skipped: int
    evicted: int
    invalid: int
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def collect(
    engine: sa.Engine,
    cache: Cache,
    settings: Settings,
    enqueue: Enqueue,
    *,
    addresses: catalog.AddressBook | None = None,
) -> CollectReport | None:
    """Run one cycle; None when another collect holds the lock (collects never overlap).

    With an address book (the worker keeps one per process), RAGFlow's query is split into
    the ongoing document ids and their remembered addresses.
    """
    with exclusive(cache.client) as ours:
        if not ours:
            log.info("collect skipped: another collect is running")
            return None
        return _collect(engine, cache, settings, enqueue, addresses)


LOCK_SECONDS = 10  # renewed every third of it while a collect runs: a dead worker's lock passes in 10 s
_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@contextlib.contextmanager
def exclusive(client: redis.Redis, seconds: int = LOCK_SECONDS) -> Iterator[bool]:
    """Hold the collect lock while the block runs, however long it takes; yields False if it is taken."""
    token, ms = uuid.uuid4().hex, seconds * 1000
    if not client.set(COLLECT_LOCK, token, nx=True, px=ms):
        yield False
        return
    done = threading.Event()

    def renew() -> None:
        while not done.wait(seconds / 3):
            try:
                if not client.eval(_EXTEND, 1, COLLECT_LOCK, token, ms):
                    log.warning("the collect lock was lost: another collect may run alongside this one")
                    return
            except redis.RedisError as exc:
                log.debug("could not renew the collect lock: %s", type(exc).__name__)

    renewer = threading.Thread(target=renew, name="cachetasks-collect-lock", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        done.set()
        renewer.join()
        client.eval(_RELEASE, 1, COLLECT_LOCK, token)


def _collect(
    engine: sa.Engine, cache: Cache, settings: Settings, enqueue: Enqueue, addresses: catalog.AddressBook | None
) -> CollectReport:
    started = time.perf_counter()
    if addresses is not None and settings.ongoing_sql is None:
        refs = addresses.ongoing(engine, window_seconds=settings.ongoing_window)
    else:
        refs = catalog.ongoing(engine, window_seconds=settings.ongoing_window, sql=settings.ongoing_sql)
    valid = [ref for ref in refs if not _unusable(ref)]
    invalid = len(refs) - len(valid)
    scan = cache.scan(valid, inflight_ttl=settings.inflight_ttl, ttl=settings.ttl)
    if scan.claimed:
        try:
            enqueue(scan.claimed)
        except BaseException:
            cache.unclaim(scan.claimed)
            raise
    cache.ledger.prune()
    if settings.evict_on_done:
        done = cache.ledger.owned() - {ref.key for ref in valid}
        if done:
            log.info("evicted %d files whose documents are no longer ongoing", cache.ledger.evict(done))
    cache.client.set(LAST_COLLECT, str(time.time()))
    report = CollectReport(
        ongoing=len(refs),
        enqueued=len(scan.claimed),
        cached=scan.counts[Scan.CACHED],
        in_flight=scan.counts[Scan.IN_FLIGHT],
        skipped=scan.counts[Scan.SKIPPED],
        evicted=scan.counts[Scan.EVICTED],
        invalid=invalid,
        seconds=round(time.perf_counter() - started, 4),
    )
    # Every second: say something at INFO only when there was something to do.
    log.log(
        logging.INFO if report.enqueued else logging.DEBUG,
        "collect: %d ongoing, %d enqueued, %d cached, %d in flight, %d skipped, %d evicted by Redis in %.3fs",
        report.ongoing,
        report.enqueued,
        report.cached,
        report.in_flight,
        report.skipped,
        report.evicted,
        report.seconds,
    )
    return report


# Ongoing files stay ongoing for many cycles: judge each address once, warn about it once.
_verdicts: dict[FileRef, str | None] = {}
_VERDICTS_MAX = 500_000


def _unusable(ref: FileRef) -> bool:
    """True for an address no backend may read; warned about once per process, not every second."""
    try:
        return _verdicts[ref] is not None
    except KeyError:
        pass
    if len(_verdicts) >= _VERDICTS_MAX:
        _verdicts.clear()
    problem = _verdicts[ref] = address_problem(*ref)
    if problem:
        log.warning("ignoring ongoing file %.200r / %.200r: %s", ref.bucket, ref.location, problem)
    return problem is not None
