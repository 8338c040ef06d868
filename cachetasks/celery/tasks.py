"""The two Celery tasks: thin wrappers that fetch resources, call the logic, map errors."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import redis
from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from .. import collector, copier, resources
from ..cache import counters
from ..errors import CatalogError, Transient
from ..ref import FileRef
from ..settings import FILES_QUEUE
from .app import app, settings
from .publish import publish_many

BACKOFF_FACTOR, BACKOFF_MAX = 1, 20


@app.task(name="cachetasks.collect", throws=(CatalogError, Transient))
def collect() -> dict[str, float] | None:
    """Enqueue a copy of every ongoing file that is neither cached nor in flight."""
    s = settings()
    res = resources.get(s)
    report = collector.collect(
        res.engine,
        res.cache,
        s,
        enqueue=enqueue_copies,
        addresses=res.addresses,
        waiting=files_waiting,
        outages=collector.WORKER_OUTAGES,
    )
    if report is None:
        return None
    counters.record_collect(res.redis, report.as_dict())
    return report.as_dict()


@app.task(name="cachetasks.cache_file", bind=True, throws=(Transient,))
def cache_file(self: Task[Any, Any], bucket: str, location: str) -> str:
    """Copy one file from storage into Redis, retrying transient failures with backoff."""
    s = settings()
    res = resources.get(s)
    ref, owner = FileRef(bucket, location), self.request.id or "manual"
    started = time.perf_counter()
    try:
        copy = copier.copy_file(res.cache, res.storage, ref, s, owner=owner)
    except Transient as exc:
        res.recorder.record(f"error:{type(exc).__name__}", None, 0)
        if self.request.retries >= s.max_retries:
            copier.give_up(res.cache, ref, exc, s, owner=owner)
            raise
        delay = get_exponential_backoff_interval(BACKOFF_FACTOR, self.request.retries, BACKOFF_MAX, full_jitter=True)
        with contextlib.suppress(redis.RedisError):
            res.cache.hold(ref, owner, delay + s.inflight_ttl)  # keep the claim over the wait
        raise self.retry(exc=exc, countdown=delay, max_retries=s.max_retries) from None
    res.recorder.record(copy.outcome.value, copy.written, time.perf_counter() - started)
    return copy.outcome.value


def files_waiting() -> int:
    """How many copy messages wait in the files queue."""
    return int(resources.get(settings()).broker.llen(FILES_QUEUE))


def enqueue_copies(refs: Sequence[FileRef]) -> None:
    """Publish one `cache_file(bucket, location)` per ref, pipelined through one producer."""
    publish_many(app, cache_file.name, ((ref.bucket, ref.location) for ref in refs))
