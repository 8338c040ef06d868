"""Claims: which copy may fetch a file, and what a collect or `status` finds in the cache.

A file is claimed by the collect that finds it uncached ('queued'), taken over by the copy
that runs ('begin', the copy's id), kept alive while it runs and released at its end. A file
that cannot be cached for now carries a skip mark with its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import redis

from ..batches import batched
from ..ref import FileRef
from .keys import HELD, INFLIGHT, OWNED, QUEUED, SIZES, SKIP, inflight_key, room_key, skip_key
from .scripts import Scripts
from .states import FileState, SkipReason


class Begun(NamedTuple):
    state: FileState  # CLAIMED (the claim is the caller's: copy), or why not: CACHED, SKIPPED, IN_FLIGHT
    needs: int  # bytes the file needed when it was last skipped for lack of room; 0 if unknown


@dataclass
class ScanResult:
    claimed: list[FileRef] = field(default_factory=list)
    counts: Counter[FileState] = field(default_factory=Counter)


class Claims:
    """The claim operations of `Cache`."""

    client: redis.Redis
    scripts: Scripts

    # -- the collect side -------------------------------------------------------------------------

    def scan(self, refs: Iterable[FileRef], *, inflight_ttl: int, ttl: int) -> ScanResult:
        """Classify every ref, claiming the uncached ones and renewing the cached ones: one round trip a batch."""
        result = ScanResult()
        args: list[str | int] = [inflight_ttl * 1000, ttl * 1000, INFLIGHT, SKIP]
        for batch in batched(refs):
            counts, claimed = self.scripts.scan(keys=[OWNED, SIZES, HELD, *(ref.key for ref in batch)], args=args)
            for state, n in zip(counts[::2], counts[1::2], strict=True):
                result.counts[FileState(_text(state))] += int(n)
            result.claimed.extend(batch[int(position) - 1] for position in claimed)
        return result

    def unclaim(self, refs: Sequence[FileRef]) -> None:
        """Release claims whose copy could not be enqueued (a copy that took one keeps it)."""
        for batch in batched(refs):
            with self.client.pipeline(transaction=False) as pipe:
                for ref in batch:
                    self.scripts.hold(keys=[inflight_key(ref.key)], args=[QUEUED, 0], client=pipe)
                pipe.execute()

    def inspect(self, refs: Iterable[FileRef]) -> dict[FileRef, str]:
        """Where each file stands, changing nothing: a FileState, or 'skipped:REASON'."""
        states: dict[FileRef, str] = {}
        for batch in batched(refs):
            answers = self.scripts.inspect(keys=[OWNED, *(ref.key for ref in batch)], args=[INFLIGHT, SKIP])
            states.update(zip(batch, map(_text, answers), strict=True))
        return states

    # -- the copy side ----------------------------------------------------------------------------

    def begin(self, ref: FileRef, owner: str, *, inflight_ttl: int) -> Begun:
        """Take the claim for `owner`: CLAIMED, or the state that makes a copy needless (CACHED, SKIPPED, IN_FLIGHT)."""
        keys = [ref.key, inflight_key(ref.key), skip_key(ref.key), room_key(ref.key), OWNED]
        state, needs = self.scripts.begin(keys=keys, args=[owner, inflight_ttl * 1000])
        return Begun(FileState(_text(state)), int(needs))

    def hold(self, ref: FileRef, owner: str, seconds: float, *, client: redis.Redis | None = None) -> bool:
        """Extend `owner`'s claim; False when it is no longer theirs (always False on a pipeline: queued)."""
        args: list[str | int] = [owner, max(1, int(seconds * 1000))]
        return bool(self.scripts.hold(keys=[inflight_key(ref.key)], args=args, client=client or self.client))

    def release(self, ref: FileRef, owner: str) -> None:
        self.scripts.hold(keys=[inflight_key(ref.key)], args=[owner, 0])

    def remember_skip(
        self, ref: FileRef, reason: SkipReason, seconds: int, *, needs: int = 0, needs_ttl: int = 0
    ) -> None:
        """Do not try `ref` again for `seconds`.

        With `needs`, the file was skipped for lack of room: its size is kept `needs_ttl`
        seconds, so that later tries can tell it still does not fit without opening it.
        """
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(skip_key(ref.key), reason.value, ex=seconds)
            if needs and needs_ttl:
                pipe.set(room_key(ref.key), needs, ex=needs_ttl)
            pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
