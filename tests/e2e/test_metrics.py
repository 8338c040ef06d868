"""The Prometheus endpoint after real work: a worker and beat cache files, and the counters tell the same story."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from cachetasks.cache import Cache
from cachetasks.cache.keys import skip_key
from cachetasks.ops.demo import insert_document
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE
from testbed.processes import Processes
from testbed.servers import free_port, wait_until
from tests.support.e2e import put_local, start_service

Start = Callable[[dict[str, str]], Processes]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
FILES = {"a.txt": b"a" * 1000, "b.txt": b"b" * 20_000, "c.txt": bytes(range(256)) * 300}


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample of http://HOST:PORT/metrics, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_worker_endpoint_counts_the_files_bytes_and_outcomes_of_real_copies(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """After a worker caches three files and finds one missing, its /metrics says exactly that, and hits grow."""
    # Given a worker and beat sharing settings that ask for a metrics endpoint (only a worker serves it), with
    # every collect full, so that each one counts every ongoing file
    port = free_port()
    procs = processes({**env, "CACHETASKS_METRICS_PORT": str(port), "CACHETASKS_RECONCILE_INTERVAL": "0"})
    start_service(procs, cache.client)
    # When three ongoing files are cached and a fourth is found missing
    with sqlite_engine.begin() as conn:
        for name, data in FILES.items():
            put_local(env, "kb1", name, data)
            insert_document(conn, kb_id="kb1", location=name)
        insert_document(conn, kb_id="kb1", location="gone.txt")
    wait_until(lambda: cache.client.exists(*(f"kb1/{n}" for n in FILES)) == 3, timeout=5, what="three cached files")
    wait_until(lambda: cache.client.exists(skip_key("kb1/gone.txt")), timeout=5, what="the missing file's skip")
    wait_until(
        lambda: value(scrape(port), "cachetasks_copies_total", outcome="missing") == 1,
        timeout=5,
        what="the missing copy counted",
    )
    before = scrape(port)
    # Expect the counters to match what happened
    assert value(before, "cachetasks_up") == 1
    assert value(before, "cachetasks_files_cached_total") == len(FILES)
    assert value(before, "cachetasks_bytes_cached_total") == sum(len(d) for d in FILES.values())
    assert value(before, "cachetasks_copies_total", outcome="cached") == len(FILES)
    assert value(before, "cachetasks_copies_total", outcome="missing") == 1
    assert value(before, "cachetasks_collect_misses_total") == len(FILES) + 1
    assert value(before, "cachetasks_copy_duration_seconds_count") == len(FILES)
    assert value(before, "cachetasks_collect_duration_seconds_count") > 0
    assert value(before, "cachetasks_collect_duration_seconds_count") == value(before, "cachetasks_collects_total")
    assert value(before, "cachetasks_held_bytes") == sum(len(d) for d in FILES.values())
    assert all(value(before, "cachetasks_queue_depth", queue=q) >= 0 for q in (COLLECT_QUEUE, FILES_QUEUE))
    assert procs.procs["beat"].poll() is None, "beat, given the same metrics port, must not try to serve it"
    # Expect each later (full) collect to count the three cached files as hits (a collect's counters are
    # written together, just after it marks itself done: the wait is on the counters)
    collects_before = value(before, "cachetasks_collects_total")
    wait_until(
        lambda: value(scrape(port), "cachetasks_collects_total") >= collects_before + 2,
        timeout=10,
        what="two more collects counted",
    )
    after = scrape(port)
    collects = value(after, "cachetasks_collects_total") - collects_before
    hits = value(after, "cachetasks_collect_hits_total") - value(before, "cachetasks_collect_hits_total")
    assert collects >= 2
    assert hits == len(FILES) * collects
    assert value(after, "cachetasks_files_cached_total") == len(FILES)


def test_metrics_command_serves_the_same_counters_as_the_worker(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """`python -m cachetasks metrics --port P` serves, from Redis, exactly what a worker's endpoint serves."""
    # Given a worker with an endpoint that cached a file, then a beat that stopped firing
    worker_port, command_port = free_port(), free_port()
    procs = processes(env)
    procs.worker(CACHETASKS_METRICS_PORT=str(worker_port))
    procs.beat()
    put_local(env, "kb1", "a.txt", FILES["a.txt"])
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="a.txt")
    wait_until(
        lambda: value(scrape(worker_port), "cachetasks_files_cached_total") == 1, timeout=30, what="the copy counted"
    )
    procs.stop("beat")

    def settled() -> bool:
        first = scrape(worker_port)
        time.sleep(1.5)
        return first == scrape(worker_port)

    wait_until(settled, timeout=15, what="counters that stopped moving")
    # When the metrics command serves on its own port
    procs.start("metrics", [sys.executable, "-m", "cachetasks", "metrics", "--port", str(command_port)])
    from_command = wait_until(lambda: scrape(command_port), timeout=15, what="the metrics command")
    # Expect the same samples from both endpoints
    assert from_command == scrape(worker_port)
    assert value(from_command, "cachetasks_files_cached_total") == 1
    assert value(from_command, "cachetasks_bytes_cached_total") == len(FILES["a.txt"])


def test_metrics_command_listens_on_the_address_cachetasks_metrics_host_names(
    env: dict[str, str], processes: Start
) -> None:
    """CACHETASKS_METRICS_HOST=127.0.0.2: the command serves there, and not on 127.0.0.1."""
    # Given the setting, and no --host option
    port = free_port()
    procs = processes({**env, "CACHETASKS_METRICS_HOST": "127.0.0.2"})
    # When the metrics command starts
    procs.start("metrics", [sys.executable, "-m", "cachetasks", "metrics", "--port", str(port)])
    # Expect it to answer on the address named, and only there
    samples = wait_until(lambda: scrape(port, "127.0.0.2"), timeout=15, what="the metrics command on 127.0.0.2")
    assert value(samples, "cachetasks_up") == 1  # type: ignore[arg-type]
    with pytest.raises(OSError):
        scrape(port, "127.0.0.1")
