"""S3-compatible object storage through boto3 (MinIO, AWS S3, ...).

Bucket-per-pair layout by default (RAGFlow's MinIO layout: bucket = kb_id or folder id,
object key = location). With a fixed bucket, objects sit at `[prefix/]{bucket}/{location}`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions as bce
import urllib3.exceptions

from ..errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable, first_line
from ..ref import FileRef
from .base import Blob, check_address

if TYPE_CHECKING:
    from ..settings import Settings

MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
FORBIDDEN_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
INVALID_CODES = {"InvalidBucketName", "KeyTooLongError", "InvalidArgument", "InvalidObjectName"}
_STREAM_ERRORS = (bce.BotoCoreError, urllib3.exceptions.HTTPError, OSError)


def make_client(settings: Settings) -> Any:
    """One client per process: boto3 clients are thread-safe, sessions are not fork-safe."""
    config = botocore.config.Config(
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=settings.concurrency + 4,
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
    )
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region or "us-east-1", config=config
    )


class S3Storage:
    def __init__(self, client: Any, *, bucket: str | None = None, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._made: set[str] = set()  # buckets `put` created or found

    def address(self, bucket: str, location: str) -> tuple[str, str]:
        """The real (bucket, object key) of a file."""
        if self.bucket is None:
            return bucket, location
        return self.bucket, "/".join(p for p in (self.prefix, bucket, location) if p)

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        ref = check_address(bucket, location)
        real_bucket, key = self.address(bucket, location)
        try:
            response = self.client.get_object(Bucket=real_bucket, Key=key)
        except bce.ClientError as exc:
            raise _translate(exc, ref) from None
        except bce.ParamValidationError as exc:
            raise InvalidAddress(f"rejected by S3: {first_line(exc)}", ref) from None
        except _STREAM_ERRORS as exc:
            raise StorageUnavailable(f"{type(exc).__name__}: {first_line(exc)}", ref) from None
        body = response["Body"]

        def chunks() -> Iterator[bytes]:
            # Not botocore's iter_chunks, which holds each chunk while it reads the next.
            while True:
                try:
                    block = body.read(chunk_size)
                except _STREAM_ERRORS as exc:
                    raise StorageUnavailable(f"read failed: {type(exc).__name__}", ref) from None
                if not block:
                    return
                yield block
                del block

        size = int(response.get("ContentLength") or 0)
        return Blob(size, chunks(), body.close, version=str(response.get("ETag") or "").strip('"'))

    def put(self, bucket: str, location: str, data: bytes) -> None:
        check_address(bucket, location)
        real_bucket, key = self.address(bucket, location)
        if real_bucket not in self._made:
            with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
                self.client.create_bucket(Bucket=real_bucket)
            self._made.add(real_bucket)
        self.client.put_object(Bucket=real_bucket, Key=key, Body=data)

    def check(self) -> str:
        try:
            if self.bucket is not None:
                self.client.head_bucket(Bucket=self.bucket)
            else:
                self.client.list_buckets()
        except bce.ClientError as exc:
            error = _translate(exc)
            if isinstance(error, FileMissing):
                raise FileMissing(f"bucket {self.bucket} does not exist ({error.reason})") from None
            raise error from None
        except _STREAM_ERRORS as exc:
            raise StorageUnavailable(f"{type(exc).__name__}: {first_line(exc)}") from None
        where = self.client.meta.endpoint_url
        return f"S3 at {where}" + (f", bucket {self.bucket}" if self.bucket else "")

    def close(self) -> None:
        self.client.close()


def _translate(exc: bce.ClientError, ref: FileRef | None = None) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in MISSING_CODES or status == 404:
        return FileMissing(code or "not found", ref)
    if code in FORBIDDEN_CODES or status == 403:
        return FileForbidden(code or "403 Forbidden", ref)
    if code in INVALID_CODES:
        return InvalidAddress(f"rejected by S3: {code}", ref)
    return StorageUnavailable(f"S3 error {code or status}", ref)
