"""The Prometheus exporter: the counters every process keeps in Redis, turned into metrics at scrape time.

Workers, collects and the listener add to counters in one Redis hash (`cache.counters`); the
exporter reads that hash, the broker's queue lengths, the last full collect's report and which
listeners run. Serve it with
`python -m cachetasks metrics` or by setting CACHETASKS_METRICS_PORT on a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from ..cache import Cache
from ..cache.client import make_redis
from ..cache.counters import COLLECT_BUCKETS, COPY_BUCKETS
from ..cache.keys import LAST_COLLECT, LAST_REPORT, METRICS
from ..listener import Outcome, Role, running
from ..settings import COLLECT_QUEUE, FILES_QUEUE, Settings

log = logging.getLogger(__name__)


class RedisCollector(Collector):
    """Reads the shared counters at scrape time."""

    def __init__(self, cache: redis.Redis, broker: redis.Redis) -> None:
        self.cache = cache
        self.broker = broker
        self._cache = Cache(cache)

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("cachetasks_up", "1 when the exporter can read Redis")
        try:
            with self.cache.pipeline(transaction=False) as pipe:
                pipe.hgetall(METRICS)
                pipe.hgetall(LAST_REPORT)
                pipe.get(LAST_COLLECT)
                raw, report_raw, last = pipe.execute()
            held = self._cache.stored_bytes()  # what is in Redis now, not what the last collect saw
            listeners = running(self.cache)
            queues = {q: int(self.broker.llen(q)) for q in (COLLECT_QUEUE, FILES_QUEUE)}
        except redis.RedisError as exc:
            log.warning("metrics unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        m = {_text(k): float(v) for k, v in raw.items()}
        report = {_text(k): float(v) for k, v in report_raw.items()}
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
        yield CounterMetricFamily("cachetasks_files_cached", "files written to the cache", m.get("files_cached", 0))
        yield CounterMetricFamily("cachetasks_bytes_cached", "bytes written to the cache", m.get("bytes_cached", 0))
        yield CounterMetricFamily("cachetasks_collects", "collect cycles run", m.get("collects", 0))
        yield CounterMetricFamily("cachetasks_collect_hits", "ongoing files found already cached", m.get("hits", 0))
        yield CounterMetricFamily("cachetasks_collect_misses", "ongoing files enqueued for a copy", m.get("misses", 0))
        yield CounterMetricFamily(
            "cachetasks_collect_caught",
            "files collect enqueued that the listener had not: it was down, late, or their rows were not yet visible",
            m.get("caught", 0),
        )
        yield CounterMetricFamily(
            "cachetasks_listener_files",
            "files the listener enqueued a copy of as RAGFlow queued their tasks",
            m.get("listener:files", 0),
        )
        messages = CounterMetricFamily(
            "cachetasks_listener_messages", "RAGFlow task messages the listener read, by outcome", labels=["outcome"]
        )
        for outcome in Outcome:
            messages.add_metric([outcome.value], m.get(f"listener:{outcome.value}", 0))
        yield messages
        roles = GaugeMetricFamily("cachetasks_listeners", "listener processes running, by role", labels=["role"])
        for role in Role:
            roles.add_metric([role.value], sum(p.role is role for p in listeners))
        yield roles
        yield _histogram("cachetasks_collect_duration_seconds", "collect duration", m, "collect_seconds")
        yield _histogram("cachetasks_copy_duration_seconds", "copy duration of cached files", m, "copy_seconds")
        gauges = {
            "cachetasks_ongoing_files": ("ongoing files at the last full collect", report.get("ongoing", 0)),
            "cachetasks_in_flight_files": ("files being copied at the last full collect", report.get("in_flight", 0)),
            "cachetasks_skipped_files": (
                "files remembered as not cacheable at the last full collect",
                report.get("skipped", 0),
            ),
            "cachetasks_held_bytes": ("bytes of the files the cache holds", float(held)),
            "cachetasks_last_collect_timestamp_seconds": ("unix time of the last collect", float(last or 0)),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value)
        depth = GaugeMetricFamily("cachetasks_queue_depth", "messages waiting in a broker queue", labels=["queue"])
        for queue, length in queues.items():
            depth.add_metric([queue], length)
        yield depth


BUCKETS = {"collect_seconds": COLLECT_BUCKETS, "copy_seconds": COPY_BUCKETS}


def _histogram(name: str, doc: str, m: Mapping[str, float], key: str) -> HistogramMetricFamily:
    cumulative, buckets = 0.0, []
    for bound in [*BUCKETS[key], "+Inf"]:
        cumulative += m.get(f"{key}:bucket:{bound}", 0)
        buckets.append((str(bound), cumulative))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=m.get(f"{key}:sum", 0))


def registry(cache: redis.Redis, broker: redis.Redis) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RedisCollector(cache, broker))
    return reg


def serve(settings: Settings) -> tuple[Any, Any]:
    """Serve /metrics on CACHETASKS_METRICS_HOST:CACHETASKS_METRICS_PORT from a background thread."""
    cache = make_redis(settings.redis_url, timeout=settings.redis_timeout)
    broker = make_redis(settings.broker_url, timeout=settings.redis_timeout)
    server, thread = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=registry(cache, broker)
    )
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return server, thread


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
