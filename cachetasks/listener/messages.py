"""What one of RAGFlow's task messages says: the document whose file its task reads.

RAGFlow (`rag/utils/redis_conn.py`, `queue_product`) adds each task to a stream as one field,
`message`, holding the task as JSON: `{"id": ..., "doc_id": ..., "from_page": ..., ...}`.
Tasks of no document (a memory extraction names `memory_id` instead) say nothing to the cache;
GraphRAG and RAPTOR tasks name a document that does not exist, which the lookup drops.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable, Mapping

MAX_ID_CHARS = 255  # RAGFlow's ids are 32 hex digits; the column is VARCHAR(32)


class Malformed(ValueError):
    """The entry is not a task message as RAGFlow writes them; the text says why."""


def document_of(fields: Mapping[bytes, bytes]) -> str | None:
    """The id of the document a task message names; None for a task of no document.

    Raises Malformed for an entry without a `message` field, one that is not a JSON object, or a
    `doc_id` that cannot be a document's id (it would otherwise reach the database as a parameter).
    """
    raw = fields.get(b"message")
    if raw is None:
        raise Malformed("no 'message' field")
    try:
        task = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Malformed("'message' is not JSON") from None
    if not isinstance(task, dict):
        raise Malformed("'message' is not a JSON object")
    document = task.get("doc_id")
    if document is None:
        return None
    if not isinstance(document, str) or not document:
        raise Malformed("'doc_id' is not a non-empty string")
    if len(document) > MAX_ID_CHARS or not document.isprintable() or not _encodable(document):
        raise Malformed("'doc_id' cannot be a document id")
    return document


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \\ud800 escapes can carry
        return False
    return True


class MalformedLog:
    """Warns once about each malformed entry, at most `most` lines per `every` seconds; the entries
    beyond are counted, and the count given in the next line. Names are logged with %r, so that
    control characters in them are escaped rather than written to the log."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        most: int = 10,
        every: float = 60.0,
        remember: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.most, self.every, self.clock = logger, most, every, clock
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._remember = remember
        self._window_start = -float("inf")
        self._lines = 0
        self._unlogged = 0

    def skipped(self, stream: str, entry_id: str, reason: str, raw: bytes | None) -> None:
        """Note an entry skipped as malformed; an entry read again (after a failed batch) is not logged again."""
        if (stream, entry_id) in self._seen:
            return
        self._seen[(stream, entry_id)] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        now = self.clock()
        if now - self._window_start >= self.every:
            self._window_start, self._lines = now, 0
        if self._lines >= self.most:
            self._unlogged += 1
            return
        self._lines += 1
        more, self._unlogged = self._unlogged, 0
        self.logger.warning(
            "skipped a malformed task message %s on stream %.200r: %s; it starts %.120r%s",
            entry_id,
            stream,
            reason,
            raw[:100] if raw is not None else None,
            f" ({more} more malformed messages skipped without a line)" if more else "",
        )
