"""Watching a key from another connection while the service writes it."""

from __future__ import annotations

import threading

from cachetasks.cache import Cache


class Watcher:
    """Reads a key from another connection every few milliseconds, keeping each value that differs from the last."""

    def __init__(self, cache: Cache, key: str, *, every: float = 0.005) -> None:
        self.cache, self.key, self.every = cache, key, every
        self.seen: list[bytes | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            value = self.cache.client.get(self.key)
            if not self.seen or self.seen[-1] != value:
                self.seen.append(value)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
