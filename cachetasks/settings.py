"""One frozen settings object, parsed from the environment once and validated up front.

With `CACHETASKS_RAGFLOW_CONF`, RAGFlow's own configuration gives the defaults (see
`ragflow_conf.py`); every variable set in the environment still wins.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from . import ragflow_conf
from .environment import EnvReader, Source, check_url, masked
from .errors import ConfigError
from .ref import PREFIX

MiB = 1024 * 1024
STORAGE_BACKENDS = ("local", "s3", "azure_sas", "azure_spn", "gcs", "opendal")
S3_LAYOUTS = ("minio", "aws_s3", "oss")  # RAGFlow's connectors for S3-compatible storage, each its own layout
AZURE_CLOUDS = ("public", "china", "government", "germany")
CRYPTO_ALGORITHMS = ("aes-128-cbc", "aes-256-cbc", "sm4-cbc")
COLLECT_QUEUE = "cachetasks.collect"
FILES_QUEUE = "cachetasks.files"

# The drivers the service ships, for database URLs that name none (RAGFlow runs on MySQL or PostgreSQL),
# and the module each driver needs, so that a missing one stops the process at start.
DRIVERS = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql", "sqlite": "pysqlite"}
DRIVER_MODULES = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pymysql": "pymysql", "pysqlite": "sqlite3"}
# The module each optional backend imports, and the extra that installs it.
EXTRAS = {
    "azure_sas": ("azure.storage.blob", "azure"),
    "azure_spn": ("azure.storage.filedatalake", "azure"),
    "gcs": ("google.cloud.storage", "gcs"),
    "opendal": ("opendal", "opendal"),
    "crypto": ("cryptography", "crypto"),
}
# What each backend needs set, as (setting, variable).
REQUIRED = {
    "azure_sas": (
        ("azure_container_url", "CACHETASKS_AZURE_CONTAINER_URL"),
        ("azure_sas_token", "CACHETASKS_AZURE_SAS_TOKEN"),
    ),
    "azure_spn": (
        ("azure_account_url", "CACHETASKS_AZURE_ACCOUNT_URL"),
        ("azure_tenant_id", "CACHETASKS_AZURE_TENANT_ID"),
        ("azure_client_id", "CACHETASKS_AZURE_CLIENT_ID"),
        ("azure_client_secret", "CACHETASKS_AZURE_CLIENT_SECRET"),
        ("azure_container_name", "CACHETASKS_AZURE_CONTAINER_NAME"),
    ),
    "gcs": (("gcs_bucket", "CACHETASKS_GCS_BUCKET"),),
}
_SECRET_FIELDS = frozenset({"s3_secret_access_key", "s3_session_token", "azure_sas_token", "azure_client_secret"})
_SECRET_FIELDS |= {"opendal_options", "crypto_key"}


@dataclasses.dataclass(frozen=True)
class Settings:
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/1"
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file in data_dir
    ragflow_conf: Path | None = None  # RAGFlow's service_conf.yaml, the source of the defaults
    storage: str = "local"
    local_root: Path | None = None  # None: data_dir / "storage"
    s3_endpoint_url: str | None = None
    s3_layout: str = "minio"
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str | None = None
    s3_addressing_style: str | None = None  # None: path with an endpoint, else boto3's choice
    s3_verify: bool = True
    s3_access_key_id: str | None = None  # None: boto3 finds credentials its own ways
    s3_secret_access_key: str | None = None
    s3_session_token: str | None = None
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 30.0
    azure_container_url: str | None = None
    azure_sas_token: str | None = None
    azure_account_url: str | None = None
    azure_tenant_id: str | None = None
    azure_client_id: str | None = None
    azure_client_secret: str | None = None
    azure_container_name: str | None = None
    azure_cloud: str = "public"
    gcs_bucket: str | None = None
    opendal_scheme: str = "mysql"
    opendal_options: tuple[tuple[str, str], ...] = ()
    crypto_enabled: bool = False
    crypto_algorithm: str = "aes-256-cbc"
    crypto_key: str | None = None
    ttl: int = 720
    collect_interval: float = 1.0
    # Seconds between full collects; the others look only at what changed. A full collect costs about
    # 1 s at 100,000 ongoing files: every 10 s is a tenth of one process's time, while what only a full
    # collect notices (TTLs to renew, keys deleted by others, documents past the window) waits at most
    # 10 s. Renewal starts when a key has half of its TTL left (6 minutes by default), far ahead; with
    # a short CACHETASKS_TTL the default shrinks to a quarter of it, so that renewal is never late.
    reconcile_interval: float = 10.0
    ongoing_window: int = 600
    ongoing_sql: str | None = None
    max_file_bytes: int = 128 * MiB
    chunk_bytes: int = 4 * MiB
    inflight_ttl: int = 30
    negative_ttl: int = 60
    db_connect_timeout: float = 5.0
    redis_timeout: float = 5.0
    concurrency: int = 16
    max_retries: int = 8
    max_cache_bytes: int = 0  # 0: no limit of our own (Redis's maxmemory still applies)
    evict_on_done: bool = False
    metrics_port: int = 0  # 0: no metrics endpoint in this process
    metrics_host: str = "127.0.0.1"
    task_streams: tuple[str, ...] | None = None  # None: RAGFlow's streams found in the cache's Redis; (): none
    # Where each variable that was set came from: the environment or RAGFlow's file (for `check`).
    sources: tuple[Source, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def __repr__(self) -> str:
        # Celery shows its configuration (`inspect conf`, Flower), and this object is part of it.
        fields = (f"{f.name}={self._shown(f.name)!r}" for f in dataclasses.fields(self) if f.repr)
        return f"Settings({', '.join(fields)})"

    def _shown(self, name: str) -> object:
        value = getattr(self, name)
        return "***" if name in _SECRET_FIELDS and value else masked(value)

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cachetasks.sqlite3'}"

    @property
    def storage_root(self) -> Path:
        return self.local_root if self.local_root is not None else self.data_dir / "storage"

    @property
    def collect_expires(self) -> float:
        """How long a queued `collect` stays worth running (judged on the worker's clock), and how
        long after the last collect beat counts as stopped."""
        return max(5.0, 5 * self.collect_interval)

    @property
    def reconciles_every_collect(self) -> bool:
        """Whether every collect is full (an interval of 0, or no longer than the collect interval)."""
        return self.reconcile_interval <= self.collect_interval

    @property
    def decrypts(self) -> bool:
        """Whether files are decrypted: RAGFlow encrypts only with a key and an algorithm it knows,
        and stores files as they are otherwise (logging an error), so they are read as they are."""
        return self.crypto_enabled and bool(self.crypto_key) and self.crypto_algorithm in CRYPTO_ALGORITHMS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read every setting from `env`, then RAGFlow's file, then defaults; raise ConfigError on nonsense."""
        conf = EnvReader(env).path(ragflow_conf.CONF_VARIABLE)
        p = EnvReader(env, ragflow_conf.fallbacks(conf, env) if conf else None)
        ttl = p.integer("CACHETASKS_TTL", cls.ttl)
        settings = cls(
            broker_url=p.broker_url("CELERY_BROKER_URL", cls.broker_url),
            redis_url=p.url("CACHETASKS_REDIS_URL", cls.redis_url, schemes=("redis", "rediss", "unix")),
            data_dir=Path(p.text("CACHETASKS_DATA_DIR", str(cls.data_dir))),
            database_url=_database_url(p, "CACHETASKS_DATABASE_URL"),
            ragflow_conf=p.path("CACHETASKS_RAGFLOW_CONF"),
            storage=p.choice("CACHETASKS_STORAGE", cls.storage, STORAGE_BACKENDS),
            local_root=p.path("CACHETASKS_LOCAL_ROOT"),
            s3_endpoint_url=p.optional_url("CACHETASKS_S3_ENDPOINT_URL", schemes=("http", "https")),
            s3_layout=p.choice("CACHETASKS_S3_LAYOUT", cls.s3_layout, S3_LAYOUTS),
            s3_bucket=p.optional("CACHETASKS_S3_BUCKET"),
            s3_prefix=p.text("CACHETASKS_S3_PREFIX", ""),  # as written: RAGFlow joins it with "/" as it is
            s3_region=p.optional("CACHETASKS_S3_REGION") or p.optional("AWS_DEFAULT_REGION"),
            s3_addressing_style=_optional_choice(p, "CACHETASKS_S3_ADDRESSING_STYLE", ("path", "virtual", "auto")),
            s3_verify=p.boolean("CACHETASKS_S3_VERIFY", cls.s3_verify),
            s3_access_key_id=p.optional("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key=p.optional("AWS_SECRET_ACCESS_KEY"),
            s3_session_token=p.optional("AWS_SESSION_TOKEN"),
            s3_connect_timeout=p.number("CACHETASKS_S3_CONNECT_TIMEOUT", cls.s3_connect_timeout),
            s3_read_timeout=p.number("CACHETASKS_S3_READ_TIMEOUT", cls.s3_read_timeout),
            azure_container_url=p.optional_url("CACHETASKS_AZURE_CONTAINER_URL", schemes=("http", "https")),
            azure_sas_token=p.optional("CACHETASKS_AZURE_SAS_TOKEN"),
            azure_account_url=p.optional_url("CACHETASKS_AZURE_ACCOUNT_URL", schemes=("http", "https")),
            azure_tenant_id=p.optional("CACHETASKS_AZURE_TENANT_ID"),
            azure_client_id=p.optional("CACHETASKS_AZURE_CLIENT_ID"),
            azure_client_secret=p.optional("CACHETASKS_AZURE_CLIENT_SECRET"),
            azure_container_name=p.optional("CACHETASKS_AZURE_CONTAINER_NAME"),
            azure_cloud=p.choice("CACHETASKS_AZURE_CLOUD", cls.azure_cloud, AZURE_CLOUDS),
            gcs_bucket=p.optional("CACHETASKS_GCS_BUCKET"),
            opendal_scheme=p.text("CACHETASKS_OPENDAL_SCHEME", cls.opendal_scheme).lower(),
            opendal_options=p.options("CACHETASKS_OPENDAL_OPTIONS"),
            # RAGFlow's own variables, read as RAGFlow reads them: encryption is on only for "true".
            crypto_enabled=(p.raw("RAGFLOW_CRYPTO_ENABLED") or "false").lower() == "true",
            crypto_algorithm=p.raw("RAGFLOW_CRYPTO_ALGORITHM") or cls.crypto_algorithm,
            crypto_key=p.raw("RAGFLOW_CRYPTO_KEY") or None,
            ttl=ttl,
            collect_interval=p.number("CACHETASKS_COLLECT_INTERVAL", cls.collect_interval),
            reconcile_interval=p.number(
                "CACHETASKS_RECONCILE_INTERVAL", min(cls.reconcile_interval, ttl / 4), zero=True
            ),
            ongoing_window=p.integer("CACHETASKS_ONGOING_WINDOW", cls.ongoing_window),
            ongoing_sql=p.optional("CACHETASKS_ONGOING_SQL"),
            max_file_bytes=p.integer("CACHETASKS_MAX_FILE_BYTES", cls.max_file_bytes, maximum=512 * MiB),
            chunk_bytes=p.integer("CACHETASKS_CHUNK_BYTES", cls.chunk_bytes, maximum=64 * MiB),
            inflight_ttl=p.integer("CACHETASKS_INFLIGHT_TTL", cls.inflight_ttl),
            negative_ttl=p.integer("CACHETASKS_NEGATIVE_TTL", cls.negative_ttl),
            db_connect_timeout=p.number("CACHETASKS_DB_CONNECT_TIMEOUT", cls.db_connect_timeout),
            redis_timeout=p.number("CACHETASKS_REDIS_TIMEOUT", cls.redis_timeout),
            concurrency=p.integer("CACHETASKS_CONCURRENCY", cls.concurrency, maximum=1024),
            max_retries=p.integer("CACHETASKS_MAX_RETRIES", cls.max_retries, minimum=0),
            max_cache_bytes=p.integer("CACHETASKS_MAX_CACHE_BYTES", cls.max_cache_bytes, minimum=0),
            evict_on_done=p.boolean("CACHETASKS_EVICT_ON_DONE", cls.evict_on_done),
            metrics_port=p.integer("CACHETASKS_METRICS_PORT", cls.metrics_port, minimum=0, maximum=65535),
            metrics_host=p.text("CACHETASKS_METRICS_HOST", cls.metrics_host),
            task_streams=_stream_names(p, "CACHETASKS_TASK_STREAMS"),
            sources=tuple(p.sources.values()),
        )
        _validate_storage(settings)
        _validate_reconcile(settings)
        return settings


def _validate_reconcile(settings: Settings) -> None:
    """Only a full collect renews TTLs, from half of the TTL on: one must come before a key runs out."""
    if settings.reconcile_interval >= settings.ttl / 2:
        raise ConfigError(
            f"CACHETASKS_RECONCILE_INTERVAL={settings.reconcile_interval:g} must be under half of "
            f"CACHETASKS_TTL ({settings.ttl / 2:g} s), or cached files would expire between full collects"
        )


def _validate_storage(settings: Settings) -> None:
    """The chosen backend has what it needs, and its library is installed: else stop at start."""
    if settings.storage == "s3" and not (settings.s3_endpoint_url or settings.s3_region):
        raise ConfigError(
            "CACHETASKS_STORAGE=s3 needs CACHETASKS_S3_ENDPOINT_URL (MinIO or another "
            "S3-compatible server) or CACHETASKS_S3_REGION / AWS_DEFAULT_REGION (AWS S3)"
        )
    for field, variable in REQUIRED.get(settings.storage, ()):
        if not getattr(settings, field):
            raise ConfigError(f"CACHETASKS_STORAGE={settings.storage} needs {variable}")
    mysql = settings.storage == "opendal" and settings.opendal_scheme == "mysql"
    if mysql and "connection_string" not in dict(settings.opendal_options):
        raise ConfigError(
            "CACHETASKS_STORAGE=opendal with the mysql scheme needs a connection_string in CACHETASKS_OPENDAL_OPTIONS "
            "(or CACHETASKS_RAGFLOW_CONF, which gives RAGFlow's)"
        )
    needs = [settings.storage] + (["crypto"] if settings.decrypts else [])
    for backend in needs:
        if backend in EXTRAS:
            module, extra = EXTRAS[backend]
            if _missing(module):
                what = "RAGFLOW_CRYPTO_ENABLED=true" if backend == "crypto" else f"CACHETASKS_STORAGE={backend}"
                raise ConfigError(f"{what} needs {module}: pip install 'cachetasks[{extra}]'")


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # a parent package is missing
        return True


def _optional_choice(p: EnvReader, name: str, choices: tuple[str, ...]) -> str | None:
    return p.choice(name, "", ("", *choices)) or None


def _database_url(p: EnvReader, name: str) -> str:
    raw = p.optional(name)
    if raw is None:
        return ""
    backend, _, driver = check_url(name, raw, None).partition("+")
    backend = canonical_backend(backend)
    if backend not in DRIVERS:
        raise ConfigError(f"{name}: unsupported database {backend!r} (postgresql, mysql, sqlite)")
    module = DRIVER_MODULES.get(driver or DRIVERS[backend])
    if module is not None and importlib.util.find_spec(module) is None:
        raise ConfigError(f"{name}: the driver {backend}+{driver or DRIVERS[backend]} is not installed")
    return raw


def _stream_names(p: EnvReader, name: str) -> tuple[str, ...] | None:
    """None when unset (find RAGFlow's), () for `none`, else the comma-separated names, each once."""
    raw = p.optional(name)
    if raw is None:
        return None
    if raw.lower() == "none":
        return ()
    names = [part.strip() for part in raw.split(",")]
    for stream in names:
        if not stream:
            raise ConfigError(f"{name} has an empty stream name (names are separated by commas)")
        if not stream.isprintable():
            raise ConfigError(f"{name}: the stream name {stream!r} has control characters")
        if stream.startswith(PREFIX):
            raise ConfigError(f"{name}: the stream name {stream!r} starts with {PREFIX!r}, the service's own prefix")
    return tuple(dict.fromkeys(names))


def canonical_backend(name: str) -> str:
    """The database's name as SQLAlchemy spells it (`postgres://` is a common spelling of PostgreSQL)."""
    return "postgresql" if name == "postgres" else name


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """`url` without its user and password, and those as client options (kept out of any URL shown)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    options = {k: v for k, v in (("username", parts.username), ("password", parts.password)) if v}
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl(), options
