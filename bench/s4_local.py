"""Scenario 4: 2000 files x 256 KiB from a local folder."""

from __future__ import annotations

from bench.lab import KiB
from bench.throughput import Scenario, Target, main

SCENARIO = Scenario(
    number=4,
    title="2000 files x 256 KiB, local folder",
    storage="local",
    files=2000,
    size=256 * KiB,
    unit="files/s",
    targets=[Target("original", 1.0)],
)

if __name__ == "__main__":
    main(SCENARIO)
