"""Claim the ongoing files that need a copy and enqueue those copies: one path for collect and the listener.

Both callers name files with the document ongoing at each address. The claim (`Cache.scan`,
one script per batch) is atomic, so whichever of the two reaches a file first enqueues its
copy and the other finds it in flight: a file is never fetched twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .cache import Cache, ScanResult
from .ref import FileRef, address_problem
from .settings import Settings

log = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[FileRef]], None]


@dataclass(frozen=True)
class Dispatched:
    valid: list[FileRef]  # the files named whose address a backend may read
    scan: ScanResult  # where each stood, and those claimed (their copies are enqueued)

    @property
    def caught(self) -> int:
        """Copies enqueued for files not cached, or cached for another document: not just a check of storage."""
        return len(self.scan.claimed) - self.scan.rechecks


def dispatch(
    cache: Cache,
    settings: Settings,
    documents: Mapping[FileRef, str],
    enqueue: Enqueue,
    *,
    check: Mapping[FileRef, str] | None = None,
    collecting: bool = True,
    queued: bool = False,
) -> Dispatched:
    """Claim each file of `documents` (address -> the document ongoing there, '' if unknown) that needs a
    copy, note which document each copy is for, and enqueue the copies. A file named in `check` whose
    value was copied for another document is claimed too. If enqueueing fails, the claims are released.
    Only a collect (`collecting`) starts a new period for telling files Redis evicted from deleted ones.
    With `queued`, the copies wait in the broker's queue: they are numbered, so that collects keep their
    claims for as long as they wait.
    """
    valid = [ref for ref in documents if not _unusable(ref)]
    scan = cache.scan(
        valid, inflight_ttl=settings.inflight_ttl, ttl=settings.ttl, documents=check, collecting=collecting
    )
    if scan.claimed:
        try:
            cache.want({ref: documents[ref] for ref in scan.claimed})
            enqueue(scan.claimed)
        except BaseException:
            cache.unclaim(scan.claimed)
            raise
        if queued:
            cache.queued(scan.claimed, inflight_ttl=settings.inflight_ttl)
    return Dispatched(valid, scan)


# Ongoing files stay ongoing for many cycles: judge each address once, warn about it once.
_verdicts: dict[FileRef, str | None] = {}
_VERDICTS_MAX = 500_000


def _unusable(ref: FileRef) -> bool:
    """True for an address no backend may read; warned about once per process, not every second."""
    try:
        return _verdicts[ref] is not None
    except KeyError:
        pass
    if len(_verdicts) >= _VERDICTS_MAX:
        _verdicts.clear()
    problem = _verdicts[ref] = address_problem(*ref)
    if problem:
        log.warning("ignoring ongoing file %.200r / %.200r: %s", ref.bucket, ref.location, problem)
    return problem is not None
