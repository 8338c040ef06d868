"""Scenario 3: 200 files x 4 MiB from an S3 server (moto) on loopback."""

from __future__ import annotations

from bench.lab import MiB
from bench.throughput import Scenario, Target, main

SCENARIO = Scenario(
    number=3,
    title="200 files x 4 MiB, S3 server (moto) on loopback",
    storage="s3",
    files=200,
    size=4 * MiB,
    unit="MB/s",
    targets=[Target("limit", 0.7), Target("original", 1.0)],
)

if __name__ == "__main__":
    main(SCENARIO)
