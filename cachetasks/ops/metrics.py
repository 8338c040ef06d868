"""Prometheus metrics, kept in Redis so that one endpoint speaks for every worker on every machine.

Workers add to counters and histogram buckets in one hash (one pipelined round trip per
event); the exporter turns that hash, the broker's queue lengths and the last collect's
report into Prometheus metrics at scrape time. Serve it with `python -m cachetasks metrics`
or by setting CACHETASKS_METRICS_PORT on a worker.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from ..cache.keys import HELD, LAST_COLLECT, LAST_REPORT, METRICS
from ..settings import COLLECT_QUEUE, FILES_QUEUE, Settings

log = logging.getLogger(__name__)

COLLECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COPY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _bucket(name: str, buckets: tuple[float, ...], seconds: float) -> str:
    index = bisect.bisect_left(buckets, seconds)
    return f"{name}:bucket:{buckets[index] if index < len(buckets) else '+Inf'}"


def _observe(pipe: Any, name: str, buckets: tuple[float, ...], seconds: float) -> None:
    pipe.hincrby(METRICS, _bucket(name, buckets, seconds), 1)
    pipe.hincrbyfloat(METRICS, f"{name}:sum", seconds)


def record_collect(client: redis.Redis, report: Mapping[str, float]) -> None:
    """Count a finished collect: hits (already cached), misses (enqueued) and its duration."""
    with contextlib.suppress(redis.RedisError), client.pipeline(transaction=False) as pipe:
        pipe.hincrby(METRICS, "collects", 1)
        pipe.hincrby(METRICS, "hits", int(report["cached"]))
        pipe.hincrby(METRICS, "misses", int(report["enqueued"]))
        _observe(pipe, "collect_seconds", COLLECT_BUCKETS, float(report["seconds"]))
        pipe.hset(LAST_REPORT, mapping={k: str(v) for k, v in report.items()})
        pipe.execute()


class CopyRecorder:
    """Counts copies in memory and adds them to Redis once per `every` seconds, from one thread.

    A copy of a small file takes a couple of Redis round trips; counting it must not add one.
    """

    def __init__(self, client: redis.Redis, *, every: float = 1.0) -> None:
        self.client = client
        self.every = every
        self._counts: collections.Counter[str] = collections.Counter()
        self._seconds = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, outcome: str, size: int, seconds: float) -> None:
        """Count one copy's outcome (cached, missing, too-large, error:..., ...)."""
        with self._lock:
            self._counts[f"outcome:{outcome}"] += 1
            if outcome == "cached":
                self._counts["bytes_cached"] += size
                self._counts[_bucket("copy_seconds", COPY_BUCKETS, seconds)] += 1
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
                for field, n in counts.items():
                    pipe.hincrby(METRICS, field, n)
                if seconds:
                    pipe.hincrbyfloat(METRICS, "copy_seconds:sum", seconds)
                pipe.execute()
        except redis.RedisError:
            with self._lock:  # keep them for the next flush
                self._counts.update(counts)
                self._seconds += seconds


class RedisCollector(Collector):
    """Reads the shared counters at scrape time."""

    def __init__(self, cache: redis.Redis, broker: redis.Redis) -> None:
        self.cache = cache
        self.broker = broker

    def collect(self) -> Iterator[Any]:
        try:
            with self.cache.pipeline(transaction=False) as pipe:
                pipe.hgetall(METRICS)
                pipe.hgetall(LAST_REPORT)
                pipe.get(HELD)
                pipe.get(LAST_COLLECT)
                raw, report_raw, held, last = pipe.execute()
            queues = {q: int(self.broker.llen(q)) for q in (COLLECT_QUEUE, FILES_QUEUE)}
        except redis.RedisError as exc:
            log.warning("metrics unavailable: %s", type(exc).__name__)
            up = GaugeMetricFamily("cachetasks_up", "1 when the exporter can read Redis")
            up.add_metric([], 0)
            yield up
            return
        m = {_text(k): float(v) for k, v in raw.items()}
        report = {_text(k): float(v) for k, v in report_raw.items()}
        up = GaugeMetricFamily("cachetasks_up", "1 when the exporter can read Redis")
        up.add_metric([], 1)
        yield up
        outcomes = CounterMetricFamily(
            "cachetasks_copies",
            "cache_file outcomes: cached, missing, too-large, storage errors...",
            labels=["outcome"],
        )
        for name, value in sorted(m.items()):
            if name.startswith("outcome:"):
                outcomes.add_metric([name.split(":", 1)[1]], value)
        yield outcomes
        yield CounterMetricFamily("cachetasks_files_cached", "files written to the cache", m.get("outcome:cached", 0))
        yield CounterMetricFamily("cachetasks_bytes_cached", "bytes written to the cache", m.get("bytes_cached", 0))
        yield CounterMetricFamily("cachetasks_collects", "collect cycles run", m.get("collects", 0))
        yield CounterMetricFamily("cachetasks_collect_hits", "ongoing files found already cached", m.get("hits", 0))
        yield CounterMetricFamily("cachetasks_collect_misses", "ongoing files enqueued for a copy", m.get("misses", 0))
        yield _histogram("cachetasks_collect_duration_seconds", "collect duration", m, "collect_seconds")
        yield _histogram("cachetasks_copy_duration_seconds", "copy duration of cached files", m, "copy_seconds")
        gauges = {
            "cachetasks_ongoing_files": ("ongoing files at the last collect", report.get("ongoing", 0)),
            "cachetasks_in_flight_files": ("files being copied at the last collect", report.get("in_flight", 0)),
            "cachetasks_skipped_files": ("files remembered as not cacheable", report.get("skipped", 0)),
            "cachetasks_held_bytes": ("bytes the cache holds", float(held or 0)),
            "cachetasks_last_collect_timestamp_seconds": ("unix time of the last collect", float(last or 0)),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value)
        depth = GaugeMetricFamily("cachetasks_queue_depth", "messages waiting in a broker queue", labels=["queue"])
        for queue, length in queues.items():
            depth.add_metric([queue], length)
        yield depth


def _histogram(name: str, doc: str, m: Mapping[str, float], key: str) -> HistogramMetricFamily:
    bounds = COLLECT_BUCKETS if key == "collect_seconds" else COPY_BUCKETS
    cumulative, buckets = 0.0, []
    for bound in [*bounds, "+Inf"]:
        cumulative += m.get(f"{key}:bucket:{bound}", 0)
        buckets.append((str(bound), cumulative))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=m.get(f"{key}:sum", 0))


def registry(cache: redis.Redis, broker: redis.Redis) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RedisCollector(cache, broker))
    return reg


def serve(settings: Settings) -> tuple[Any, Any]:
    """Serve /metrics on CACHETASKS_METRICS_HOST:CACHETASKS_METRICS_PORT from a background thread."""
    from ..resources import make_redis  # resources builds this module's CopyRecorder

    cache, broker = make_redis(settings), make_redis(settings, url=settings.broker_url)
    server, thread = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=registry(cache, broker)
    )
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return server, thread


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
