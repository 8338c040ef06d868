"""RAGFlow's task streams, read from outside its consumer group.

RAGFlow's executors read the streams through the consumer group `rag_flow_svr_task_broker`
(XREADGROUP, then XACK). The listener reads them with plain XREAD from the id of the last entry
it handled, kept in Redis so that a restart or another listener continues from there: nothing
it does is seen by the group (no XREADGROUP, XACK, XCLAIM, XDEL, XTRIM or XGROUP, ever).

Stream ids grow with the server's clock. When a stream's last id is behind the one the listener
read (the stream was recreated while its Redis restarted, or the clock went back), the listener
reads it again from the start of the ongoing window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..cache.keys import LISTENER_CURSORS

log = logging.getLogger(__name__)

# `te.{priority}.common` since RAGFlow 0.21 (`common/settings.py get_svr_queue_name`); before that
# `rag_flow_svr_queue` (priority 0) and `rag_flow_svr_queue_1`. Priority 1 is read first, as RAGFlow does.
RAGFLOW_STREAMS = ("te.1.common", "te.0.common", "rag_flow_svr_queue_1", "rag_flow_svr_queue")
FIND_EVERY = 10.0  # seconds between two looks for the streams
RESET_CHECK_EVERY = 1.0  # seconds between two checks of idle streams for a reset


@dataclass(frozen=True)
class Entry:
    stream: str
    id: str
    fields: dict[bytes, bytes]


def id_order(entry_id: str) -> tuple[int, int]:
    """A stream id ('1700000000000-3') as numbers, in the order Redis gives ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Streams:
    """The streams the listener reads, where it is in each, and the reading itself."""

    def __init__(
        self,
        client: redis.Redis,
        names: Sequence[str] | None,
        *,
        window_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.named = None if names is None else tuple(names)  # None: RAGFlow's, those found
        self.window_ms = window_seconds * 1000
        self.clock = clock
        self.cursors: dict[str, str] = {}  # stream -> id of the last entry handled (or the start of the window)
        self._handled: dict[str, str] = {}  # the cursors that are ids of entries handled, not a window's start
        self._found: list[str] = []
        self._found_at: float | None = None
        self._checked_at = -float("inf")
        self._refused: set[str] = set()

    def find(self) -> list[str]:
        """The streams to read, looked for every FIND_EVERY seconds.

        RAGFlow's names are read once they exist as streams, and kept after that (a Redis that
        restarted has them back as soon as RAGFlow writes again). Named streams are read whether
        they exist yet or not, unless the key holds something else than a stream.
        """
        now = self.clock()
        if self._found_at is not None and now - self._found_at < FIND_EVERY:
            return self._found
        candidates = self.named if self.named is not None else RAGFLOW_STREAMS
        with self.client.pipeline(transaction=False) as pipe:
            for name in candidates:
                pipe.type(name)
            types = [_text(t) for t in pipe.execute()]
        found = []
        for name, kind in zip(candidates, types, strict=True):
            if kind == "stream" or (self.named is not None and kind == "none") or name in self._found:
                found.append(name)
            elif self.named is not None and name not in self._refused:
                log.warning("not reading %.200r: the key holds a %s, not a stream", name, kind)
                self._refused.add(name)
        if found and found != self._found:
            log.info("reading %s", ", ".join(f"{name!r:.200}" for name in found))
        elif not found and (self._found_at is None or self._found):
            log.info(
                "no task stream in the cache's Redis yet (looked for %s); looking again every %g s",
                ", ".join(f"{name!r:.200}" for name in candidates),
                FIND_EVERY,
            )
        self._found, self._found_at = found, now
        return found

    def rewind(self) -> None:
        """Forget where this process was: the next read continues from the ids kept in Redis (after a
        failover, another listener may have moved them on), or from the start of the ongoing window."""
        self.cursors.clear()
        self._handled.clear()

    def read(self, streams: Sequence[str], *, block: float, count: int) -> list[Entry]:
        """The entries after each stream's cursor, up to `count` a stream, waiting up to `block` seconds for one."""
        self._load(streams)
        reply = self.client.xread(
            streams={name: self.cursors[name] for name in streams}, count=count, block=max(1, int(block * 1000))
        )
        return _entries(reply)

    def handled(self, entries: Sequence[Entry], pipe: redis.client.Pipeline) -> dict[str, str]:
        """Queue on `pipe` the new cursors of the streams `entries` came from; return them, for `moved`."""
        last = {entry.stream: entry.id for entry in entries}
        if last:
            pipe.hset(LISTENER_CURSORS, mapping={name: entry_id for name, entry_id in last.items()})
        return last

    def moved(self, cursors: dict[str, str]) -> None:
        """The cursors `handled` queued are in Redis: read on from them."""
        self.cursors.update(cursors)
        self._handled.update(cursors)

    def check_resets(self, streams: Sequence[str]) -> None:
        """Read again from the start of the window any stream whose last id is behind the last entry handled
        from it (at most once every RESET_CHECK_EVERY seconds; a stream that does not exist is left until it
        does). A stream read from the start of the window, whose entries are all older, has not gone back."""
        now = self.clock()
        if now - self._checked_at < RESET_CHECK_EVERY:
            return
        self._checked_at = now
        known = [name for name in streams if name in self._handled]
        with self.client.pipeline(transaction=False) as pipe:
            for name in known:
                pipe.xinfo_stream(name)
            infos = pipe.execute(raise_on_error=False)
        for name, info in zip(known, infos, strict=True):
            if isinstance(info, redis.ResponseError):
                continue  # no such key: RAGFlow writes it again
            if isinstance(info, Exception):
                raise info
            last = _text(info["last-generated-id"])
            if id_order(last) < id_order(self._handled[name]):
                start = self._window_start()
                log.warning(
                    "stream %.200r went back (its last id %s is before %s, the last one read): "
                    "Redis restarted or the stream was made again; reading it from %s",
                    name,
                    last,
                    self._handled[name],
                    start,
                )
                self.cursors[name] = start
                del self._handled[name]

    def _load(self, streams: Sequence[str]) -> None:
        missing = [name for name in streams if name not in self.cursors]
        if not missing:
            return
        kept = self.client.hmget(LISTENER_CURSORS, missing)
        start = self._window_start()
        for name, saved in zip(missing, kept, strict=True):
            cursor = _text(saved) if saved is not None else ""
            if _is_id(cursor) and id_order(cursor) > id_order(start):
                self.cursors[name] = self._handled[name] = cursor
            else:  # none kept, or older than the window: nothing before its start can be ongoing
                self.cursors[name] = start

    def _window_start(self) -> str:
        """The first id of the ongoing window, on the Redis server's clock (stream ids are made with it)."""
        seconds, micros = self.client.time()
        return f"{max(0, seconds * 1000 + micros // 1000 - self.window_ms)}-0"


def _entries(reply: Any) -> list[Entry]:
    """XREAD's reply as entries: RESP2 gives [[stream, [[id, fields], ...]], ...], RESP3 {stream: [...]}."""
    streams = reply.items() if isinstance(reply, dict) else reply or []
    return [
        Entry(_text(name), _text(entry_id), dict(fields or {})) for name, items in streams for entry_id, fields in items
    ]


def _is_id(text: str) -> bool:
    try:
        id_order(text)
    except ValueError:
        return False
    return True


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
