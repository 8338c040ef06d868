"""Settings.from_env: defaults, one parser per variable, and a ConfigError naming the variable for nonsense."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from cachetasks.environment import masked_url
from cachetasks.errors import ConfigError
from cachetasks.settings import EXTRAS, MiB, Settings

# The smallest RAGFlow configuration: its database (test_ragflow_conf.py reads a whole one).
RAGFLOW_CONF = Path(__file__).with_name("service_conf.yaml")
S3_OK = {"CACHETASKS_STORAGE": "s3", "CACHETASKS_S3_REGION": "us-east-1"}

# (variable, raw value, attribute, parsed value, other variables the value needs)
PARSED: list[tuple[str, str, str, object, dict[str, str]]] = [
    ("CELERY_BROKER_URL", "rediss://broker:6380/2", "broker_url", "rediss://broker:6380/2", {}),
    ("CACHETASKS_REDIS_URL", "unix:///run/redis.sock?db=3", "redis_url", "unix:///run/redis.sock?db=3", {}),
    ("CACHETASKS_DATA_DIR", "/srv/cachetasks", "data_dir", Path("/srv/cachetasks"), {}),
    ("CACHETASKS_DATABASE_URL", "postgresql://rag@db/rag", "database_url", "postgresql://rag@db/rag", {}),
    ("CACHETASKS_STORAGE", " S3 ", "storage", "s3", {"CACHETASKS_S3_REGION": "eu-west-1"}),
    ("CACHETASKS_LOCAL_ROOT", "/mnt/files", "local_root", Path("/mnt/files"), {}),
    ("CACHETASKS_S3_ENDPOINT_URL", "http://minio:9000", "s3_endpoint_url", "http://minio:9000", {}),
    ("CACHETASKS_S3_BUCKET", "ragflow", "s3_bucket", "ragflow", {}),
    ("CACHETASKS_S3_PREFIX", "tenant/a/", "s3_prefix", "tenant/a/", {}),
    ("CACHETASKS_S3_REGION", "eu-west-1", "s3_region", "eu-west-1", {"AWS_DEFAULT_REGION": "us-west-2"}),
    ("AWS_DEFAULT_REGION", "us-west-2", "s3_region", "us-west-2", {}),
    ("CACHETASKS_S3_CONNECT_TIMEOUT", "0.5", "s3_connect_timeout", 0.5, {}),
    ("CACHETASKS_S3_READ_TIMEOUT", "12", "s3_read_timeout", 12.0, {}),
    ("CACHETASKS_TTL", " 60 ", "ttl", 60, {}),
    ("CACHETASKS_COLLECT_INTERVAL", "2.5", "collect_interval", 2.5, {}),
    ("CACHETASKS_RECONCILE_INTERVAL", "30", "reconcile_interval", 30.0, {}),
    ("CACHETASKS_RECONCILE_INTERVAL", "0", "reconcile_interval", 0.0, {}),
    ("CACHETASKS_ONGOING_WINDOW", "1200", "ongoing_window", 1200, {}),
    ("CACHETASKS_ONGOING_SQL", "SELECT b, l FROM t", "ongoing_sql", "SELECT b, l FROM t", {}),
    ("CACHETASKS_MAX_FILE_BYTES", str(512 * MiB), "max_file_bytes", 512 * MiB, {}),
    ("CACHETASKS_CHUNK_BYTES", "65536", "chunk_bytes", 65536, {}),
    ("CACHETASKS_INFLIGHT_TTL", "45", "inflight_ttl", 45, {}),
    ("CACHETASKS_NEGATIVE_TTL", "300", "negative_ttl", 300, {}),
    ("CACHETASKS_DB_CONNECT_TIMEOUT", "3", "db_connect_timeout", 3.0, {}),
    ("CACHETASKS_REDIS_TIMEOUT", "0.25", "redis_timeout", 0.25, {}),
    ("CACHETASKS_CONCURRENCY", "64", "concurrency", 64, {}),
    ("CACHETASKS_MAX_RETRIES", "0", "max_retries", 0, {}),
    ("CACHETASKS_MAX_CACHE_BYTES", str(100 * MiB), "max_cache_bytes", 100 * MiB, {}),
    ("CACHETASKS_EVICT_ON_DONE", "yes", "evict_on_done", True, {}),
    ("CACHETASKS_METRICS_PORT", "9808", "metrics_port", 9808, {}),
    ("CACHETASKS_METRICS_HOST", "0.0.0.0", "metrics_host", "0.0.0.0", {}),
    ("CACHETASKS_RAGFLOW_CONF", str(RAGFLOW_CONF), "ragflow_conf", RAGFLOW_CONF, {}),
    ("CACHETASKS_S3_LAYOUT", "AWS_S3", "s3_layout", "aws_s3", {}),
    ("CACHETASKS_S3_ADDRESSING_STYLE", "virtual", "s3_addressing_style", "virtual", {}),
    ("CACHETASKS_S3_VERIFY", "false", "s3_verify", False, {}),
    ("AWS_ACCESS_KEY_ID", "AKIA1", "s3_access_key_id", "AKIA1", {}),
    ("AWS_SECRET_ACCESS_KEY", "s3cr3t", "s3_secret_access_key", "s3cr3t", {}),
    ("AWS_SESSION_TOKEN", "tok", "s3_session_token", "tok", {}),
    (
        "CACHETASKS_AZURE_CONTAINER_URL",
        "https://a.blob.core.windows.net/c",
        "azure_container_url",
        "https://a.blob.core.windows.net/c",
        {},
    ),
    ("CACHETASKS_AZURE_SAS_TOKEN", "sv=1&sig=2", "azure_sas_token", "sv=1&sig=2", {}),
    (
        "CACHETASKS_AZURE_ACCOUNT_URL",
        "https://a.dfs.core.windows.net",
        "azure_account_url",
        "https://a.dfs.core.windows.net",
        {},
    ),
    ("CACHETASKS_AZURE_TENANT_ID", "t", "azure_tenant_id", "t", {}),
    ("CACHETASKS_AZURE_CLIENT_ID", "c", "azure_client_id", "c", {}),
    ("CACHETASKS_AZURE_CLIENT_SECRET", "s", "azure_client_secret", "s", {}),
    ("CACHETASKS_AZURE_CONTAINER_NAME", "fs", "azure_container_name", "fs", {}),
    ("CACHETASKS_AZURE_CLOUD", "china", "azure_cloud", "china", {}),
    ("CACHETASKS_GCS_BUCKET", "b", "gcs_bucket", "b", {}),
    ("CACHETASKS_OPENDAL_SCHEME", "FS", "opendal_scheme", "fs", {}),
    ("CACHETASKS_OPENDAL_OPTIONS", '{"root": "/x", "n": 1}', "opendal_options", (("n", "1"), ("root", "/x")), {}),
    ("RAGFLOW_CRYPTO_ENABLED", "true", "crypto_enabled", True, {}),
    ("RAGFLOW_CRYPTO_ALGORITHM", "sm4-cbc", "crypto_algorithm", "sm4-cbc", {}),
    ("RAGFLOW_CRYPTO_KEY", "k", "crypto_key", "k", {}),
    ("CACHETASKS_TASK_STREAMS", "te.1.common, te.0,te.1.common", "task_streams", ("te.1.common", "te.0"), {}),
]

# (variable, raw value, other variables)
REFUSED: list[tuple[str, str, dict[str, str]]] = [
    ("CACHETASKS_TTL", "0", {}),
    ("CACHETASKS_TTL", "-5", {}),
    ("CACHETASKS_TTL", "ten", {}),
    ("CACHETASKS_TTL", "1.5", {}),
    ("CACHETASKS_INFLIGHT_TTL", "0", {}),
    ("CACHETASKS_NEGATIVE_TTL", "-1", {}),
    ("CACHETASKS_ONGOING_WINDOW", "0", {}),
    ("CACHETASKS_S3_CONNECT_TIMEOUT", "0", {}),
    ("CACHETASKS_S3_READ_TIMEOUT", "-1", {}),
    ("CACHETASKS_COLLECT_INTERVAL", "soon", {}),
    ("CACHETASKS_COLLECT_INTERVAL", "nan", {}),
    ("CACHETASKS_RECONCILE_INTERVAL", "-1", {}),
    ("CACHETASKS_RECONCILE_INTERVAL", "often", {}),
    ("CACHETASKS_RECONCILE_INTERVAL", "360", {}),  # half of the default TTL: keys would expire first
    ("CACHETASKS_RECONCILE_INTERVAL", "5", {"CACHETASKS_TTL": "10"}),
    ("CACHETASKS_DB_CONNECT_TIMEOUT", "inf", {}),
    ("CACHETASKS_REDIS_TIMEOUT", "-0.5", {}),
    ("CACHETASKS_MAX_FILE_BYTES", str(512 * MiB + 1), {}),
    ("CACHETASKS_CHUNK_BYTES", str(64 * MiB + 1), {}),
    ("CACHETASKS_CHUNK_BYTES", "0", {}),
    ("CACHETASKS_CONCURRENCY", "0", {}),
    ("CACHETASKS_CONCURRENCY", "1025", {}),
    ("CACHETASKS_MAX_RETRIES", "-1", {}),
    ("CACHETASKS_MAX_CACHE_BYTES", "-1", {}),
    ("CACHETASKS_EVICT_ON_DONE", "maybe", {}),
    ("CACHETASKS_METRICS_PORT", "65536", {}),
    ("CACHETASKS_METRICS_PORT", "-1", {}),
    ("CACHETASKS_STORAGE", "ftp", {}),
    ("CACHETASKS_STORAGE", "gcs", {}),  # no bucket
    ("CACHETASKS_STORAGE", "azure_sas", {"CACHETASKS_AZURE_CONTAINER_URL": "https://a/c"}),  # no token
    ("CACHETASKS_STORAGE", "azure_spn", {"CACHETASKS_AZURE_ACCOUNT_URL": "https://a"}),  # no principal
    ("CACHETASKS_STORAGE", "opendal", {}),  # the mysql scheme needs a connection string
    ("CACHETASKS_S3_LAYOUT", "gcs", {}),
    ("CACHETASKS_S3_ADDRESSING_STYLE", "sideways", {}),
    ("CACHETASKS_AZURE_CLOUD", "mars", {}),
    ("CACHETASKS_AZURE_CONTAINER_URL", "blob.core.windows.net/c", {}),
    ("CACHETASKS_OPENDAL_OPTIONS", "root=/x", {}),
    ("CACHETASKS_OPENDAL_OPTIONS", '["root"]', {}),
    ("CACHETASKS_STORAGE", "s3", {}),  # neither an endpoint nor a region
    ("CACHETASKS_REDIS_URL", "redis://cache:port/1", {}),
    ("CACHETASKS_REDIS_URL", "localhost:6379", {}),
    ("CACHETASKS_REDIS_URL", "http://cache:6379/1", {}),
    ("CACHETASKS_REDIS_URL", "redis://[::1/1", {}),
    ("CELERY_BROKER_URL", "amqp://guest@rabbit//", {}),
    ("CACHETASKS_S3_ENDPOINT_URL", "minio:9000", {}),
    ("CACHETASKS_S3_ENDPOINT_URL", "ftp://minio", {}),
    ("CACHETASKS_S3_ENDPOINT_URL", "http://minio:99999", {}),
    ("CACHETASKS_DATABASE_URL", "oracle://scott@db/orcl", {}),
    ("CACHETASKS_DATABASE_URL", "mongodb+srv://db/rag", {}),
    ("CACHETASKS_DATABASE_URL", "rag.sqlite3", {}),
    ("CACHETASKS_TASK_STREAMS", "te.0.common,,te.1.common", {}),
    ("CACHETASKS_TASK_STREAMS", "te.0.common,te\x1b[31m", {}),
    ("CACHETASKS_TASK_STREAMS", "cachetasks:metrics", {}),
]

# URLs holding the password "s3cr3t-pw", each refused for a different reason.
SECRET = "s3cr3t-pw"
REFUSED_WITH_PASSWORD = [
    ("CACHETASKS_REDIS_URL", f"redis://:{SECRET}@cache:port/1"),
    ("CACHETASKS_REDIS_URL", f"http://user:{SECRET}@cache:6379/1"),
    ("CELERY_BROKER_URL", f"amqp://guest:{SECRET}@rabbit//"),
    ("CELERY_BROKER_URL", f"redis:user:{SECRET}@cache"),
    ("CACHETASKS_DATABASE_URL", f"oracle://scott:{SECRET}@db/orcl"),
    ("CACHETASKS_DATABASE_URL", f"postgresql://rag:{SECRET}@db:70000/rag"),
    ("CACHETASKS_S3_ENDPOINT_URL", f"ftp://key:{SECRET}@minio"),
    ("CELERY_BROKER_URL", f"redis://cache:6379/0?password={SECRET}"),  # kombu cannot take it there
]

# Settings holding the password "s3cr3t-pw" in a URL, every way the clients accept one.
SHOWN_WITH_PASSWORD = [
    ("CACHETASKS_REDIS_URL", f"redis://:{SECRET}@cache:6379/1"),
    ("CACHETASKS_REDIS_URL", f"rediss://cache:6380/1?ssl_cert_reqs=required&password={SECRET}"),
    ("CACHETASKS_REDIS_URL", f"unix:///run/redis.sock?db=1&Password={SECRET}"),
    ("CELERY_BROKER_URL", f"redis://user:{SECRET}@cache:6379/0"),
    ("CACHETASKS_DATABASE_URL", f"postgresql://rag:{SECRET}@db:5432/rag"),
    ("CACHETASKS_DATABASE_URL", f"postgresql://rag@db:5432/rag?password={SECRET}&sslmode=require"),
    ("CACHETASKS_DATABASE_URL", f"postgresql://rag@db/rag?sslpassword={SECRET}"),
    ("CACHETASKS_DATABASE_URL", f"mysql://rag@db/rag?password={SECRET}"),
]


def test_an_empty_environment_gives_the_defaults() -> None:
    """With nothing set, every setting is its documented default."""
    # When
    settings = Settings.from_env({})
    # Expect
    assert settings == Settings()
    assert settings.ttl == 720
    assert settings.storage == "local"
    assert settings.redis_url == "redis://127.0.0.1:6379/1"


def test_defaults_derive_the_database_and_storage_folder_from_the_data_dir() -> None:
    """Without a database URL or local root, both live in CACHETASKS_DATA_DIR."""
    # When
    settings = Settings.from_env({"CACHETASKS_DATA_DIR": "/var/lib/ct"})
    # Expect
    assert settings.sqlalchemy_url == "sqlite:////var/lib/ct/cachetasks.sqlite3"
    assert settings.storage_root == Path("/var/lib/ct/storage")


@pytest.mark.parametrize(("name", "raw", "attr", "expected", "extra"), PARSED, ids=[f"{p[0]}={p[1]}" for p in PARSED])
def test_each_variable_is_parsed_into_its_setting(
    name: str, raw: str, attr: str, expected: object, extra: dict[str, str]
) -> None:
    """A variable's value, trimmed and converted, becomes its setting."""
    # When
    settings = Settings.from_env({name: raw, **extra})
    # Expect
    assert getattr(settings, attr) == expected
    assert getattr(settings, attr) != getattr(Settings(), attr)


def test_every_setting_has_a_parsing_case() -> None:
    """A setting added to Settings without a case in PARSED fails here."""
    assert {case[2] for case in PARSED} == {f.name for f in dataclasses.fields(Settings) if f.compare}


@pytest.mark.parametrize("raw", ["1", "true", "Yes", "ON"])
def test_true_booleans_are_read_as_true(raw: str) -> None:
    """The usual spellings of yes turn a switch on."""
    assert Settings.from_env({"CACHETASKS_EVICT_ON_DONE": raw}).evict_on_done is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "OFF"])
def test_false_booleans_are_read_as_false(raw: str) -> None:
    """The usual spellings of no turn a switch off."""
    assert Settings.from_env({"CACHETASKS_EVICT_ON_DONE": raw}).evict_on_done is False


def test_blank_values_fall_back_to_the_defaults() -> None:
    """A variable set to whitespace counts as unset."""
    # When
    settings = Settings.from_env({"CACHETASKS_TTL": "  ", "CACHETASKS_STORAGE": "", "CACHETASKS_REDIS_URL": " "})
    # Expect
    assert settings == Settings()


@pytest.mark.parametrize(("name", "raw", "extra"), REFUSED, ids=[f"{r[0]}={r[1]}" for r in REFUSED])
def test_a_bad_value_raises_config_error_naming_the_variable(name: str, raw: str, extra: dict[str, str]) -> None:
    """Nonsense is refused at start, and the message says which variable to fix."""
    # When
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: raw, **extra})
    # Expect
    assert name in str(caught.value)


@pytest.mark.parametrize("raw", ["none", "None", " NONE "])
def test_task_streams_none_turns_the_listener_off(raw: str) -> None:
    """`CACHETASKS_TASK_STREAMS=none` names no stream; unset means RAGFlow's, found in the cache's Redis."""
    assert Settings.from_env({"CACHETASKS_TASK_STREAMS": raw}).task_streams == ()
    assert Settings.from_env({}).task_streams is None


def test_s3_storage_is_accepted_with_either_an_endpoint_or_a_region() -> None:
    """S3 needs somewhere to go: an S3-compatible endpoint, or an AWS region."""
    assert Settings.from_env({**S3_OK}).s3_region == "us-east-1"
    endpoint = Settings.from_env({"CACHETASKS_STORAGE": "s3", "CACHETASKS_S3_ENDPOINT_URL": "http://minio:9000"})
    assert endpoint.s3_endpoint_url == "http://minio:9000"


@pytest.mark.parametrize(
    ("name", "url"), REFUSED_WITH_PASSWORD, ids=[u.split(":")[0] for _, u in REFUSED_WITH_PASSWORD]
)
def test_a_refused_url_never_echoes_its_password(name: str, url: str) -> None:
    """The error for a bad URL names the variable but never repeats the URL, which may hold a password."""
    # When
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: url})
    # Expect
    assert name in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in "".join(traceback.format_exception(caught.value)), "nor in a chained exception"


@pytest.mark.parametrize(("name", "url"), SHOWN_WITH_PASSWORD, ids=[u for _, u in SHOWN_WITH_PASSWORD])
def test_the_settings_as_celery_shows_them_mask_a_password_in_the_userinfo_or_the_query(name: str, url: str) -> None:
    """The settings' repr (what `celery inspect conf` and Flower show) keeps the URL but masks its password."""
    # Given
    settings = Settings.from_env({name: url})
    # When
    shown = repr(settings)
    # Expect
    assert SECRET not in shown
    assert "***" in shown
    assert url.split("://")[0] + "://" in shown


def test_masking_leaves_a_url_without_a_password_as_it_is() -> None:
    """Other query parameters, escapes included, are shown exactly as given."""
    url = "rediss://cache:6380/1?ssl_cert_reqs=required&ssl_ca_certs=%2Fetc%2Fca.pem&db=1"
    assert masked_url(url) == url
    assert masked_url("postgresql://rag@db/rag?password=&x=1") == "postgresql://rag@db/rag?password=***&x=1"


def test_collect_expires_is_five_intervals_but_never_under_five_seconds() -> None:
    """A queued collect stays worth running for 5 intervals, and at least 5 s."""
    assert Settings.from_env({"CACHETASKS_COLLECT_INTERVAL": "0.2"}).collect_expires == 5.0
    assert Settings.from_env({"CACHETASKS_COLLECT_INTERVAL": "3"}).collect_expires == 15.0


def test_the_reconcile_interval_defaults_to_10_s_and_to_a_quarter_of_a_short_ttl() -> None:
    """Full collects come every 10 s, or often enough that a short TTL is renewed before keys expire."""
    assert Settings.from_env({}).reconcile_interval == 10.0
    assert Settings.from_env({"CACHETASKS_TTL": "20"}).reconcile_interval == 5.0
    assert Settings.from_env({"CACHETASKS_TTL": "20", "CACHETASKS_RECONCILE_INTERVAL": "9.5"}).reconcile_interval == 9.5


def test_a_reconcile_interval_of_0_or_of_the_collect_interval_makes_every_collect_full() -> None:
    """0, or an interval no longer than the collect interval, means every collect is a full one."""
    assert Settings.from_env({"CACHETASKS_RECONCILE_INTERVAL": "0"}).reconciles_every_collect
    assert Settings.from_env({"CACHETASKS_RECONCILE_INTERVAL": "1"}).reconciles_every_collect
    assert not Settings.from_env({"CACHETASKS_RECONCILE_INTERVAL": "2"}).reconciles_every_collect


def test_a_backend_whose_library_is_missing_stops_at_start_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing a backend whose package is not installed is a ConfigError saying which extra to install."""
    # Given a backend whose module cannot be found
    monkeypatch.setitem(EXTRAS, "gcs", ("no_such_package.storage", "gcs"))
    # When
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CACHETASKS_STORAGE": "gcs", "CACHETASKS_GCS_BUCKET": "b"})
    # Expect
    assert str(caught.value) == "CACHETASKS_STORAGE=gcs needs no_such_package.storage: pip install 'cachetasks[gcs]'"


def test_secrets_never_appear_in_the_settings_repr() -> None:
    """Celery and Flower show the settings: keys, tokens and secrets are masked."""
    env = {
        "CACHETASKS_STORAGE": "azure_sas",
        "CACHETASKS_AZURE_CONTAINER_URL": "https://a.blob.core.windows.net/c",
        "CACHETASKS_AZURE_SAS_TOKEN": "sv=1&sig=S3CRET1",
        "AWS_SECRET_ACCESS_KEY": "S3CRET2",
        "CACHETASKS_AZURE_CLIENT_SECRET": "S3CRET3",
        "RAGFLOW_CRYPTO_KEY": "S3CRET4",
        "CACHETASKS_OPENDAL_OPTIONS": '{"password": "S3CRET5"}',
    }
    assert "S3CRET" not in repr(Settings.from_env(env))


def test_importing_the_reader_loads_no_worker_or_backend_library() -> None:
    """A consumer importing cachetasks.reader pays for neither Celery, SQLAlchemy, Prometheus nor a storage SDK."""
    # Not cryptography: redis-py itself imports it.
    heavy = ["celery", "sqlalchemy", "prometheus_client", "boto3", "azure", "google", "opendal", "yaml"]
    code = "import sys, cachetasks.reader; print(' '.join(sorted(m for m in " + repr(heavy) + " if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert result.stdout.strip() == ""
