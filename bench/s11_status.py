"""Scenario 11: `python -m cachetasks status` with 100,000 ongoing files on PostgreSQL, half of them cached.

The tables also hold ten finished documents per ongoing one (with their tasks), as a RAGFlow
database does. `status --json` runs as an operator runs it, in its own process; the figure is
the time it reports for gathering its report (its query and the Redis checks), and the
process's whole wall time (interpreter start and imports included) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.lab import REPO, file_name, insert_ragflow_sized, lab
from bench.measure import Summary, header, median, note, table
from testbed.processes import service_env

ONGOING = 100_000
TARGET = 2.0
BUCKET = "kb11status"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    header(11, f"status with {ONGOING:,} ongoing files, half cached, among 10x as many finished documents", args.runs)
    with lab(s3=False) as the_lab:
        started = time.perf_counter()
        insert_ragflow_sized(the_lab.engine, bucket=BUCKET, before=0, after=ONGOING)
        with the_lab.cache.pipeline(transaction=False) as pipe:
            for i in range(2, ONGOING + 1, 2):
                pipe.set(f"{BUCKET}/{file_name('docs/f', i)}", b"x", ex=720)
            pipe.execute()
        note(f"data built in {time.perf_counter() - started:.1f}s")
        env = service_env(the_lab.env("local"))
        reported, walls = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "cachetasks", "status", "--json"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            walls.append(time.perf_counter() - started)
            report = json.loads(done.stdout)
            assert report["ongoing"] == ONGOING, report["ongoing"]
            assert report["states"].get("cached") == ONGOING // 2, report["states"]
            reported.append(float(report["seconds"]))
    rows = [
        ["report gathered (status's own figure)", " ".join(f"{x:.2f}" for x in reported), round(median(reported), 2)],
        ["the process, start to exit", " ".join(f"{x:.2f}" for x in walls), round(median(walls), 2)],
    ]
    print(table(["measure", "runs (s)", "median s"], rows))
    t = median(reported)
    Summary(
        scenario=f"11. status, {ONGOING:,} ongoing files (half cached) on PostgreSQL",
        measure="s to gather the report",
        service=f"{t:.2f} (process {median(walls):.2f})",
        original="-",
        limit="-",
        target=f"< {TARGET} s",
        met=t < TARGET,
    ).emit()


if __name__ == "__main__":
    main()
