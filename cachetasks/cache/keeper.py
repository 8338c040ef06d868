"""Keep the claims of this process's running copies alive, from one thread.

A copy can wait on storage longer than its claim lasts (a slow first byte, a retried
request); without renewal the next collect would start a second read of the same file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import redis

from ..ref import FileRef

log = logging.getLogger(__name__)

Held = list[tuple[FileRef, str]]  # (file, owner) pairs


class ClaimKeeper:
    """`keep(ref, owner)` renews that claim every third of `ttl` while its block runs, by calling `renew`."""

    def __init__(self, renew: Callable[[Held, int], object], ttl: int) -> None:
        self.renew = renew
        self.ttl = ttl
        self._held: dict[tuple[FileRef, str], int] = {}  # (ref, owner) -> how many copies hold it
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def keep(self, ref: FileRef, owner: str) -> Iterator[None]:
        key = (ref, owner)
        with self._lock:
            self._held[key] = self._held.get(key, 0) + 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cachetasks-claims", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held[key] -= 1
                if not self._held[key]:
                    del self._held[key]

    def _run(self) -> None:
        while True:
            threading.Event().wait(max(0.2, self.ttl / 3))
            with self._lock:
                held = list(self._held)
            if held:
                try:
                    self.renew(held, self.ttl)
                except redis.RedisError as exc:
                    log.debug("could not renew %d claims: %s", len(held), type(exc).__name__)
