"""What a task message says, and how malformed ones are logged: pure logic, no Redis."""

from __future__ import annotations

import json
import logging

import pytest

from cachetasks.listener.messages import Malformed, MalformedLog, document_of
from cachetasks.listener.streams import id_order


def message(value: object) -> dict[bytes, bytes]:
    return {b"message": json.dumps(value).encode()}


def test_a_ragflow_task_message_names_its_document() -> None:
    """The `message` field's JSON task gives its doc_id, whatever else it holds."""
    # Given a message as queue_tasks writes one
    fields = message({"id": "t1", "doc_id": "d" * 32, "progress": 0.0, "from_page": 0, "to_page": 12, "priority": 0})
    # Expect
    assert document_of(fields) == "d" * 32


def test_a_task_of_no_document_names_none() -> None:
    """A memory extraction task (memory_id, no doc_id) is a task message of no document, not a malformed one."""
    assert document_of(message({"id": "t1", "task_type": "memory", "memory_id": "m1"})) is None


MALFORMED = {
    "no message field": {b"msg": b"{}"},
    "not JSON": {b"message": b"{not json"},
    "not UTF-8": {b"message": b"\xff\xfe"},
    "JSON nested past recursion": {b"message": b"[" * 100_000},
    "not an object": message(["doc"]),
    "doc_id a number": message({"doc_id": 7}),
    "doc_id empty": message({"doc_id": ""}),
    "doc_id with control characters": message({"doc_id": "a\x1b[31m"}),
    "doc_id a lone surrogate": {b"message": b'{"doc_id": "\\ud800"}'},
    "doc_id too long": message({"doc_id": "d" * 256}),
}


@pytest.mark.parametrize("fields", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_entry_that_is_not_a_task_message_is_malformed(fields: dict[bytes, bytes]) -> None:
    """Anything RAGFlow would not write raises Malformed, rather than reaching the database as a parameter."""
    with pytest.raises(Malformed):
        document_of(fields)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_malformed_entry_is_logged_once_and_at_most_so_many_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """Three lines a minute at most; an entry seen again is not logged again; the next minute's first line
    says how many went unlogged."""
    # Given a log of three lines a minute
    clock = Clock()
    malformed = MalformedLog(logging.getLogger("cachetasks.test"), most=3, every=60, clock=clock)
    # When five entries are skipped, one of them twice, then another a minute later
    with caplog.at_level(logging.WARNING, logger="cachetasks.test"):
        for n in (1, 2, 1, 3, 4, 5):
            malformed.skipped("te.0.common", f"{n}-0", "not JSON", b"x")
        clock.now = 61
        malformed.skipped("te.0.common", "6-0", "not JSON", b"x")
    # Expect
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[5] for line in lines] == ["1-0", "2-0", "3-0", "6-0"]
    assert "(2 more malformed messages skipped without a line)" in lines[-1]


def test_a_malformed_entry_is_logged_with_control_characters_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """A stream name or message carrying terminal escapes reaches the log as escapes, not as control characters."""
    # When
    with caplog.at_level(logging.WARNING, logger="cachetasks.test"):
        MalformedLog(logging.getLogger("cachetasks.test")).skipped("te\x1b[2J", "1-0", "not JSON", b"\x1b]0;x\x07")
    # Expect
    [line] = [r.getMessage() for r in caplog.records]
    assert "\x1b" not in line and "\x07" not in line
    assert "'te\\x1b[2J'" in line and "\\x1b]0;x\\x07" in line


def test_stream_ids_compare_as_numbers() -> None:
    """'10-0' comes after '9-5', and '9-10' after '9-9': ids are not compared as text."""
    assert sorted(["10-0", "9-5", "9-10", "9-9"], key=id_order) == ["9-5", "9-9", "9-10", "10-0"]
