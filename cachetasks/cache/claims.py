"""Claims: which copy may fetch a file, and what a collect or `status` finds in the cache.

A file is claimed by the collect that finds it uncached, or cached but in need of a copy (its
value was copied for another document, or is due for a check of storage's version): the claim
is 'queued', and the document the copy is for is noted. The copy that runs takes it over
(`begin`, with the copy's id), keeps it alive while it runs and releases it at its end. A file
that cannot be cached for now carries a skip mark with its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import redis

from ..batches import batched
from ..ref import FileRef
from .keys import (
    EVICTED,
    EVICTIONS,
    HELD,
    INFLIGHT,
    OWNED,
    QUEUED,
    SIZES,
    SKIP,
    SOURCES,
    WANTED,
    inflight_key,
    room_key,
    skip_key,
)
from .scripts import Scripts
from .states import FileState, SkipReason


class Source(NamedTuple):
    """What a cached value was copied from: the document ongoing at its address ('' if unknown),
    and the version of the storage object (`Blob.version`)."""

    document: str
    version: str

    def __str__(self) -> str:
        return f"{self.document}\t{self.version}"

    @classmethod
    def parse(cls, text: str) -> Source | None:
        document, tab, version = text.partition("\t")
        return cls(document, version) if tab else None


class Begun(NamedTuple):
    state: FileState  # CLAIMED (the claim is the caller's: copy), or why not: CACHED, SKIPPED, IN_FLIGHT
    needs: int = 0  # bytes the file needed when it was last skipped for lack of room; 0 if unknown
    replacing: Source | None = None  # the value the copy is to replace, when the file is cached
    document: str = ""  # the document the copy is for ('' if the collect named none)


@dataclass
class ScanResult:
    claimed: list[FileRef] = field(default_factory=list)
    counts: Counter[FileState] = field(default_factory=Counter)
    rechecks: int = 0  # of the claimed, cached files whose copy only checks storage's version


class Claims:
    """The claim operations of `Cache`."""

    client: redis.Redis
    scripts: Scripts

    # -- the collect side -------------------------------------------------------------------------

    def scan(
        self,
        refs: Iterable[FileRef],
        *,
        inflight_ttl: int,
        ttl: int,
        documents: Mapping[FileRef, str] | None = None,
        collecting: bool = True,
    ) -> ScanResult:
        """Classify every ref: claim the uncached ones, renew the cached ones, and claim those whose
        value was copied for another document than `documents` names (only the refs whose document
        changed since the last collect need to be there). One round trip a batch.

        A full collect's scan (`collecting`) starts a new period for telling evicted files from deleted
        ones; another scan (the listener's, a collect of changes) judges by the period the last one started.
        """
        result = ScanResult()
        refs = list(refs)
        if not refs and not collecting:
            return result
        evicting = self._evicting(note=collecting)
        args: list[str | int] = [inflight_ttl * 1000, ttl * 1000, INFLIGHT, SKIP, int(evicting)]
        for batch in batched(refs):
            keys = [SIZES, HELD, OWNED, SOURCES, EVICTED, *(ref.key for ref in batch)]
            wants = [documents.get(ref, "") for ref in batch] if documents else [""] * len(batch)
            counts, claimed, rechecks = self.scripts.scan(keys=keys, args=[*args, *wants])
            result.rechecks += int(rechecks)
            for state, n in zip(counts[::2], counts[1::2], strict=True):
                result.counts[FileState(_text(state))] += int(n)
            result.claimed.extend(batch[int(position) - 1] for position in claimed)
        return result

    def _evicting(self, *, note: bool) -> bool:
        """Has Redis evicted keys since the last full collect? Then a file that vanished early was evicted, not deleted.
        With `note`, the count now is where the next period starts."""
        evicted = int(self.client.info("stats")["evicted_keys"])
        before = self.client.getset(EVICTIONS, evicted) if note else self.client.get(EVICTIONS)
        return before is not None and evicted > int(before)

    def want(self, documents: Mapping[FileRef, str]) -> None:
        """Note which document each claimed file's copy is for, before the copies are enqueued."""
        for batch in batched(documents.items()):
            self.client.hset(WANTED, mapping={ref.key: document for ref, document in batch})

    def unclaim(self, refs: Sequence[FileRef]) -> None:
        """Release claims whose copy could not be enqueued (a copy that took one keeps it)."""
        for batch in batched(refs):
            with self.client.pipeline(transaction=False) as pipe:
                for ref in batch:
                    self.scripts.hold(keys=[inflight_key(ref.key)], args=[QUEUED, 0], client=pipe)
                pipe.hdel(WANTED, *(ref.key for ref in batch))
                pipe.execute()

    def inspect(self, refs: Iterable[FileRef]) -> dict[FileRef, str]:
        """Where each file stands, changing nothing: a FileState, or 'skipped:REASON'."""
        states: dict[FileRef, str] = {}
        for batch in batched(refs):
            keys = [OWNED, EVICTED, *(ref.key for ref in batch)]
            answers = self.scripts.inspect(keys=keys, args=[INFLIGHT, SKIP])
            states.update(zip(batch, map(_text, answers), strict=True))
        return states

    # -- the copy side ----------------------------------------------------------------------------

    def begin(self, ref: FileRef, owner: str, *, inflight_ttl: int) -> Begun:
        """Take the claim for `owner`: CLAIMED, or the state that makes a copy needless (CACHED, SKIPPED, IN_FLIGHT)."""
        keys = [ref.key, inflight_key(ref.key), skip_key(ref.key), room_key(ref.key), OWNED, EVICTED, SOURCES, WANTED]
        state, needs, replacing, document = self.scripts.begin(keys=keys, args=[owner, inflight_ttl * 1000])
        return Begun(FileState(_text(state)), int(needs), Source.parse(_text(replacing)), _text(document))

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
            pipe.hdel(WANTED, ref.key)
            pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
