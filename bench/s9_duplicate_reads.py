"""Scenario 9: duplicate reads when storage takes 3 s per read: 200 files, 30 s.

A counting proxy (testbed.proxy.S3Proxy, in this process) sits in front of the S3
server and delays every request by 3 s. The 200 documents become ongoing, the copier runs
for 30 s, then every object GET is counted per object: a duplicate is any GET beyond the
first of the same object. The service runs with one beat, then (fresh) with two beats.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench.lab import KiB, Lab, clear_documents, file_name, insert_documents, lab, put_s3
from bench.measure import Summary, header, note, table, verdict
from bench.throughput import start_original
from testbed.proxy import S3Proxy
from testbed.servers import stop_process, wait_until

FILES = 200
LATENCY = 3.0
SIZE = 16 * KiB
BUCKET = "kb9slow"


def count(the_lab: Lab, proxy: S3Proxy, seconds: float, start: Callable[[], Callable[[], None]]) -> list[int]:
    """Start a copier, make the documents ongoing, wait `seconds`, stop it; count the GETs."""
    clear_documents(the_lab.engine)
    the_lab.flush_cache()
    stop = start()
    try:
        proxy.reset()
        proxy.latency = LATENCY
        with the_lab.engine.begin() as conn:
            insert_documents(conn, bucket=BUCKET, start=1, count=FILES, size=SIZE)
        time.sleep(seconds)
        with proxy._lock:
            gets = dict(proxy.gets)
        cached = the_lab.keys_present([f"{BUCKET}/{file_name('docs/f', i)}" for i in range(1, FILES + 1)])
    finally:
        stop()
    return [sum(gets.values()), len(gets), sum(c - 1 for c in gets.values()), cached]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    header(9, f"duplicate reads: storage at {LATENCY:g} s per read, {FILES} files, {args.seconds:g} s", 1)
    note("one run per configuration: the figure is a count of reads, not a timing")
    rows: list[list[object]] = []
    counts: dict[str, list[int]] = {}
    with lab() as the_lab:
        put_s3(the_lab.s3_client(), BUCKET, [file_name("docs/f", i) for i in range(1, FILES + 1)], SIZE)
        proxy = S3Proxy(the_lab.s3_server.url)  # type: ignore[union-attr]
        # Copiers stopped mid-read break the proxy's pipes: expected here, not worth a traceback.
        proxy._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        proxy.start()
        try:
            env = the_lab.env("s3", s3_endpoint=proxy.url)

            def original() -> Callable[[], None]:
                status = the_lab.workdir / "original.status"
                status.unlink(missing_ok=True)
                proc = start_original(the_lab, {**env, "BENCH_ORIGINAL_STATUS": str(status)})
                wait_until(status.exists, timeout=30, what="the original's first cycle")
                return lambda: stop_process(proc, grace=5)

            def service(beats: int) -> Callable[[], Callable[[], None]]:
                def start() -> Callable[[], None]:
                    the_lab.broker.flushdb()  # our private broker, nothing running: a clean queue
                    procs = the_lab.processes(env, f"s9-{beats}")
                    procs.worker()
                    for b in range(beats):
                        procs.beat(f"beat{b}")
                    the_lab.wait_collects(1, timeout=60)
                    return procs.stop_all

                return start

            for name, start in (
                ("original", original),
                ("service, 1 beat", service(1)),
                ("service, 2 beats", service(2)),
            ):
                counts[name] = count(the_lab, proxy, args.seconds, start)
                rows.append([name, *counts[name]])
        finally:
            proxy.stop()
    print(table(["copier", "object GETs", "distinct objects", "duplicate GETs", "keys cached"], rows))
    duplicates = {name: c[2] for name, c in counts.items()}
    worst = max(duplicates["service, 1 beat"], duplicates["service, 2 beats"])
    Summary(
        scenario=f"9. duplicate reads at {LATENCY:g} s/read, {FILES} files, {args.seconds:g} s",
        measure="duplicate GETs",
        service=f"{duplicates['service, 1 beat']} (1 beat), {duplicates['service, 2 beats']} (2 beats)",
        original=str(duplicates["original"]),
        limit="-",
        target="0",
        met=worst == 0,
    ).emit()
    note(f"verdict: {verdict(worst == 0)}")


if __name__ == "__main__":
    main()
