"""Where RAGFlow's S3-compatible connectors put a file: one layout per connector.

Each connector (`rag/utils/minio_conn.py`, `s3_conn.py`, `oss_conn.py` in RAGFlow) wraps its
`get(bucket, fnm)` in two decorators: `use_default_bucket` swaps the bucket for the configured
one, `use_prefix_path` prepends the configured prefix to the key. The connectors apply them
in different orders, and differ in what the prefix carries, so the same settings place the
same file differently:

| connector | neither          | default bucket only  | prefix only               | both                         |
|-----------|------------------|----------------------|---------------------------|------------------------------|
| minio     | (bucket, fnm)    | (default, bucket/fnm)| (bucket, prefix/fnm)      | (default, prefix/bucket/fnm) |
| aws_s3    | (bucket, fnm)    | (default, fnm)       | (bucket, prefix/bucket/fnm)| (default, prefix/bucket/fnm)|
| oss       | (bucket, fnm)    | (default, fnm)       | (bucket, prefix/fnm)      | (default, prefix/fnm)        |

MinIO's default-bucket decorator hands the original bucket on to the prefix decorator, which
keeps it in the key; AWS S3's prefix decorator runs first, on the original bucket; OSS's
prefix never carries the bucket. Where the bucket is dropped, two knowledge bases may share
a key: that is RAGFlow's layout, and the cache reads what RAGFlow would read. The prefix is
joined as written, as RAGFlow's f-strings do: `ragflow/` makes keys `ragflow//kb/...`.

Read from infiniflow/ragflow, where each connector class defines its own two decorators:
- `rag/utils/s3_conn.py` at 57cc0aae5f1b35b4f4e70edca0f61199acb2b46b, the newest version there
  is: `get` and `put` are `@use_prefix_path` above `@use_default_bucket`, and `remove_bucket` (with
  `test/unit_test/rag/utils/test_s3_remove_bucket.py` at the same commit) states that with a
  default bucket and no prefix_path the keys carry no bucket. An intermediate version,
  010f3960dcf1a175da61988bb940ebe0be5f7805, had MinIO's order; the older
  3b6f8e0266df83d09de6b1bf963e3aff56ff9a9e and the newest agree on the table above.
- `rag/utils/minio_conn.py` at 010f3960dcf1a175da61988bb940ebe0be5f7805: `@use_default_bucket`
  above `@use_prefix_path`, the original bucket passed on as `_orig_bucket`.
- `rag/utils/oss_conn.py` at 02d10f8edae0bb70c92516d087070e24d456d3c9 and
  d148d3287aa90db35d6fc9bbae0289f4b5efc809: `@use_prefix_path` above `@use_default_bucket`, the
  prefix alone in front of the key.
"""

from __future__ import annotations

from typing import NamedTuple


class S3Layout(NamedTuple):
    connector: str = "minio"  # minio, aws_s3 or oss
    bucket: str | None = None  # the connector's default bucket, if any
    prefix: str = ""  # its prefix_path, if any

    def address(self, bucket: str, location: str) -> tuple[str, str]:
        """The physical (bucket, key) where the connector keeps the file `(bucket, location)`."""
        real = self.bucket or bucket
        if self.connector == "minio":
            keep = bucket if self.bucket else ""  # the logical bucket becomes a folder of the default one
            return real, _join(self.prefix, keep, location)
        if self.connector == "aws_s3":
            return real, _join(self.prefix, bucket, location) if self.prefix else location
        return real, _join(self.prefix, location)

    def describe(self) -> str:
        parts = [f"{self.connector} layout"]
        if self.bucket:
            parts.append(f"bucket {self.bucket}")
        if self.prefix:
            parts.append(f"prefix {self.prefix}")
        return ", ".join(parts)


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)
