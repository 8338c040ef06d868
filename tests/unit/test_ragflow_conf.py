"""RAGFlow's service_conf.yaml as the service's defaults: read like RAGFlow reads it, overridden by CACHETASKS_*."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cachetasks.errors import ConfigError
from cachetasks.ragflow_conf import substitute
from cachetasks.settings import Settings

# Sections of RAGFlow's docker/service_conf.yaml.template, with the storage sections it comments out.
TEMPLATE = """\
mysql:
  name: '${MYSQL_DBNAME:-rag_flow}'
  user: '${MYSQL_USER:-root}'
  password: '${MYSQL_PASSWORD:-infini_rag_flow}'
  host: '${MYSQL_HOST:-mysql}'
  port: 3306
  max_allowed_packet: ${MYSQL_MAX_PACKET:-1073741824}
minio:
  user: '${MINIO_USER:-rag_flow}'
  password: '${MINIO_PASSWORD:-infini_rag_flow}'
  host: '${MINIO_HOST:-minio}:9000'
redis:
  db: 1
  password: '${REDIS_PASSWORD:-infini_rag_flow}'
  host: '${REDIS_HOST:-redis}:6379'
postgres:
  name: '${POSTGRES_DBNAME:-rag_flow}'
  user: '${POSTGRES_USER:-rag_flow}'
  password: '${POSTGRES_PASSWORD:-infini_rag_flow}'
  host: '${POSTGRES_HOST:-postgres}'
  port: 5432
s3:
  access_key: 'AKIAEXAMPLE'
  secret_key: 's3-secret'
  region: 'eu-west-1'
  bucket: 'ragflow-bucket'
  prefix_path: 'tenant'
oss:
  access_key: '${ACCESS_KEY}'
  secret_key: '${SECRET_KEY}'
  endpoint_url: '${ENDPOINT}'
  region: '${REGION}'
  bucket: '${BUCKET}'
  prefix_path: '${OSS_PREFIX_PATH}'
azure:
  auth_type: 'sas'
  container_url: 'https://acct.blob.core.windows.net/ragflow'
  sas_token: 'sv=2024&sig=abc'
  account_url: 'https://acct.dfs.core.windows.net'
  client_id: 'client'
  secret: 'spn-secret'
  tenant_id: 'tenant'
  container_name: 'ragflow-fs'
gcs:
  bucket: 'ragflow-gcs'
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "service_conf.yaml"
    path.write_text(TEMPLATE)
    return path


def from_ragflow(conf: Path, **env: str) -> Settings:
    return Settings.from_env({"CACHETASKS_RAGFLOW_CONF": str(conf), **env})


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:-x}", {"A": "set"}, "set"),
        ("${A}", {}, ""),
        ("'${H:-minio}:9000'", {"H": "store"}, "'store:9000'"),
        ("no reference", {"A": "b"}, "no reference"),
    ],
)
def test_references_are_resolved_as_the_shell_does(text: str, env: dict[str, str], expected: str) -> None:
    """`${VAR:-default}` takes the default when VAR is unset or empty, `${VAR-default}` only when unset."""
    assert substitute(text, env) == expected


def test_ragflows_defaults_give_database_redis_and_minio(conf: Path) -> None:
    """With nothing else set: RAGFlow's MySQL, its Redis database 1 for the cache, and its MinIO with its keys."""
    # When
    settings = from_ragflow(conf)
    # Expect
    assert settings.database_url == "mysql+pymysql://root:infini_rag_flow@mysql:3306/rag_flow"
    assert settings.redis_url == "redis://:infini_rag_flow@redis:6379/1"
    assert settings.broker_url == "redis://:infini_rag_flow@redis:6379/0"
    assert (settings.storage, settings.s3_layout, settings.s3_endpoint_url) == ("s3", "minio", "http://minio:9000")
    assert (settings.s3_access_key_id, settings.s3_secret_access_key) == ("rag_flow", "infini_rag_flow")


def test_ragflows_environment_fills_the_template(conf: Path) -> None:
    """The variables RAGFlow runs with reach the values, quoted where a URL needs it."""
    settings = from_ragflow(conf, MYSQL_HOST="db.internal", MYSQL_PASSWORD="p@ss/word", REDIS_HOST="cache")
    assert settings.database_url == "mysql+pymysql://root:p%40ss%2Fword@db.internal:3306/rag_flow"
    assert settings.redis_url.startswith("redis://:infini_rag_flow@cache:6379/")


def test_postgres_is_read_with_db_type_postgres(conf: Path) -> None:
    """DB_TYPE=postgres reads the postgres: section, as RAGFlow does."""
    settings = from_ragflow(conf, DB_TYPE="postgres")
    assert settings.database_url == "postgresql+psycopg2://rag_flow:infini_rag_flow@postgres:5432/rag_flow"


def test_explicit_variables_win_over_ragflows_file(conf: Path) -> None:
    """A CACHETASKS_* variable set in the environment replaces the value RAGFlow's file gives."""
    settings = from_ragflow(conf, CACHETASKS_REDIS_URL="redis://elsewhere:6379/5", CELERY_BROKER_URL="redis://b/0")
    assert (settings.redis_url, settings.broker_url) == ("redis://elsewhere:6379/5", "redis://b/0")
    origins = {s.variable: s.origin for s in settings.sources}
    assert origins["CACHETASKS_REDIS_URL"] == "environment"
    assert origins["CACHETASKS_DATABASE_URL"].startswith("RAGFlow mysql.")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STORAGE_IMPL": "AWS_S3"}, ("s3", "aws_s3", "ragflow-bucket", "tenant", "eu-west-1", "AKIAEXAMPLE")),
        (
            {"STORAGE_IMPL": "OSS", "ACCESS_KEY": "ak", "SECRET_KEY": "sk", "ENDPOINT": "https://oss.example"}
            | {"REGION": "cn-hangzhou", "BUCKET": "b1", "OSS_PREFIX_PATH": "p"},
            ("s3", "oss", "b1", "p", "cn-hangzhou", "ak"),
        ),
    ],
    ids=["AWS_S3", "OSS"],
)
def test_s3_compatible_connectors_keep_their_layout(conf: Path, env: dict[str, str], expected: tuple[str, ...]) -> None:
    """STORAGE_IMPL names the connector, whose section gives bucket, prefix, region and keys."""
    s = from_ragflow(conf, **env)
    assert (s.storage, s.s3_layout, s.s3_bucket, s.s3_prefix, s.s3_region, s.s3_access_key_id) == expected


def test_azure_sas_takes_its_environment_first(conf: Path) -> None:
    """RAGFlow's CONTAINER_URL and SAS_TOKEN override its azure: section, as in its connector."""
    s = from_ragflow(conf, STORAGE_IMPL="AZURE_SAS", SAS_TOKEN="sv=2025&sig=xyz")
    assert (s.storage, s.azure_container_url) == ("azure_sas", "https://acct.blob.core.windows.net/ragflow")
    assert s.azure_sas_token == "sv=2025&sig=xyz"


def test_azure_spn_gcs_and_opendal_are_read_from_their_sections(conf: Path) -> None:
    """Each other STORAGE_IMPL gets its backend and settings, OpenDAL's mysql scheme RAGFlow's database."""
    spn = from_ragflow(conf, STORAGE_IMPL="AZURE_SPN")
    assert (spn.storage, spn.azure_tenant_id, spn.azure_client_secret) == ("azure_spn", "tenant", "spn-secret")
    assert spn.azure_container_name == "ragflow-fs"
    assert (from_ragflow(conf, STORAGE_IMPL="GCS").gcs_bucket) == "ragflow-gcs"
    dal = from_ragflow(conf, STORAGE_IMPL="OPENDAL")
    options = dict(dal.opendal_options)
    assert (dal.storage, dal.opendal_scheme, options["table"]) == ("opendal", "mysql", "opendal_storage")
    assert (
        options["connection_string"] == "mysql://root:infini_rag_flow@mysql:3306/rag_flow?max_allowed_packet=1073741824"
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"STORAGE_IMPL": "FTP"}, "STORAGE_IMPL"), ({"DB_TYPE": "oracle"}, "DB_TYPE")],
)
def test_a_value_ragflow_would_refuse_stops_at_start(conf: Path, env: dict[str, str], variable: str) -> None:
    """An unknown STORAGE_IMPL or DB_TYPE is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=variable):
        from_ragflow(conf, **env)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A CACHETASKS_RAGFLOW_CONF that cannot be read stops the process with one line."""
    with pytest.raises(ConfigError, match="CACHETASKS_RAGFLOW_CONF"):
        from_ragflow(tmp_path / "nowhere.yaml")


def test_sources_never_show_a_secret(conf: Path) -> None:
    """`check` shows where values came from: passwords, keys and tokens masked."""
    shown = json.dumps([s.shown for s in from_ragflow(conf, STORAGE_IMPL="AZURE_SAS").sources])
    for secret in ("infini_rag_flow", "sig=abc"):
        assert secret not in shown
    assert "redis://:***@redis:6379/1" in shown


@pytest.mark.parametrize(("raw", "enabled"), [("true", True), ("TRUE", True), ("1", False), ("yes", False)])
def test_encryption_is_on_only_for_true_as_in_ragflow(raw: str, enabled: bool) -> None:
    """RAGFlow compares RAGFLOW_CRYPTO_ENABLED with "true", ignoring case: "1" and "yes" leave it off."""
    settings = Settings.from_env({"RAGFLOW_CRYPTO_ENABLED": raw, "RAGFLOW_CRYPTO_KEY": "k"})
    assert settings.decrypts is enabled


@pytest.mark.parametrize(
    "env",
    [
        {"RAGFLOW_CRYPTO_ENABLED": "true"},
        {"RAGFLOW_CRYPTO_ENABLED": "true", "RAGFLOW_CRYPTO_KEY": "k"} | {"RAGFLOW_CRYPTO_ALGORITHM": "des"},
    ],
    ids=["no key", "unknown algorithm"],
)
def test_encryption_ragflow_could_not_set_up_leaves_files_as_they_are(env: dict[str, str]) -> None:
    """Without a key or with an unknown algorithm RAGFlow logs an error and stores files unencrypted: so do we read."""
    assert Settings.from_env(env).decrypts is False
