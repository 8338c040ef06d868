"""Scenario 5: the per-second collect when all N ongoing pairs are already cached, N = 1k / 10k / 100k.

The tables also hold 10x as many documents that are not ongoing (done, with tasks created
over the last 20 minutes, so half of them fall inside the 10-minute window). Every document
has a file row, a file2document link and (ongoing ones) two page-range tasks. The keys of
all ongoing pairs are pre-populated. Timed in-process as the worker runs it, with the process's
address book (after one full warm-up collect that opens the connections and learns the
addresses), at each N:

- the per-second collect (the target): a collect of changes, nothing having changed since the
  last one, once the rows loaded are older than the task watermark's overlap: it reads the
  tasks and rows stamped since, and finds nothing to check;
- a full collect (every CACHETASKS_RECONCILE_INTERVAL): every ongoing pair's ids read and
  checked in Redis, TTLs renewed where due;
- one cycle of the original (its query and N sequential EXISTS).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
from collections.abc import Sequence

import sqlalchemy as sa

from bench import original
from bench.lab import Lab, file_name, insert_ragflow_sized, lab
from bench.measure import CpuMeter, Summary, cpu_line, header, median, median_cpu, note, ratio, table, verdict
from cachetasks import catalog, collector, resources
from cachetasks.catalog.watermark import TASKS_OVERLAP_MS
from cachetasks.ref import FileRef
from cachetasks.settings import Settings

SCALES = (1_000, 10_000, 100_000)
TARGETS = {1_000: 0.02, 10_000: 0.15, 100_000: 1.0}
BUCKET = "kb5" + "0" * 29
TTL = 720


def refuse_enqueue(refs: Sequence[FileRef]) -> None:
    raise AssertionError(f"nothing should be enqueued, got {len(refs)}")


def grow(the_lab: Lab, before: int, after: int) -> float:
    """Add ongoing documents before+1..after and ten times as many done ones; return seconds."""
    started = time.perf_counter()
    insert_ragflow_sized(the_lab.engine, bucket=BUCKET, before=before, after=after)
    cache = the_lab.cache
    for start in range(before + 1, after + 1, 10_000):
        with cache.pipeline(transaction=False) as pipe:
            for i in range(start, min(after, start + 9_999) + 1):
                pipe.set(f"{BUCKET}/{file_name('docs/f', i)}", b"x", ex=TTL)
            pipe.execute()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--original-runs", type=int, default=3)
    parser.add_argument("--original-runs-100k", type=int, default=1, help="one original cycle at 100k takes ~12 s")
    args = parser.parse_args()
    header(5, "one collect with every ongoing pair already cached (PostgreSQL)", args.runs)
    note(f"the original runs {args.original_runs} cycles per N, {args.original_runs_100k} at N=100k (under 3 min)")
    with lab(s3=False) as the_lab:
        # Full collects every 300 s for the per-second ones, so that none comes during their runs; every
        # collect full for the full ones.
        env = the_lab.env("local")
        settings = Settings.from_env({**env, "CACHETASKS_RECONCILE_INTERVAL": "300"})
        full_settings = Settings.from_env({**env, "CACHETASKS_RECONCILE_INTERVAL": "0"})
        res = resources.Resources(settings)
        redis_pid = the_lab.redis_server.proc.pid  # type: ignore[union-attr]
        meter = CpuMeter({"redis": redis_pid}, database=the_lab.pg_name)
        rows = []
        summaries = []
        size = 0
        try:
            for n in SCALES:
                note(
                    f"data: {n} ongoing pairs (2 tasks each) + {10 * n} done documents: "
                    f"built in {grow(the_lab, size, n):.1f}s"
                )
                size = n
                loaded = time.time()
                book = res.addresses
                book.look_at_everything()
                warm = collector.collect(res.engine, res.cache, full_settings, enqueue=refuse_enqueue, addresses=book)
                assert warm is not None and warm.full, warm
                # The steady state: the rows just loaded are past the overlap in which late commits are awaited.
                time.sleep(max(0.0, loaded + TASKS_OVERLAP_MS / 1000 + 0.5 - time.time()))
                fulls = []
                for _ in range(args.runs):
                    report = collector.collect(
                        res.engine, res.cache, full_settings, enqueue=refuse_enqueue, addresses=book
                    )
                    assert report is not None and report.full and report.cached == n, report
                    fulls.append(report.seconds)
                sql = [
                    _timed(lambda b=book: b.ongoing(res.engine, window_seconds=settings.ongoing_window))
                    for _ in range(args.runs)
                ]
                refs = catalog.ongoing(res.engine, window_seconds=settings.ongoing_window).refs
                scan = [
                    _timed(lambda r=refs: res.cache.scan(r, inflight_ttl=settings.inflight_ttl, ttl=settings.ttl))
                    for _ in range(args.runs)
                ]
                orig = _original(the_lab, args.original_runs if n < 100_000 else args.original_runs_100k)
                collector.collect(res.engine, res.cache, settings, enqueue=refuse_enqueue, addresses=book)
                times, cpus = [], []
                for _ in range(args.runs):
                    before = meter.snapshot()
                    started = time.perf_counter()
                    report = collector.collect(res.engine, res.cache, settings, enqueue=refuse_enqueue, addresses=book)
                    times.append(time.perf_counter() - started)
                    cpus.append(CpuMeter.diff(before, meter.snapshot()))
                    assert report is not None and not report.full and report.ongoing == n, report
                target = TARGETS[n]
                t = median(times)
                rows.append(
                    [
                        n,
                        " ".join(f"{x:.4f}" for x in times),
                        round(t, 4),
                        round(median(fulls), 3),
                        round(median(sql), 3),
                        round(median(scan), 3),
                        round(orig, 2),
                        f"{ratio(orig, t):.0f}x",
                        f"{ratio(orig, median(fulls)):.1f}x",
                        f"<= {target}",
                        verdict(t <= target),
                    ]
                )
                note(f"N={n}: service " + cpu_line(median_cpu(cpus), t))
                summaries.append(
                    Summary(
                        scenario=f"5. collect, all cached, N={n}",
                        measure="s per per-second collect",
                        service=f"{t:.3f}",
                        original=f"{orig:.2f}",
                        limit="-",
                        target=f"<= {target} s",
                        met=t <= target,
                    )
                )
            print(
                table(
                    [
                        "N",
                        "per-second runs (s)",
                        "median s",
                        "full s",
                        "full: SQL",
                        "full: scan",
                        "original s",
                        "speed-up",
                        "full speed-up",
                        "target",
                        "",
                    ],
                    rows,
                )
            )
            note(
                "per-second: a collect of changes with nothing changed (the target); full: a full collect "
                "(median of its reports' seconds), with its book's full look and Cache.scan() timed alone; "
                "speed-ups are the original's cycle over each"
            )
            _explain(the_lab)
            _profile(res, full_settings)
        finally:
            res.close()
        for s in summaries:
            s.emit()


def _timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def _original(the_lab: Lab, runs: int) -> float:
    """Median seconds of one original cycle (query + sequential EXISTS) with everything cached."""
    client = the_lab.cache
    times = []
    with open(os.devnull, "w") as out:
        for _ in range(runs):
            started = time.perf_counter()
            original.main_cycle(the_lab.engine, client, lambda b, k: None, out)
            times.append(time.perf_counter() - started)
    return median(times)


def _explain(the_lab: Lab) -> None:
    query = catalog.ongoing_query(int(time.time() * 1000) - 600_000)
    compiled = query.compile(the_lab.engine, compile_kwargs={"literal_binds": True})
    for label, setting in (
        ("default settings", ""),
        ("SET LOCAL enable_nestloop = off", "enable_nestloop = off"),
        ("SET LOCAL work_mem = '64MB'", "work_mem = '64MB'"),
    ):
        with the_lab.engine.begin() as conn:
            if setting:
                conn.execute(sa.text(f"SET LOCAL {setting}"))
            plan = [r[0] for r in conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS OFF) {compiled}"))]
        note(f"the service's query at N=100k, EXPLAIN ANALYZE with {label}:")
        for line in [ln for ln in plan if "->" in ln][:7] + plan[-1:]:
            note("  " + line.strip()[:150])


def _profile(res: resources.Resources, settings: Settings) -> None:
    profile = cProfile.Profile()
    profile.enable()
    collector.collect(res.engine, res.cache, settings, enqueue=refuse_enqueue, addresses=res.addresses)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(12)
    note("cProfile of one full collect at N=100k (top 12 by own time):")
    for line in out.getvalue().splitlines():
        if line.strip() and ("{" in line or ".py" in line or "ncalls" in line):
            note("  " + line.strip()[:150])


if __name__ == "__main__":
    main()
