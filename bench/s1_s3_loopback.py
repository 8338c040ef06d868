"""Scenario 1: 2000 files x 256 KiB from an S3 server (moto) on loopback."""

from __future__ import annotations

from bench.lab import KiB
from bench.throughput import Scenario, Target, main

SCENARIO = Scenario(
    number=1,
    title="2000 files x 256 KiB, S3 server (moto) on loopback",
    storage="s3",
    files=2000,
    size=256 * KiB,
    unit="MB/s",
    targets=[Target("limit", 0.8), Target("original", 1.5)],
)

if __name__ == "__main__":
    main(SCENARIO)
