"""The machine's limit: T threads copying storage -> Redis with plain SETs, no framework.

No database, no broker, no claims, no streaming: each thread reads a whole object and SETs
it with the TTL. T is the service's concurrency, so the comparison is thread for thread.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from cachetasks.ref import cache_key

TTL = 720
Read = Callable[[str, str], bytes]


def s3_reader(client: Any) -> Read:
    def read(bucket: str, name: str) -> bytes:
        data: bytes = client.get_object(Bucket=bucket, Key=name)["Body"].read()
        return data

    return read


def local_reader(root: Path) -> Read:
    def read(bucket: str, name: str) -> bytes:
        return (root / bucket / name).read_bytes()

    return read


def copy_all(read: Read, client: redis.Redis, pairs: Sequence[tuple[str, str]], threads: int) -> float:
    """Copy every pair with `threads` threads; return the wall time in seconds."""

    def copy(pair: tuple[str, str]) -> None:
        client.set(cache_key(*pair), read(*pair), ex=TTL)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(copy, pair) for pair in pairs]:
            future.result()
    return time.perf_counter() - started
