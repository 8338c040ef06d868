"""Helpers for the end-to-end tests: start the service, watch it work through Redis, place files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachetasks.cache.keys import LAST_COLLECT
from cachetasks.storage import LocalStorage
from cachetasks.storage.s3 import S3Storage
from testbed.processes import Processes
from testbed.servers import wait_until

FIRST_COLLECT_TIMEOUT = 30.0
Put = Callable[[str, str, bytes], None]


def start_service(procs: Processes, client: redis.Redis) -> None:
    """Start one worker and one beat; return once the first collect has finished."""
    procs.worker()
    procs.beat()
    wait_until(lambda: client.get(LAST_COLLECT), timeout=FIRST_COLLECT_TIMEOUT, what="the first collect")


def wait_for_collects(client: redis.Redis, count: int = 2, *, timeout_each: float = 5.0) -> None:
    """Return once `count` more collects have finished (each one rewrites LAST_COLLECT)."""
    seen = client.get(LAST_COLLECT)
    for n in range(1, count + 1):
        previous = seen
        seen = wait_until(
            lambda: (value := client.get(LAST_COLLECT)) != previous and value,  # noqa: B023 -- called in this turn
            timeout=timeout_each,
            what=f"collect {n} of {count} more",
        )


def local_root(env: dict[str, str]) -> Path:
    """The local storage root of `env` (the default: the data directory's storage folder)."""
    return Path(env["CACHETASKS_DATA_DIR"]) / "storage"


def put_local(env: dict[str, str], bucket: str, location: str, data: bytes) -> Path:
    """Write a file where local storage reads `(bucket, location)`; return its path."""
    storage = LocalStorage(local_root(env))
    storage.put(bucket, location, data)
    return storage.root / bucket / location


def put_s3(s3: Any, bucket: str, key: str, data: bytes) -> None:
    """Put an object straight into the S3 server (bucket-per-kb layout), creating its bucket when needed."""
    S3Storage(s3).put(bucket, key, data)


def backend_settings(request: pytest.FixtureRequest, backend: str) -> tuple[dict[str, str], Put]:
    """Settings for `backend` ("s3" behind the proxy, or "local") and a function that places files there."""
    if backend == "s3":
        settings: dict[str, str] = request.getfixturevalue("s3_env")
        s3 = request.getfixturevalue("s3")
        return settings, lambda bucket, location, data: put_s3(s3, bucket, location, data)
    env: dict[str, str] = request.getfixturevalue("env")

    def put(bucket: str, location: str, data: bytes) -> None:
        put_local(env, bucket, location, data)

    return env, put


def warnings_in(log: str) -> list[str]:
    """The WARNING lines of a process log."""
    return [line for line in log.splitlines() if "WARNING" in line]
