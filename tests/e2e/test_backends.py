"""Every storage RAGFlow runs on, end to end: a file placed the way RAGFlow's connector places it is cached.

One service (worker and beat) per backend and layout; each writes the file with the storage's
own client at the literal place RAGFlow's connector uses, makes its document ongoing, and
checks the cached bytes and TTL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from azure.storage.blob import ContainerClient
from google.cloud import storage as gcs_storage

from cachetasks.cache import Cache
from cachetasks.ops.demo import LinkedFile, insert_document
from testbed.processes import Processes
from testbed.servers import wait_until
from testbed.storage_servers import AzuriteServer
from tests.adapters.test_storage import RAGFLOW_OPENDAL_TABLE, _mysql_args
from tests.conftest import AWS, GCS_BUCKET
from tests.support.e2e import start_service
from tests.unit.test_encryption import ragflow_encrypt

Start = Callable[[dict[str, str]], Processes]
Place = Callable[[str, str, bytes], None]
LOCATION = "reports/Q3 résumé.pdf"


def _s3_oss(request: pytest.FixtureRequest) -> tuple[dict[str, str], Place]:
    """OSS with a default bucket and a prefix: (default, prefix/location), the knowledge base dropped."""
    s3: Any = request.getfixturevalue("s3")
    s3.create_bucket(Bucket="oss-default")
    settings = {
        **AWS,
        "CACHETASKS_STORAGE": "s3",
        "CACHETASKS_S3_ENDPOINT_URL": request.getfixturevalue("s3_server").url,
    }
    settings |= {"CACHETASKS_S3_LAYOUT": "oss", "CACHETASKS_S3_BUCKET": "oss-default", "CACHETASKS_S3_PREFIX": "p1"}
    return settings, lambda kb, loc, data: s3.put_object(Bucket="oss-default", Key=f"p1/{loc}", Body=data)


def _s3_aws(request: pytest.FixtureRequest) -> tuple[dict[str, str], Place]:
    """AWS S3 with a prefix and no default bucket: (kb, prefix/kb/location)."""
    s3: Any = request.getfixturevalue("s3")
    settings = {
        **AWS,
        "CACHETASKS_STORAGE": "s3",
        "CACHETASKS_S3_ENDPOINT_URL": request.getfixturevalue("s3_server").url,
    }
    settings |= {"CACHETASKS_S3_LAYOUT": "aws_s3", "CACHETASKS_S3_PREFIX": "ragflow"}

    def place(kb: str, loc: str, data: bytes) -> None:
        s3.create_bucket(Bucket=kb)
        s3.put_object(Bucket=kb, Key=f"ragflow/{kb}/{loc}", Body=data)

    return settings, place


def _azure_sas(request: pytest.FixtureRequest) -> tuple[dict[str, str], Place]:
    """Azure Blob: blob `{kb}/{location}` in the one container the SAS token signs."""
    azurite: AzuriteServer = request.getfixturevalue("azurite")
    container = "c" + uuid.uuid4().hex[:12]
    url, sas = azurite.create_container(container), azurite.container_sas(container)
    client = ContainerClient.from_container_url(f"{url}?{sas}")
    settings = {"CACHETASKS_STORAGE": "azure_sas", "CACHETASKS_AZURE_CONTAINER_URL": url}
    settings["CACHETASKS_AZURE_SAS_TOKEN"] = sas
    return settings, lambda kb, loc, data: client.upload_blob(name=f"{kb}/{loc}", data=data)


def _gcs(request: pytest.FixtureRequest) -> tuple[dict[str, str], Place]:
    """Google Cloud Storage: object `{kb}/{location}` in RAGFlow's one bucket."""
    request.getfixturevalue("gcs_emulator")
    bucket = gcs_storage.Client().bucket(GCS_BUCKET)
    settings = {"CACHETASKS_STORAGE": "gcs", "CACHETASKS_GCS_BUCKET": GCS_BUCKET}
    return settings, lambda kb, loc, data: bucket.blob(f"{kb}/{loc}").upload_from_string(data)


def _opendal_mysql(request: pytest.FixtureRequest) -> tuple[dict[str, str], Place]:
    """OpenDAL's mysql scheme, RAGFlow's default: the row `{kb}/{location}` of its table."""
    url: str = request.getfixturevalue("mariadb_url")
    table = "opendal_" + uuid.uuid4().hex[:12]
    with pymysql.connect(**_mysql_args(url)) as conn, conn.cursor() as cursor:
        cursor.execute(RAGFLOW_OPENDAL_TABLE.format(table))
    settings = {"CACHETASKS_STORAGE": "opendal", "CACHETASKS_OPENDAL_SCHEME": "mysql"}
    settings["CACHETASKS_OPENDAL_OPTIONS"] = json.dumps({"connection_string": url, "table": table})

    def place(kb: str, loc: str, data: bytes) -> None:
        with pymysql.connect(**_mysql_args(url), autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute(f"INSERT INTO `{table}` (`key`, `value`) VALUES (%s, %s)", (f"{kb}/{loc}", data))

    return settings, place


def _encrypted_local(request: pytest.FixtureRequest) -> tuple[dict[str, str], Place]:
    """RAGFlow's encryption at rest (SM4) over a local folder: the cache holds the decrypted bytes."""
    env: dict[str, str] = request.getfixturevalue("env")
    settings = {"RAGFLOW_CRYPTO_ENABLED": "true", "RAGFLOW_CRYPTO_ALGORITHM": "sm4-cbc", "RAGFLOW_CRYPTO_KEY": "k1"}

    def place(kb: str, loc: str, data: bytes) -> None:
        path = Path(env["CACHETASKS_DATA_DIR"]) / "storage" / kb / loc
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ragflow_encrypt(data, "k1", "sm4-cbc", uuid.uuid4().bytes))

    return settings, place


BACKENDS = {
    "s3-oss-default-bucket-and-prefix": _s3_oss,
    "s3-aws-prefix": _s3_aws,
    "azure-sas": _azure_sas,
    "gcs": _gcs,
    "opendal-mysql": _opendal_mysql,
    "encrypted-sm4-local": _encrypted_local,
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_stored_as_ragflow_stores_it_is_cached_with_exact_bytes_and_ttl(
    backend: str,
    request: pytest.FixtureRequest,
    env: dict[str, str],
    sqlite_engine: sa.Engine,
    cache: Cache,
    processes: Start,
) -> None:
    """Within 5 s of its document becoming ongoing, the file is in Redis, byte for byte, with a TTL of about 720 s."""
    # Given a running service on this storage, and a file where RAGFlow's connector keeps it
    settings, place = BACKENDS[backend](request)
    start_service(processes({**env, **settings}), cache.client)
    kb = "kb" + uuid.uuid4().hex[:16]
    data = bytes(range(256)) * 300 + b"\x00\xff" + backend.encode()
    place(kb, LOCATION, data)
    # When its document becomes ongoing
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id=kb, location=LOCATION, file=LinkedFile("f" + kb, "ignored", "knowledgebase"))
    # Expect
    key = f"{kb}/{LOCATION}"
    wait_until(lambda: cache.client.exists(key), timeout=5, what=key)
    assert cache.client.get(key) == data
    assert abs(cache.client.ttl(key) - 720) <= 2
