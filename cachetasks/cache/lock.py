"""The collect lock: collects never overlap, however long one runs."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator

import redis

from .keys import COLLECT_LOCK
from .scripts import Scripts

log = logging.getLogger(__name__)

LOCK_SECONDS = 10  # renewed every third of it while a collect runs: a dead worker's lock passes in 10 s


@contextlib.contextmanager
def exclusive(client: redis.Redis, scripts: Scripts, seconds: int = LOCK_SECONDS) -> Iterator[bool]:
    """Hold the collect lock while the block runs; yields False, holding nothing, if it is taken."""
    token, ms = uuid.uuid4().hex, seconds * 1000
    if not client.set(COLLECT_LOCK, token, nx=True, px=ms):
        yield False
        return
    done = threading.Event()

    def renew() -> None:
        while not done.wait(seconds / 3):
            try:
                if not scripts.lock_extend(keys=[COLLECT_LOCK], args=[token, ms]):
                    log.warning("the collect lock was lost: another collect may run alongside this one")
                    return
            except redis.RedisError as exc:
                log.debug("could not renew the collect lock: %s", type(exc).__name__)

    renewer = threading.Thread(target=renew, name="cachetasks-collect-lock", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        done.set()
        renewer.join()
        scripts.lock_release(keys=[COLLECT_LOCK], args=[token])
