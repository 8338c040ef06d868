"""Copies waiting in the broker's queue keep their claims, however long the queue.

A collect claims a file for the copy it queues; the claim lasts CACHETASKS_INFLIGHT_TTL. With
a backlog longer than that, a claim would lapse while its message still waits, and the next
collect would queue the file again: the queue would grow by the whole backlog at every lapse.
So each copy queued is numbered, and every collect, knowing how many messages wait, renews the
claims of the copies still among them. Claims of copies that left the queue are left alone: a
copy that runs takes its claim over, and one lost with a worker lapses as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from ..batches import batched
from ..ref import FileRef
from .keys import INFLIGHT, QUEUED_COPIES, WAITING, WAITING_DUE
from .scripts import Scripts


class Backlog:
    """The queue operations of `Cache`."""

    client: redis.Redis
    scripts: Scripts

    def queued(self, refs: Sequence[FileRef], *, inflight_ttl: int) -> None:
        """Note copies of `refs` just queued, in the order they were queued."""
        for batch in batched(refs):
            keys = [QUEUED_COPIES, WAITING, WAITING_DUE]
            self.scripts.queued(keys=keys, args=[inflight_ttl * 500, *(ref.key for ref in batch)])

    def keep_waiting(self, messages: int, *, inflight_ttl: int) -> int:
        """With `messages` in the queue now, renew the claims due of the copies still waiting; return how many."""
        keys = [QUEUED_COPIES, WAITING, WAITING_DUE]
        return int(self.scripts.waiting(keys=keys, args=[messages, inflight_ttl * 1000, INFLIGHT]))
