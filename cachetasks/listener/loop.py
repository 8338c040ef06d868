"""The listener's loop: read the tasks RAGFlow queued, look up their documents, claim and enqueue their files.

Each turn the listener says what it does, keeps its lease (or tries to take it, as a standby),
and reads one batch: up to 5,000 entries a stream, waiting up to a second for the first. A batch
is one lookup of its documents (only those ongoing by RAGFlow's rule come back), then the claim
and enqueue that collect uses. Its cursors and counters are written only after that succeeded,
so a batch that failed (Redis, the database or the broker down) is read again at the next turn.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from .. import catalog
from ..batches import BATCH
from ..cache import Cache
from ..cache.counters import record_listener
from ..cache.keys import LISTENER_LOCK
from ..dispatch import Enqueue, dispatch
from ..outage import OutageLog
from ..ref import FileRef
from ..settings import Settings
from . import presence
from .messages import Malformed, MalformedLog, document_of
from .presence import LEASE_SECONDS, SAY_EVERY, Role
from .streams import Entry, Streams

log = logging.getLogger(__name__)

BLOCK_SECONDS = 1.0  # the longest a read waits for an entry (and so a turn, when nothing comes)
RETRY_EVERY = 1.0  # seconds between turns while something fails, and between a standby's tries
OUTAGE_LOG_EVERY = 10.0


class Outcome(enum.StrEnum):
    """What became of a message (the label of `cachetasks_listener_messages_total`)."""

    FILE = "file"  # it names an ongoing document: its file was claimed, or found cached or in flight
    NOT_ONGOING = "not-ongoing"  # its document is not ongoing (collect catches it if it becomes so), or has no file
    NO_DOCUMENT = "no-document"  # a task of no document (a memory extraction)
    MALFORMED = "malformed"  # not a task message as RAGFlow writes them: skipped, and logged once


@dataclass(frozen=True)
class Handled:
    messages: collections.Counter[Outcome]
    files: int  # copies enqueued: files not cached, or cached for another document


def off_reason(settings: Settings) -> str | None:
    """Why the listener has nothing to do with these settings; None when it listens."""
    if settings.task_streams == ():
        return "CACHETASKS_TASK_STREAMS=none"
    if settings.ongoing_sql is not None:
        return "CACHETASKS_ONGOING_SQL is set, so a message's document cannot be looked up"
    return None


class Listener:
    """One listener process; `run` it until stopped, or call `step` to take one turn."""

    def __init__(
        self,
        engine: sa.Engine,
        cache: Cache,
        settings: Settings,
        enqueue: Enqueue,
        *,
        node: str,
        block: float = BLOCK_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.cache, self.settings, self.enqueue = engine, cache, settings, enqueue
        self.node, self.block, self.clock = node, min(block, _read_timeout(cache) / 2), clock
        self.off = off_reason(settings)
        self.streams = Streams(cache.client, settings.task_streams, window_seconds=settings.ongoing_window, clock=clock)
        self.lease = cache.lease(LISTENER_LOCK, seconds=lease_seconds, holder=node)
        self.renew_every = lease_seconds / 3
        self.active = False
        self._renewed_at = -float("inf")
        self._said: tuple[Role, tuple[str, ...]] | None = None
        self._said_at = -float("inf")
        self._standing_by = False
        self._malformed = MalformedLog(log)
        self._outages = OutageLog(
            log,
            "the listener cannot work (Redis, the database or the broker), retrying every second",
            "the listener works again",
            OUTAGE_LOG_EVERY,
        )

    def run(self, stop: threading.Event) -> None:
        """Take turns until `stop` is set; failures are logged once per interval and the turn retried."""
        log.info("listener %r started%s", self.node, f"; off: {self.off}" if self.off else "")
        while not stop.is_set():
            try:
                wait = self.step()
            except Exception as exc:  # an outage of Redis, the database or the broker: retried, never fatal
                self._outages.failed(exc)
                wait = RETRY_EVERY
            else:
                self._outages.succeeded()
            if wait:
                stop.wait(wait)
        self.close()

    def step(self) -> float:
        """One turn; returns the seconds to wait before the next one."""
        if self.off:
            self._say(Role.OFF)
            return SAY_EVERY
        self._keep_lease()
        if not self.active:
            self._say(Role.STANDBY)
            return RETRY_EVERY
        names = self.streams.find()
        self._say(Role.ACTIVE, tuple(names))
        if not names:
            return RETRY_EVERY
        entries = self.streams.read(names, block=self.block, count=BATCH)
        if not entries:
            self.streams.check_resets(names)
            return 0.0
        self.handle(entries)
        return 0.0

    def handle(self, entries: Sequence[Entry]) -> Handled:
        """Claim and enqueue the files of the ongoing documents `entries` name; then move the cursors past them."""
        counts: collections.Counter[Outcome] = collections.Counter()
        announced: list[str] = []
        for entry in entries:
            try:
                document = document_of(entry.fields)
            except Malformed as bad:
                self._malformed.skipped(entry.stream, entry.id, str(bad), entry.fields.get(b"message"))
                counts[Outcome.MALFORMED] += 1
                continue
            if document is None:
                counts[Outcome.NO_DOCUMENT] += 1
            else:
                announced.append(document)
        addresses: dict[FileRef, str] = {}
        if announced:
            window = self.settings.ongoing_window
            addresses = catalog.addresses_of_ongoing(self.engine, announced, window_seconds=window)
        ongoing = set(addresses.values())
        for document in announced:
            counts[Outcome.FILE if document in ongoing else Outcome.NOT_ONGOING] += 1
        dispatched = dispatch(
            self.cache, self.settings, addresses, self.enqueue, check=addresses, collecting=False, queued=True
        )
        handled = Handled(counts, dispatched.caught)
        with self.cache.client.pipeline(transaction=False) as pipe:
            cursors = self.streams.handled(entries, pipe)
            record_listener(pipe, handled.messages.items(), handled.files)
            pipe.execute()
        self.streams.moved(cursors)
        if dispatched.scan.claimed:
            log.info("listener: %d messages, %d copies enqueued", len(entries), len(dispatched.scan.claimed))
        return handled

    def close(self) -> None:
        """Give the lease up at once (a standby takes over within a second) and say this listener left."""
        try:
            if self.active:
                self.lease.release()
                self.active = False
            presence.leave(self.cache.client, self.node)
        except Exception as exc:  # Redis down: the lease lapses by itself
            log.info("listener %r stopped without releasing its lease: %s", self.node, type(exc).__name__)
        else:
            log.info("listener %r stopped", self.node)

    def _keep_lease(self) -> None:
        now = self.clock()
        if self.active:
            if now - self._renewed_at < self.renew_every:
                return
            if self.lease.renew():
                self._renewed_at = now
                return
            log.warning("listener %r lost its lease (Redis restarted, or it lapsed): taking it again", self.node)
            self.active = False
        if self.lease.take():
            self.active, self._renewed_at, self._standing_by = True, now, False
            self.streams.rewind()
            log.info("listener %r holds the lease: reading RAGFlow's task streams", self.node)
        elif not self._standing_by:
            self._standing_by = True
            log.info("listener %r stands by: %.200r holds the lease", self.node, self.lease.holder())

    def _say(self, role: Role, streams: tuple[str, ...] = ()) -> None:
        now = self.clock()
        if (role, streams) == self._said and now - self._said_at < SAY_EVERY:
            return
        presence.say(self.cache.client, self.node, role, streams)
        self._said, self._said_at = (role, streams), now


def _read_timeout(cache: Cache) -> float:
    """The cache client's socket timeout: a blocking read must return well within it."""
    timeout = cache.client.connection_pool.connection_kwargs.get("socket_timeout")
    return float(timeout) if timeout else 2 * BLOCK_SECONDS
