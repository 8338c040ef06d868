"""RAGFlow's S3-compatible layouts against an S3 server: a file RAGFlow's connector stored is found.

Each case is written out from the connector's decorators (`rag/utils/minio_conn.py`, `s3_conn.py`,
`oss_conn.py` in RAGFlow): the object is put at that literal place with a plain client, and the
service must read it from there, and `put` must write there.
"""

from __future__ import annotations

from typing import Any

import pytest

from cachetasks.storage.layouts import S3Layout
from cachetasks.storage.s3 import S3Storage

DEFAULT, PREFIX, KB, LOCATION = "ragflow-default", "tenant/one", "kb1", "dir/doc 1.pdf"

# (connector, default bucket, prefix) -> (bucket, key) where RAGFlow's connector stores (KB, LOCATION)
CASES: dict[tuple[str, str | None, str], tuple[str, str]] = {
    ("minio", None, ""): (KB, LOCATION),
    ("minio", DEFAULT, ""): (DEFAULT, f"{KB}/{LOCATION}"),
    ("minio", None, PREFIX): (KB, f"{PREFIX}/{LOCATION}"),
    ("minio", DEFAULT, PREFIX): (DEFAULT, f"{PREFIX}/{KB}/{LOCATION}"),
    ("aws_s3", None, ""): (KB, LOCATION),
    ("aws_s3", DEFAULT, ""): (DEFAULT, LOCATION),
    ("aws_s3", None, PREFIX): (KB, f"{PREFIX}/{KB}/{LOCATION}"),
    ("aws_s3", DEFAULT, PREFIX): (DEFAULT, f"{PREFIX}/{KB}/{LOCATION}"),
    ("oss", None, ""): (KB, LOCATION),
    ("oss", DEFAULT, ""): (DEFAULT, LOCATION),
    ("oss", None, PREFIX): (KB, f"{PREFIX}/{LOCATION}"),
    ("oss", DEFAULT, PREFIX): (DEFAULT, f"{PREFIX}/{LOCATION}"),
    # A prefix is joined as written: a trailing slash doubles in the key, as in RAGFlow's f-strings.
    ("aws_s3", DEFAULT, f"{PREFIX}/"): (DEFAULT, f"{PREFIX}//{KB}/{LOCATION}"),
}
IDS = [f"{c}-{'default' if d else 'no default'}-{'prefix ' + p if p else 'no prefix'}" for c, d, p in CASES]


@pytest.mark.parametrize(("layout", "where"), CASES.items(), ids=IDS)
def test_the_service_reads_a_file_where_ragflows_connector_stored_it(
    s3: Any, layout: tuple[str, str | None, str], where: tuple[str, str]
) -> None:
    """The object at the connector's (bucket, key) is what `open(kb, location)` streams."""
    # Given the file where RAGFlow put it, and a decoy at the place another layout would use
    bucket, key = where
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=b"the real file")
    if key != LOCATION:
        s3.put_object(Bucket=bucket, Key=LOCATION, Body=b"decoy")
    storage = S3Storage(s3, layout=S3Layout(*layout))
    # When
    with storage.open(KB, LOCATION, chunk_size=1000) as blob:
        data = b"".join(blob.chunks)
    # Expect
    assert data == b"the real file"


@pytest.mark.parametrize(("layout", "where"), CASES.items(), ids=IDS)
def test_put_writes_where_ragflows_connector_would(
    s3: Any, layout: tuple[str, str | None, str], where: tuple[str, str]
) -> None:
    """The demo, tests and benchmarks place a file exactly where RAGFlow would, and nowhere else."""
    # When
    S3Storage(s3, layout=S3Layout(*layout)).put(KB, LOCATION, b"placed")
    # Expect
    stored = {(b["Name"], o["Key"]) for b in s3.list_buckets()["Buckets"] for o in _objects(s3, b["Name"])}
    assert stored == {where}


def _objects(s3: Any, bucket: str) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return contents
