"""One frozen settings object, parsed from the environment once and validated up front."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .ref import PREFIX

MiB = 1024 * 1024
STORAGE_BACKENDS = ("local", "s3")
COLLECT_QUEUE = "cachetasks.collect"
FILES_QUEUE = "cachetasks.files"

# The drivers the service ships, for database URLs that name none (RAGFlow runs on MySQL or PostgreSQL),
# and the module each driver needs, so that a missing one stops the process at start.
DRIVERS = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql", "sqlite": "pysqlite"}
DRIVER_MODULES = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pymysql": "pymysql", "pysqlite": "sqlite3"}


@dataclasses.dataclass(frozen=True)
class Settings:
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/1"
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file in data_dir
    storage: str = "local"
    local_root: Path | None = None  # None: data_dir / "storage"
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str | None = None
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 30.0
    ttl: int = 720
    collect_interval: float = 1.0
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

    def __repr__(self) -> str:
        # Celery shows its configuration (`inspect conf`, Flower), and this object is part of it.
        fields = (f"{f.name}={_masked(getattr(self, f.name))!r}" for f in dataclasses.fields(self))
        return f"Settings({', '.join(fields)})"

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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read every setting from `env`, falling back to defaults; raise ConfigError on nonsense."""
        p = _Reader(env)
        settings = cls(
            broker_url=p.url("CELERY_BROKER_URL", cls.broker_url, schemes=("redis", "rediss")),
            redis_url=p.url("CACHETASKS_REDIS_URL", cls.redis_url, schemes=("redis", "rediss", "unix")),
            data_dir=Path(p.text("CACHETASKS_DATA_DIR", str(cls.data_dir))),
            database_url=p.database_url("CACHETASKS_DATABASE_URL"),
            storage=p.choice("CACHETASKS_STORAGE", cls.storage, STORAGE_BACKENDS),
            local_root=p.path("CACHETASKS_LOCAL_ROOT"),
            s3_endpoint_url=p.optional_url("CACHETASKS_S3_ENDPOINT_URL", schemes=("http", "https")),
            s3_bucket=p.optional("CACHETASKS_S3_BUCKET"),
            s3_prefix=p.text("CACHETASKS_S3_PREFIX", "").strip("/"),
            s3_region=p.optional("CACHETASKS_S3_REGION") or p.optional("AWS_DEFAULT_REGION"),
            s3_connect_timeout=p.number("CACHETASKS_S3_CONNECT_TIMEOUT", cls.s3_connect_timeout),
            s3_read_timeout=p.number("CACHETASKS_S3_READ_TIMEOUT", cls.s3_read_timeout),
            ttl=p.integer("CACHETASKS_TTL", cls.ttl),
            collect_interval=p.number("CACHETASKS_COLLECT_INTERVAL", cls.collect_interval),
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
            task_streams=p.stream_names("CACHETASKS_TASK_STREAMS"),
        )
        if settings.storage == "s3" and not (settings.s3_endpoint_url or settings.s3_region):
            raise ConfigError(
                "CACHETASKS_STORAGE=s3 needs CACHETASKS_S3_ENDPOINT_URL (MinIO or another "
                "S3-compatible server) or CACHETASKS_S3_REGION / AWS_DEFAULT_REGION (AWS S3)"
            )
        return settings


class _Reader:
    """Typed access to the environment; every error names its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def optional(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def path(self, name: str) -> Path | None:
        value = self.optional(name)
        return Path(value) if value else None

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean (true or false)")

    def number(self, name: str, default: float) -> float:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise ConfigError(f"{name}={raw!r} must be a positive number")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name}={raw!r} must be at most {maximum}")
        return value

    def stream_names(self, name: str) -> tuple[str, ...] | None:
        """None when unset (find RAGFlow's), () for `none`, else the comma-separated names, each once."""
        raw = self.optional(name)
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
                raise ConfigError(
                    f"{name}: the stream name {stream!r} starts with {PREFIX!r}, the service's own prefix"
                )
        return tuple(dict.fromkeys(names))

    def url(self, name: str, default: str, *, schemes: tuple[str, ...]) -> str:
        return self.optional_url(name, schemes=schemes) or default

    def optional_url(self, name: str, *, schemes: tuple[str, ...]) -> str | None:
        raw = self.optional(name)
        if raw is None:
            return None
        _check_url(name, raw, schemes)
        return raw

    def database_url(self, name: str) -> str:
        raw = self.optional(name)
        if raw is None:
            return ""
        backend, _, driver = _check_url(name, raw, None).partition("+")
        backend = canonical_backend(backend)
        if backend not in DRIVERS:
            raise ConfigError(f"{name}: unsupported database {backend!r} (postgresql, mysql, sqlite)")
        module = DRIVER_MODULES.get(driver or DRIVERS[backend])
        if module is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{name}: the driver {backend}+{driver or DRIVERS[backend]} is not installed")
        return raw


def canonical_backend(name: str) -> str:
    """The database's name as SQLAlchemy spells it (`postgres://` is a common spelling of PostgreSQL)."""
    return "postgresql" if name == "postgres" else name


def _masked(value: object) -> object:
    """A URL with its password replaced by ***; anything else as it is."""
    if not isinstance(value, str) or "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    userinfo = f"{parts.username or ''}:***@"
    return parts._replace(netloc=userinfo + parts.netloc.rsplit("@", 1)[1]).geturl()


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """`url` without its user and password, and those as client options (kept out of any URL shown)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    options = {k: v for k, v in (("username", parts.username), ("password", parts.password)) if v}
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl(), options


def _check_url(name: str, raw: str, schemes: tuple[str, ...] | None) -> str:
    """Return the URL's scheme, or raise without echoing the URL (it may hold a password)."""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{name} is not a valid URL") from None
    if not parts.scheme or "://" not in raw:
        raise ConfigError(f"{name} is not a valid URL (expected scheme://...)")
    if schemes is not None and parts.scheme not in schemes:
        raise ConfigError(f"{name} must use one of the schemes {', '.join(schemes)}, not {parts.scheme!r}")
    return parts.scheme
