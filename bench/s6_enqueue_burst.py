"""Scenario 6: 10,000 new ongoing pairs appear at once: time until every `cache_file` is enqueued.

End to end: beat and a worker that consumes only the collect queue (no copies run, so the
queue keeps every message); the clock starts when the rows are committed and stops when the
files queue holds 10,000 messages. In-process: one `collector.collect` call with the real
`cachetasks.celery.tasks.enqueue_copies` against the private broker, and `enqueue_copies` alone.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

from bench.lab import clear_documents, file_name, insert_documents, lab
from bench.measure import CpuMeter, Summary, cpu_line, header, median, median_cpu, note, table, verdict
from cachetasks.ref import FileRef
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE, Settings

PAIRS = 10_000
TARGET = 2.0
BUCKET = "kb6burst"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    header(6, f"{PAIRS} new ongoing pairs at once: time until every cache_file is enqueued", args.runs)
    with lab(s3=False) as the_lab:
        env = the_lab.env("local")
        broker = the_lab.broker
        procs = the_lab.processes(env, "s6")
        worker = procs.worker("worker", "-Q", COLLECT_QUEUE)
        beat = procs.beat()
        redis_pid = the_lab.redis_server.proc.pid  # type: ignore[union-attr]
        meter = CpuMeter({"worker": worker.pid, "beat": beat.pid, "redis": redis_pid}, database=the_lab.pg_name)
        e2e, cpus = [], []
        the_lab.wait_collects(1, timeout=60)
        for _ in range(args.runs):
            clear_documents(the_lab.engine)
            the_lab.wait_collects(2)
            broker.delete(FILES_QUEUE)
            the_lab.flush_cache()
            before = meter.snapshot()
            with the_lab.engine.begin() as conn:
                insert_documents(conn, bucket=BUCKET, start=1, count=PAIRS)
            started = time.perf_counter()
            deadline = started + 60
            while broker.llen(FILES_QUEUE) < PAIRS:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"only {broker.llen(FILES_QUEUE)} messages after 60 s")
                time.sleep(0.005)
            e2e.append(time.perf_counter() - started)
            cpus.append(CpuMeter.diff(before, meter.snapshot()))
        procs.stop_all()
        note("end to end: " + cpu_line(median_cpu(cpus), median(e2e)))

        # In-process: the same collect, the real enqueue function, the same broker.
        os.environ.update(env)
        from cachetasks import app, collector, resources
        from cachetasks.celery import tasks

        settings = Settings.from_env(env)
        assert app.conf.broker_url == env["CELERY_BROKER_URL"], "the app must publish to the private broker"
        res = resources.Resources(settings)
        calls, enqueue_only = [], []
        refs = [FileRef(BUCKET, file_name("docs/f", i)) for i in range(1, PAIRS + 1)]
        try:
            for _ in range(args.runs):
                broker.delete(FILES_QUEUE)
                the_lab.flush_cache()
                started = time.perf_counter()
                report = collector.collect(
                    res.engine, res.cache, settings, enqueue=tasks.enqueue_copies, addresses=res.addresses
                )
                calls.append(time.perf_counter() - started)
                assert report is not None and report.enqueued == PAIRS and broker.llen(FILES_QUEUE) == PAIRS
                broker.delete(FILES_QUEUE)
                started = time.perf_counter()
                tasks.enqueue_copies(refs)
                enqueue_only.append(time.perf_counter() - started)
            broker.delete(FILES_QUEUE)
            profile = cProfile.Profile()
            profile.enable()
            tasks.enqueue_copies(refs)
            profile.disable()
        finally:
            broker.delete(FILES_QUEUE)
            res.close()
    rows = [
        ["end to end: insert -> 10,000 messages queued", " ".join(f"{x:.2f}" for x in e2e), round(median(e2e), 2)],
        ["in-process collect() with the real enqueue", " ".join(f"{x:.2f}" for x in calls), round(median(calls), 2)],
        [
            "enqueue_copies(10,000 refs) alone",
            " ".join(f"{x:.2f}" for x in enqueue_only),
            round(median(enqueue_only), 2),
        ],
    ]
    print(table(["measure", "runs (s)", "median s"], rows))
    note("end to end includes waiting for the next beat tick (0-1 s with a 1 s schedule)")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(14)
    note("cProfile of enqueue_copies(10,000 refs) (top 14 by own time):")
    for line in out.getvalue().splitlines():
        if line.strip() and ("{" in line or ".py" in line or "ncalls" in line):
            note("  " + line.strip()[:160])
    t = median(e2e)
    Summary(
        scenario=f"6. {PAIRS} new pairs at once -> all enqueued",
        measure="s end to end",
        service=f"{t:.2f} (collect call {median(calls):.2f}, enqueue alone {median(enqueue_only):.2f})",
        original="-",
        limit="-",
        target=f"<= {TARGET} s",
        met=t <= TARGET,
    ).emit()
    note(f"verdict: {verdict(t <= TARGET)}")


if __name__ == "__main__":
    main()
