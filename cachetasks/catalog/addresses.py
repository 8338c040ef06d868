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
from .watermark import TaskWatermark

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
    """A full look (`ongoing`) asks which documents are ongoing (one query on task and document, no
    joins), and looks up the addresses (joins to file2document and file) only of documents it has
    not seen yet, or whose rows changed since it last looked: RAGFlow sets update_time on every
    write, so a file moved to another folder is followed at the next look.

    Between full looks, `changes` reads only what changed since the last look of either kind: the
    documents of tasks created or updated since, and those whose rows changed; one query tells which
    of them are ongoing, with their addresses. Its cost follows what changed, not what is ongoing.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, tuple[FileRef, ...]]] = {}  # document -> (created ms, addresses)
        self._as_of: dict[str, int] = {}  # document -> the newest change of its rows its addresses reflect
        self._newest: int | None = None  # the newest update_time (ms) seen
        self._floor = 0  # the next look reads rows whose update_time is at least this
        self._previous: dict[FileRef, str] = {}  # the document ongoing at each address, as of the last look
        self._tasks = TaskWatermark()
        self._full_at: float | None = None  # time.monotonic() when the last full look began

    @property
    def files(self) -> int:
        """The ongoing files as of the last full look, with the changes seen since."""
        return len(self._previous)

    def full_due(self, every: float, *, slack: float = 0.0) -> bool:
        """Whether the last full look began at least `every` seconds ago (less `slack`), or there was none."""
        return self._full_at is None or time.monotonic() - self._full_at >= every - slack

    def look_at_everything(self) -> None:
        """Make the next look a full one (the changes the last look read were not acted upon)."""
        self._full_at = None

    def ongoing(self, engine: sa.Engine, *, window_seconds: int, now: float | None = None) -> Ongoing:
        """Every ongoing file (a full look)."""
        self._full_at = time.monotonic()
        since_ms = int((time.time() if now is None else now) * 1000) - window_seconds * 1000
        self._tasks.documents(engine)  # from here on, `changes` follows the tasks
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

    def changes(self, engine: sa.Engine, *, window_seconds: int, now: float | None = None) -> Ongoing:
        """The ongoing files of the documents whose tasks or rows changed since the last look, each with
        the document ongoing there now; `fresh`, those whose document is new since. Files that stopped
        being ongoing without a change of stamps (past the window, a key deleted in Redis) are left to
        the next full look."""
        since_ms = int((time.time() if now is None else now) * 1000) - window_seconds * 1000
        docs = self._tasks.documents(engine)
        floor, changed = self._changed(engine)
        docs.update(changed)
        if not docs:
            return Ongoing({})
        found = ongoing_addresses(engine, docs, since_ms)
        owners = dict(self._previous)
        for doc in docs:
            for ref in self._known.get(doc, (0, ()))[1]:
                if owners.get(ref) == doc:  # where it was: moved, or no longer ongoing
                    del owners[ref]
            if doc in found:
                created, refs = found[doc]
                self._known[doc], self._as_of[doc] = (created, tuple(refs)), changed.get(doc, floor)
            else:  # a full look looks it up again if it is ongoing by then
                self._known.pop(doc, None)
                self._as_of.pop(doc, None)
        documents: dict[FileRef, str] = {}
        for doc, (created, refs) in found.items():
            for ref in refs:  # two documents at one address: the newer one is the file's owner now
                owner = owners.get(ref)
                if owner is None or (created, doc) > (self._known.get(owner, (0, ()))[0], owner):
                    owners[ref] = doc
                documents[ref] = owners[ref]
        fresh = {ref for ref, doc in documents.items() if self._previous.get(ref) != doc}
        self._previous = owners
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
    for doc, (created, refs) in ongoing_addresses(engine, documents, since_ms).items():
        for ref in refs:
            owners[ref] = max(owners.get(ref, (created, doc)), (created, doc))
    return {ref: doc for ref, (_, doc) in owners.items()}


def ongoing_addresses(
    engine: sa.Engine, documents: Iterable[str], since_ms: int
) -> dict[str, tuple[int, list[FileRef]]]:
    """Each of `documents` that is ongoing (tasks created since `since_ms`), with its creation time and its
    usable addresses: one query per 5,000 documents."""
    found: dict[str, tuple[int, list[FileRef]]] = {}
    for batch in batched(dict.fromkeys(documents)):
        for doc, bucket, location, created in run(engine, ongoing_addresses_query(since_ms), {"ids": batch}, width=4):
            _, refs = found.setdefault(str(doc), (int(created or 0), []))
            if usable(bucket, location):
                refs.append(FileRef(str(bucket), str(location)))
    return found


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
