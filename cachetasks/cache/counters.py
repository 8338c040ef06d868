"""The service's counters, kept in Redis so that one metrics endpoint speaks for every process.

Copies are counted in memory and added once a second from one thread (counting a copy must
not cost it a round trip); a collect adds its counts and report at its end, the listener its
counts with each batch it handled. The exporter in
`ops.metrics` reads them at scrape time.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import threading
import time
from collections.abc import Iterable, Mapping

import redis

from .keys import LAST_REPORT, METRICS

COLLECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COPY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def bucket_field(name: str, buckets: tuple[float, ...], seconds: float) -> str:
    """The hash field counting observations of `name` that fall in `seconds`' histogram bucket."""
    index = bisect.bisect_left(buckets, seconds)
    return f"{name}:bucket:{buckets[index] if index < len(buckets) else '+Inf'}"


def record_collect(client: redis.Redis, report: Mapping[str, float]) -> None:
    """Count a finished collect: hits (already cached), misses (enqueued) and of those the files it caught
    (neither cached nor claimed by the listener), and its duration. A full collect's report is kept as the
    last one: its counts are of every ongoing file, where another collect's are of the few that changed."""
    with contextlib.suppress(redis.RedisError), client.pipeline(transaction=False) as pipe:
        seconds = float(report["seconds"])
        pipe.hincrby(METRICS, "collects", 1)
        pipe.hincrby(METRICS, "hits", int(report["cached"]))
        pipe.hincrby(METRICS, "misses", int(report["enqueued"]))
        pipe.hincrby(METRICS, "caught", int(report["caught"]))
        pipe.hincrby(METRICS, bucket_field("collect_seconds", COLLECT_BUCKETS, seconds), 1)
        pipe.hincrbyfloat(METRICS, "collect_seconds:sum", seconds)
        if report.get("full", True):
            pipe.hset(LAST_REPORT, mapping={k: str(float(v)) for k, v in report.items()})
        pipe.execute()


def record_listener(
    client: redis.Redis | redis.client.Pipeline, messages: Iterable[tuple[str, int]], files: int
) -> None:
    """Count a batch the listener handled: its messages by outcome, and the copies it enqueued."""
    for outcome, n in messages:
        client.hincrby(METRICS, f"listener:{outcome}", n)
    client.hincrby(METRICS, "listener:files", files)


class CopyRecorder:
    """Counts copies in memory and adds them to Redis once per `every` seconds, from one thread."""

    def __init__(self, client: redis.Redis, *, every: float = 1.0) -> None:
        self.client = client
        self.every = every
        self._counts: collections.Counter[str] = collections.Counter()
        self._seconds = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, outcome: str, written: int | None, seconds: float) -> None:
        """Count one copy's outcome (cached, in-flight, missing, too-large, error:...); `written`: its bytes, if any."""
        with self._lock:
            self._counts[f"outcome:{outcome}"] += 1
            if written is not None:
                self._counts["files_cached"] += 1
                self._counts["bytes_cached"] += written
                self._counts[bucket_field("copy_seconds", COPY_BUCKETS, seconds)] += 1
                self._seconds += seconds
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cachetasks-metrics", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            counts, seconds = self._counts, self._seconds
            self._counts, self._seconds = collections.Counter(), 0.0
        if not counts:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for name, n in counts.items():
                    pipe.hincrby(METRICS, name, n)
                if seconds:
                    pipe.hincrbyfloat(METRICS, "copy_seconds:sum", seconds)
                pipe.execute()
        except redis.RedisError:
            with self._lock:  # keep them for the next flush
                self._counts.update(counts)
                self._seconds += seconds
