"""Work in bounded batches: one script call, pipeline or `IN (...)` query per BATCH items."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

# Large enough that 100,000 ongoing files take 20 round trips; small enough that one script
# call never blocks Redis for long nor builds a query past any database's parameter limit.
BATCH = 5000


def batched(items: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    """Lists of up to `size` items, in order."""
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
