"""Time a test controls."""

from __future__ import annotations


class Clock:
    """A monotonic clock the test moves by hand (`clock.now += 5`), so that throttled code runs when it says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
