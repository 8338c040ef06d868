"""Scenario 2: scenario 1 behind a proxy that adds 50 ms to every storage request."""

from __future__ import annotations

from bench.lab import KiB
from bench.throughput import Scenario, Target, main

ORIGINAL_FILES = 200

SCENARIO = Scenario(
    number=2,
    title="2000 files x 256 KiB, S3 behind a proxy adding 50 ms per request",
    storage="s3",
    files=2000,
    size=256 * KiB,
    unit="MB/s",
    latency=0.05,
    original_files=ORIGINAL_FILES,
    targets=[Target("limit", 0.8), Target("original", 10.0)],
    notes=[
        f"the original reads one file at a time (>= 50 ms each): it is measured on the first {ORIGINAL_FILES}"
        " files only and compared in MB/s",
    ],
)

if __name__ == "__main__":
    main(SCENARIO)
