"""The address book: which document is ongoing at which storage address, kept between collects."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..batches import batched
from ..ref import FileRef
from . import schema
from .queries import addresses_query, changed_documents_query, ongoing_addresses_query, ongoing_documents_query, run

# Rows committed a little after their update_time was taken are still seen: the look after the
# newest change moved reaches back this far before it, once.
CHANGES_OVERLAP_MS = 2000


@dataclass(frozen=True)
class Ongoing:
    """The ongoing files: each address with the document ongoing there ('' when the query names none),
    and the addresses whose document is new since the previous look (a re-upload, a move)."""

    documents: dict[FileRef, str]
    fresh: set[FileRef] = field(default_factory=set)

    @property
    def refs(self) -> set[FileRef]:
        return set(self.documents)


class AddressBook:
    """Each collect asks which documents are ongoing (one query on task and document, no joins),
    and looks up the addresses (joins to file2document and file) only of documents it has not
    seen yet, or whose rows changed since it last looked: RAGFlow sets update_time on every
    write, so a file moved to another folder is followed at the next collect. At 100k ongoing
    documents this is what keeps a collect near the tick.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, tuple[FileRef, ...]]] = {}  # document -> (created ms, addresses)
        self._as_of: dict[str, int] = {}  # document -> the newest change of its rows its addresses reflect
        self._newest: int | None = None  # the newest update_time (ms) seen
        self._floor = 0  # the next look reads rows whose update_time is at least this
        self._previous: dict[FileRef, str] = {}

    def ongoing(self, engine: sa.Engine, *, window_seconds: int, now: float | None = None) -> Ongoing:
        since_ms = int((time.time() if now is None else now) * 1000) - window_seconds * 1000
        docs = [str(doc_id) for (doc_id,) in run(engine, ongoing_documents_query(since_ms), {}, width=1)]
        floor, changed = self._changed(engine)
        due = [doc for doc in docs if doc not in self._known or changed.get(doc, -1) > self._as_of.get(doc, -1)]
        for batch in batched(due):
            found: dict[str, tuple[int, list[FileRef]]] = {doc: (0, []) for doc in batch}
            for doc, bucket, location, created in run(engine, addresses_query(), {"ids": batch}, width=4):
                refs = found[str(doc)][1]
                if usable(bucket, location):
                    refs.append(FileRef(str(bucket), str(location)))
                found[str(doc)] = (int(created or 0), refs)
            for doc, (created, refs) in found.items():
                self._known[doc] = (created, tuple(refs))
                # Rows changed since `floor` may be committed after this lookup: look again if one shows.
                self._as_of[doc] = changed.get(doc, floor)
        if len(self._known) > 2 * len(docs) + 1000:  # forget documents that stopped being ongoing
            self._known = {doc: self._known[doc] for doc in docs}
            self._as_of = {doc: self._as_of[doc] for doc in docs if doc in self._as_of}
        documents: dict[FileRef, str] = {}
        newest: dict[FileRef, int] = {}
        for doc in docs:
            created, addresses = self._known[doc]
            for ref in addresses:  # two documents at one address: the newer one is the file's owner now
                if ref not in newest or (created, doc) > (newest[ref], documents[ref]):
                    documents[ref], newest[ref] = doc, created
        fresh = {ref for ref, doc in documents.items() if self._previous.get(ref) != doc}
        self._previous = documents
        return Ongoing(documents, fresh)

    def _changed(self, engine: sa.Engine) -> tuple[int, dict[str, int]]:
        """Since when this look saw changes (update_time, ms), and the newest change of each document
        whose rows changed since then. The first look starts just before the newest change in the tables."""
        if self._newest is None:
            self._newest = _newest_update(engine)
            self._floor = self._newest - CHANGES_OVERLAP_MS
        floor = self._floor
        changed: dict[str, int] = {}
        for doc, ms in run(engine, changed_documents_query(floor), {}, width=2):
            if doc is not None:
                changed[str(doc)] = max(changed.get(str(doc), 0), int(ms or 0))
        newest = max(changed.values(), default=self._newest)
        # Each row is read twice at most: once new, once more by the look after, for late commits.
        self._floor = newest - CHANGES_OVERLAP_MS if newest > self._newest else self._newest + 1
        self._newest = max(newest, self._newest)
        return floor, changed


def addresses_of_ongoing(
    engine: sa.Engine, documents: Iterable[str], *, window_seconds: int, now: float | None = None
) -> dict[FileRef, str]:
    """The addresses of those `documents` that are ongoing, each with its document: one query per 5,000
    documents. Two documents at one address: the newer one owns it, as in the address book."""
    since_ms = int((time.time() if now is None else now) * 1000) - window_seconds * 1000
    owners: dict[FileRef, tuple[int, str]] = {}
    for batch in batched(dict.fromkeys(documents)):
        for doc, bucket, location, created in run(engine, ongoing_addresses_query(since_ms), {"ids": batch}, width=4):
            if usable(bucket, location):
                ref, owner = FileRef(str(bucket), str(location)), (int(created or 0), str(doc))
                owners[ref] = max(owners.get(ref, owner), owner)
    return {ref: doc for ref, (_, doc) in owners.items()}


def _newest_update(engine: sa.Engine) -> int:
    newest = [
        sa.select(sa.func.max(table.c.update_time)).scalar_subquery()
        for table in (schema.document, schema.file, schema.file2document)
    ]
    [(doc, file, link)] = run(engine, sa.select(*newest), {}, width=3)
    return max(int(doc or 0), int(file or 0), int(link or 0))


def usable(bucket: object, location: object) -> bool:
    """A row names a file: a bucket and a location that is not blank."""
    return bool(bucket) and bool(location) and bool(str(location).strip())
