"""The cache key contract and the address rules every storage backend shares."""

from __future__ import annotations

import pytest

from cachetasks.ref import MAX_PART_BYTES, FileRef, address_problem, cache_key

REFUSED: list[tuple[object, object]] = [
    ("kb", "./a.pdf"),  # a folder reads it as a.pdf, an object store as another name
    ("kb", "a//b.pdf"),
    ("kb", "docs/"),
    (None, "a.pdf"),
    ("kb", None),
    (b"kb", "a.pdf"),
    ("", "a.pdf"),
    ("kb", ""),
    ("   ", "a.pdf"),
    ("kb", " \t\n"),
    ("kb", ".."),
    ("kb", "../secret"),
    ("kb", "a/../../secret"),
    ("kb", "a/.."),
    ("kb", "..\\secret"),
    ("kb", "a\\..\\..\\secret"),
    ("kb", "a/..\\b"),
    ("..", "a.pdf"),
    ("kb", "/etc/passwd"),
    ("kb", "\\server\\share"),
    ("/kb", "a.pdf"),
    ("kb", "a\x00.pdf"),
    ("k\x00b", "a.pdf"),
    ("kb", "a" * (MAX_PART_BYTES + 1)),
    ("kb", "é" * (MAX_PART_BYTES // 2 + 1)),  # 513 characters, 1026 bytes
    ("b" * (MAX_PART_BYTES + 1), "a.pdf"),
    ("kb/other", "a.pdf"),
    ("kb\\other", "a.pdf"),
]

ACCEPTED: list[tuple[str, str]] = [
    ("kb", "a.pdf"),
    ("8c3f0e0a2b5c11ef", "reports/2026/Q3 résumé.pdf"),
    ("kb", "文件/データ ファイル.docx"),
    ("kb", "with  spaces and\ttab.txt"),
    ("kb", "a..b.pdf"),
    ("kb", "..hidden"),
    ("kb", "trailing.."),
    ("kb", "dir/.../x"),
    ("kb", "a" * MAX_PART_BYTES),
    ("kb", "é" * (MAX_PART_BYTES // 2)),  # exactly 1024 bytes
    ("Bad_Bucket!", "a.pdf"),  # S3 naming rules are the backend's business
]


def test_cache_key_is_bucket_slash_location() -> None:
    """Readers find a file at exactly "{bucket}/{location}", nothing added, nothing escaped."""
    assert cache_key("kb1", "dir/a b é.pdf") == "kb1/dir/a b é.pdf"
    assert FileRef("kb1", "dir/a b é.pdf").key == "kb1/dir/a b é.pdf"


@pytest.mark.parametrize(("bucket", "location"), REFUSED, ids=lambda v: repr(v)[:24])
def test_unsafe_addresses_are_refused(bucket: object, location: object) -> None:
    """Missing, blank, parent-directory, absolute, NUL, over-long parts and separators in a bucket are refused."""
    assert address_problem(bucket, location)


@pytest.mark.parametrize(("bucket", "location"), ACCEPTED, ids=lambda v: repr(v)[:24])
def test_ordinary_addresses_are_accepted(bucket: str, location: str) -> None:
    """Unicode, spaces, folders in a location and '..' inside a word are ordinary names."""
    assert address_problem(bucket, location) is None


def test_the_length_limit_counts_utf8_bytes_not_characters() -> None:
    """A part of 342 three-byte characters (1026 bytes) is too long although it has few characters."""
    # Given
    location = "語" * 342
    # Expect
    assert len(location) < MAX_PART_BYTES < len(location.encode())
    assert "1024 bytes" in str(address_problem("kb", location))


def test_the_problem_says_which_part_is_wrong() -> None:
    """The reason names the bucket or the location, so a log line points at the culprit."""
    assert "location" in str(address_problem("kb", "../x"))
    assert "bucket" in str(address_problem("..", "x"))
