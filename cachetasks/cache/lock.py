"""Leases in Redis: the collect lock (collects never overlap, however long one runs), and the
listener's (one listener reads RAGFlow's streams; the others stand by)."""

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


class Lease:
    """A key held with a token of its own for `seconds` at a time: taken when free, renewed by its
    holder, and free again when the holder releases it or stops renewing it."""

    def __init__(self, client: redis.Redis, scripts: Scripts, key: str, *, seconds: float, holder: str = "") -> None:
        self.client, self.scripts, self.key = client, scripts, key
        self.ms = max(1, int(seconds * 1000))
        self.token = f"{holder} {uuid.uuid4().hex}".strip()

    def take(self) -> bool:
        """Hold it from now, unless someone else does."""
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ms)) or self.renew()

    def renew(self) -> bool:
        """Hold it `seconds` more; False when it is not ours (it lapsed, or Redis restarted without it)."""
        return bool(self.scripts.lock_extend(keys=[self.key], args=[self.token, self.ms]))

    def release(self) -> None:
        self.scripts.lock_release(keys=[self.key], args=[self.token])

    def holder(self) -> str | None:
        """The token of whoever holds it now; None when it is free."""
        token = self.client.get(self.key)
        if token is None:
            return None
        return token.decode(errors="replace") if isinstance(token, bytes) else str(token)


@contextlib.contextmanager
def exclusive(client: redis.Redis, scripts: Scripts, seconds: int = LOCK_SECONDS) -> Iterator[bool]:
    """Hold the collect lock while the block runs; yields False, holding nothing, if it is taken."""
    lease = Lease(client, scripts, COLLECT_LOCK, seconds=seconds)
    if not client.set(COLLECT_LOCK, lease.token, nx=True, px=lease.ms):
        yield False
        return
    done = threading.Event()

    def renew() -> None:
        while not done.wait(seconds / 3):
            try:
                if not lease.renew():
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
        lease.release()
