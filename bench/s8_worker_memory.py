"""Scenario 8: peak RSS of the worker process caching one 256 MiB file, above its idle RSS.

`--chunk-mib N` sets CACHETASKS_CHUNK_BYTES (default: the service's 4 MiB): a copy holds one
chunk at a time, so the peak should follow the chunk, not a multiple of it.

The worker runs the threads pool, so it is one process: /proc/PID/status VmRSS before the
document becomes ongoing (after a small warm-up file, so every client is built), the peak
(VmHWM, reset just before through /proc/PID/clear_refs) after the key exists. The same for
the original daemon's process, which reads the whole object into memory.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from bench.lab import KiB, Lab, MiB, clear_documents, file_name, insert_documents, lab, put_s3
from bench.measure import Summary, header, median, note, reset_peak_rss, status_kib, table, verdict
from bench.throughput import start_original, wait_original_idle
from testbed.servers import stop_process, wait_until

SIZE = 256 * MiB
TARGET_MIB = 32
BUCKET = "kb8memory"
BIG = file_name("big/f", 1)
WARM = file_name("warm/f", 1)


def one_run(the_lab: Lab, pid: int, idle: object) -> tuple[float, float]:
    """Return (idle MiB, peak MiB) of `pid` while it caches the big file."""
    the_lab.flush_cache()
    with the_lab.engine.begin() as conn:
        insert_documents(conn, bucket=BUCKET, prefix="warm/f", start=1, count=1, size=4 * KiB)
    the_lab.wait_keys([f"{BUCKET}/{WARM}"], timeout=30)
    time.sleep(1.0)
    idle_kib = status_kib(pid, "VmRSS")
    reset_peak_rss(pid)
    with the_lab.engine.begin() as conn:
        insert_documents(conn, bucket=BUCKET, prefix="big/f", start=1, count=1, size=SIZE)
    the_lab.wait_keys([f"{BUCKET}/{BIG}"], timeout=180)
    peak_kib = status_kib(pid, "VmHWM")
    assert the_lab.cache.strlen(f"{BUCKET}/{BIG}") == SIZE
    clear_documents(the_lab.engine)
    idle()  # type: ignore[operator]
    return idle_kib / 1024, peak_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-mib", type=int, default=4, help="CACHETASKS_CHUNK_BYTES in MiB (default 4)")
    args = parser.parse_args()
    chunk_mib = args.chunk_mib
    target_mib = max(TARGET_MIB, chunk_mib + TARGET_MIB // 2)  # one chunk, and the process's own growth
    header(8, f"peak RSS of the copying process caching one 256 MiB file in {chunk_mib} MiB chunks", args.runs)
    note("the service runs with CACHETASKS_MAX_FILE_BYTES=256 MiB (its default refuses files over 128 MiB)")
    results: dict[str, list[tuple[float, float]]] = {}
    with lab() as the_lab:
        client = the_lab.s3_client()
        put_s3(client, BUCKET, [WARM], 4 * KiB)
        put_s3(client, BUCKET, [BIG], SIZE, threads=1)
        # The service refuses files over 128 MiB by default (RAGFlow's own upload limit): allow this one.
        env = the_lab.env("s3", CACHETASKS_MAX_FILE_BYTES=str(SIZE), CACHETASKS_CHUNK_BYTES=str(chunk_mib * MiB))

        status = the_lab.workdir / "original.status"
        proc: subprocess.Popen[bytes] = start_original(the_lab, {**env, "BENCH_ORIGINAL_STATUS": str(status)})
        try:
            wait_until(status.exists, timeout=30, what="the original's first cycle")
            results["original"] = [
                one_run(the_lab, proc.pid, lambda: wait_original_idle(status)) for _ in range(args.runs)
            ]
        finally:
            stop_process(proc, grace=5)

        procs = the_lab.processes(env, "s8")
        worker = procs.worker()
        procs.beat()
        the_lab.wait_collects(1, timeout=60)
        results["service worker"] = [one_run(the_lab, worker.pid, the_lab.wait_service_idle) for _ in range(args.runs)]
        procs.stop_all()

    rows = []
    for name, runs in results.items():
        deltas = [peak - idle for idle, peak in runs]
        rows.append([name, " ".join(f"{i:.0f}->{p:.0f}" for i, p in runs), round(median(deltas), 1)])
    print(table(["process", "idle -> peak MiB per run", "median peak above idle (MiB)"], rows))
    service = median([p - i for i, p in results["service worker"]])
    orig = median([p - i for i, p in results["original"]])
    note(f"service worker: +{service:.1f} MiB; target <= +{target_mib} MiB: {verdict(service <= target_mib)}")
    Summary(
        scenario=f"8. peak RSS caching one 256 MiB file, {chunk_mib} MiB chunks",
        measure="MiB above idle",
        service=f"+{service:.1f}",
        original=f"+{orig:.1f}",
        limit="-",
        target=f"<= +{target_mib} MiB",
        met=service <= target_mib,
    ).emit()


if __name__ == "__main__":
    main()
