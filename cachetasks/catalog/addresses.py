"""The address book: storage addresses of ongoing documents, remembered between collects."""

from __future__ import annotations

import random
import time

import sqlalchemy as sa

from ..batches import batched
from ..ref import FileRef
from .queries import addresses_query, ongoing_documents_query, run


class AddressBook:
    """A document's address does not change once it exists, so each collect only asks which
    documents are ongoing (no joins to file2document and file) and looks up the addresses of
    documents it has not seen in the last `ttl` seconds (spread, so they do not all come due
    at once). At 100k ongoing documents this is what keeps a collect near the tick.
    """

    def __init__(self, *, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._known: dict[str, tuple[float, tuple[FileRef, ...]]] = {}

    def ongoing(self, engine: sa.Engine, *, window_seconds: int, now: float | None = None) -> set[FileRef]:
        since_ms = int((time.time() if now is None else now) * 1000) - window_seconds * 1000
        docs = [str(doc_id) for (doc_id,) in run(engine, ongoing_documents_query(since_ms), {}, width=1)]
        clock = time.monotonic()
        due = [doc for doc in docs if (entry := self._known.get(doc)) is None or entry[0] < clock]
        for batch in batched(due):
            found: dict[str, list[FileRef]] = {doc: [] for doc in batch}
            for doc, bucket, location in run(engine, addresses_query(), {"ids": batch}, width=3):
                if usable(bucket, location):
                    found[str(doc)].append(FileRef(str(bucket), str(location)))
            for doc, refs in found.items():
                self._known[doc] = (clock + self.ttl * (0.5 + random.random()), tuple(refs))
        if len(self._known) > 2 * len(docs) + 1000:  # forget documents that stopped being ongoing
            self._known = {doc: self._known[doc] for doc in docs}
        return {ref for doc in docs for ref in self._known[doc][1]}


def usable(bucket: object, location: object) -> bool:
    """A row names a file: a bucket and a location that is not blank."""
    return bool(bucket) and bool(location) and bool(str(location).strip())
