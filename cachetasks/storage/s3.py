"""S3-compatible object storage through boto3 (MinIO, AWS S3, Aliyun OSS, ...).

Files are where RAGFlow's connector for that storage puts them (`layouts.py`): by default
MinIO's, bucket = kb_id or folder id and object key = location, or with a fixed bucket
`[prefix/]{bucket}/{location}`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, cast

import boto3
import botocore.config
import botocore.exceptions as bce
import urllib3.exceptions

from ..errors import FileForbidden, FileMissing, InvalidAddress, StorageError, StorageUnavailable, first_line
from ..ref import FileRef
from .base import Blob, check_address
from .layouts import S3Layout

if TYPE_CHECKING:
    from ..settings import Settings

AddressingStyle = Literal["auto", "virtual", "path"]
MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
FORBIDDEN_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
INVALID_CODES = {"InvalidBucketName", "KeyTooLongError", "InvalidArgument", "InvalidObjectName"}
_STREAM_ERRORS = (bce.BotoCoreError, urllib3.exceptions.HTTPError, OSError)


def make_client(settings: Settings) -> Any:
    """One client per process: boto3 clients are thread-safe, sessions are not fork-safe."""
    style = cast(AddressingStyle | None, settings.s3_addressing_style or ("path" if settings.s3_endpoint_url else None))
    config = botocore.config.Config(
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=settings.concurrency + 4,
        s3={"addressing_style": style} if style else None,
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region or "us-east-1",
        config=config,
        verify=settings.s3_verify,
        # Keys given in the settings (RAGFlow's, or the AWS_* variables); None: boto3 finds its own.
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        aws_session_token=settings.s3_session_token,
    )


def layout_of(settings: Settings) -> S3Layout:
    return S3Layout(settings.s3_layout, settings.s3_bucket, settings.s3_prefix)


class S3Storage:
    def __init__(
        self, client: Any, *, bucket: str | None = None, prefix: str = "", layout: S3Layout | None = None
    ) -> None:
        self.client = client
        self.layout = layout or S3Layout("minio", bucket, prefix)
        self.bucket = self.layout.bucket
        self._made: set[str] = set()  # buckets `put` created or found

    def address(self, bucket: str, location: str) -> tuple[str, str]:
        """The real (bucket, object key) of a file."""
        return self.layout.address(bucket, location)

    def _request(self, call: Callable[..., dict[str, Any]], bucket: str, location: str) -> tuple[FileRef, Any]:
        """`call` (get_object, head_object) on the object of (bucket, location), its errors the project's."""
        ref = check_address(bucket, location)
        real_bucket, key = self.address(bucket, location)
        try:
            return ref, call(Bucket=real_bucket, Key=key)
        except bce.ClientError as exc:
            raise _translate(exc, ref) from None
        except bce.ParamValidationError as exc:
            raise InvalidAddress(f"rejected by S3: {first_line(exc)}", ref) from None
        except _STREAM_ERRORS as exc:
            raise StorageUnavailable(f"{type(exc).__name__}: {first_line(exc)}", ref) from None

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        ref, response = self._request(self.client.get_object, bucket, location)
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

        return Blob(int(response.get("ContentLength") or 0), chunks(), body.close, version=_etag(response))

    def stat(self, bucket: str, location: str) -> str:
        return _etag(self._request(self.client.head_object, bucket, location)[1])

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
        return f"S3 at {self.client.meta.endpoint_url}, {self.layout.describe()}"

    def close(self) -> None:
        self.client.close()


def _etag(response: dict[str, Any]) -> str:
    return str(response.get("ETag") or "").strip('"')


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
