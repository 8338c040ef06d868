"""Scenario 10: tasks queued the RAGFlow way at 20 documents/s (64 KiB files, S3 on loopback): insert -> readable,
with the listener and, in the same run, without it (scenario 7's measure, collect alone).

RAGFlow's way: the rows are committed, then the task is added to `te.0.common` (XADD, one field
`message` holding the task's JSON), where a consumer group of RAGFlow's executors exists. The delay
starts at the commit, as in scenario 7. The service runs as scenario 7 runs it (a worker for both
queues and beat), plus `python -m cachetasks listen` for the listener's runs.
"""

from __future__ import annotations

import argparse

from bench.lab import Lab, clear_documents, document_id, file_name, lab, put_s3
from bench.measure import Summary, header, median, note, table, verdict
from bench.s7_time_to_cache import BUCKET, RATE, SIZE, figures, measure
from cachetasks.listener import Role, running
from testbed.ragflow import Executor, queue_task, stream_name, task
from testbed.servers import wait_until

TARGETS = {"p50": 0.05, "p95": 0.15, "max": 0.5}


def run(the_lab: Lab, count: int, *, listening: bool) -> dict[str, float]:
    """One measured run from an empty cache: documents inserted and their tasks queued on te.0.common."""
    client = the_lab.cache
    clear_documents(the_lab.engine)
    the_lab.wait_service_idle()
    the_lab.flush_cache()
    Executor(client).join()  # RAGFlow's group, and so its stream, as in a RAGFlow deployment
    if listening:  # the flush took its lease and presence away: wait until it reads again
        wait_until(
            lambda: [(p.role, p.streams) for p in running(client)] == [(Role.ACTIVE, (stream_name(0),))],
            timeout=30,
            what="the listener to read te.0.common",
        )
    return figures(measure(the_lab, count, announce=lambda i: queue_task(client, task(document_id(BUCKET, i)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of inserts per run")
    parser.add_argument("--runs", type=int, default=1, help="runs with the listener, and as many without")
    args = parser.parse_args()
    count = int(args.seconds * RATE)
    header(10, f"time to cache with the listener: {RATE:g} tasks/s queued the RAGFlow way, 64 KiB, S3", args.runs)
    note(f"each run lasts {args.seconds:g} s ({count} documents); the same runs without the listener are scenario 7's")
    results: dict[str, list[dict[str, float]]] = {"collect only": [], "listener": []}
    with lab() as the_lab:
        put_s3(the_lab.s3_client(), BUCKET, [file_name("docs/f", i) for i in range(1, count + 1)], SIZE)
        env = the_lab.env("s3")
        procs = the_lab.processes(env, "s10")
        procs.worker()
        procs.beat()
        the_lab.wait_collects(1, timeout=60)
        for _ in range(args.runs):
            results["collect only"].append(run(the_lab, count, listening=False))
        procs.listener()
        for _ in range(args.runs):
            results["listener"].append(run(the_lab, count, listening=True))
        procs.stop_all()

    rows = []
    for name, runs in results.items():
        med = {k: median([r[k] for r in runs]) for k in TARGETS}
        per_run = " / ".join(" ".join(f"{r[k]:.3f}" for k in TARGETS) for r in runs)
        rows.append([name, len(runs), per_run, round(med["p50"], 3), round(med["p95"], 3), round(med["max"], 3)])
    print(table(["service", "runs", "p50 p95 max per run (s)", "p50 s", "p95 s", "max s"], rows))
    listener = {k: median([r[k] for r in results["listener"]]) for k in TARGETS}
    alone = {k: median([r[k] for r in results["collect only"]]) for k in TARGETS}
    met = all(listener[k] <= TARGETS[k] for k in TARGETS)
    for k, limit in TARGETS.items():
        note(f"listener {k} {listener[k]:.3f} s; target <= {limit} s: {verdict(listener[k] <= limit)}")
    Summary(
        scenario=f"10. time to cache with the listener at {RATE:g}/s, 64 KiB",
        measure="p50/p95/max s",
        service="/".join(f"{listener[k]:.3f}" for k in TARGETS),
        original="collect only " + "/".join(f"{alone[k]:.2f}" for k in TARGETS),
        limit="-",
        target="p50 <= 0.05, p95 <= 0.15, max <= 0.5",
        met=met,
    ).emit()


if __name__ == "__main__":
    main()
