"""RAGFlow's own configuration as defaults for the service's settings.

`CACHETASKS_RAGFLOW_CONF` names RAGFlow's `service_conf.yaml` (or the template it is rendered
from). Its `${VAR:-default}` references are resolved against the environment as RAGFlow's
entrypoint does, and the environment variables RAGFlow reads beside it (`STORAGE_IMPL`,
`DB_TYPE`, the Azure overrides) are read the same way, to give:

- the database: the `mysql:` section, or `postgres:` with `DB_TYPE=postgres`;
- the cache: RAGFlow's Redis (`redis:`), in its database (1), and the broker on database 0;
- storage: the connector `STORAGE_IMPL` names (default `MINIO`), its layout and credentials.

The result maps the service's own variable names to values, so an explicit `CACHETASKS_*`
variable always wins over what RAGFlow's file says.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .environment import Fallback
from .errors import ConfigError

CONF_VARIABLE = "CACHETASKS_RAGFLOW_CONF"
# The shell's forms RAGFlow's templates use: ${NAME}, ${NAME:-default}, ${NAME-default}.
_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")
STORAGE_IMPLS = ("MINIO", "AWS_S3", "OSS", "AZURE_SAS", "AZURE_SPN", "GCS", "OPENDAL")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """`text` with its `${...}` references expanded as the shell expands them."""

    def expand(match: re.Match[str]) -> str:
        value = env.get(match["name"])
        if match["op"] == ":-" and not value:
            return match["default"]
        if match["op"] == "-" and value is None:
            return match["default"]
        return value or ""

    return _REFERENCE.sub(expand, text)


def load(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """RAGFlow's configuration file, its references resolved; ConfigError if it cannot be read."""
    import yaml  # only a process given RAGFlow's file needs a YAML parser

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{CONF_VARIABLE}: cannot read {path}: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(substitute(text, env))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{CONF_VARIABLE}: {path} is not valid YAML{line}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{CONF_VARIABLE}: {path} is not a mapping of sections")
    return loaded


def fallbacks(path: Path, env: Mapping[str, str]) -> dict[str, Fallback]:
    """The service's variables as RAGFlow's file and environment set them."""
    conf = load(path, env)
    found: dict[str, Fallback] = {}
    found.update(_database(conf, env))
    found.update(_redis(conf))
    found.update(_storage(conf, env))
    return found


class _Section:
    """One section of the file, read as RAGFlow reads it, naming itself in every value's origin."""

    def __init__(self, conf: Mapping[str, Any], name: str, *, required: bool = True) -> None:
        section = conf.get(name)
        if section is None and required:
            raise ConfigError(f"{CONF_VARIABLE}: RAGFlow's file has no {name}: section")
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{CONF_VARIABLE}: the {name}: section is not a mapping")
        self.name = name
        self.values: dict[str, Any] = section or {}

    def get(self, key: str, default: str = "") -> str:
        value = self.values.get(key)
        return default if value is None else str(value)

    def origin(self, *keys: str) -> str:
        return "RAGFlow " + ", ".join(f"{self.name}.{k}" for k in keys)

    def put(self, found: dict[str, Fallback], variable: str, key: str, value: str | None = None) -> None:
        """Set `variable` from this section's `key` (or from `value`, computed from it), when not empty."""
        value = self.get(key) if value is None else value
        if value:
            found[variable] = Fallback(value, self.origin(key))


def _database(conf: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Fallback]:
    db_type = env.get("DB_TYPE") or "mysql"
    dialects = {"mysql": "mysql+pymysql", "postgres": "postgresql+psycopg2"}
    if db_type not in dialects:
        raise ConfigError(f"DB_TYPE={db_type!r}: only mysql and postgres are read from RAGFlow's file")
    section = _Section(conf, db_type)
    if conf.get("encrypt_password"):
        raise ConfigError(f"{CONF_VARIABLE}: encrypted passwords are not read; set CACHETASKS_DATABASE_URL")
    user, password = quote(section.get("user"), safe=""), quote(section.get("password"), safe="")
    port = section.get("port", "3306" if db_type == "mysql" else "5432")
    url = f"{dialects[db_type]}://{user}:{password}@{section.get('host')}:{port}/{section.get('name')}"
    origin = section.origin("host", "port", "user", "password", "name") + f" (DB_TYPE={db_type})"
    return {"CACHETASKS_DATABASE_URL": Fallback(url, origin)}


def _redis(conf: Mapping[str, Any]) -> dict[str, Fallback]:
    section = _Section(conf, "redis", required=False)
    if not section.values:
        return {}
    username, password = quote(section.get("username"), safe=""), quote(section.get("password"), safe="")
    auth = f"{username}:{password}@" if password else ""
    server = f"redis://{auth}{section.get('host', 'localhost:6379')}"
    origin = section.origin("host", "password", "db")
    return {
        "CACHETASKS_REDIS_URL": Fallback(f"{server}/{section.get('db', '1')}", origin),
        "CELERY_BROKER_URL": Fallback(f"{server}/0", section.origin("host", "password") + ", database 0"),
    }


def _storage(conf: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Fallback]:
    impl = env.get("STORAGE_IMPL") or "MINIO"
    if impl not in STORAGE_IMPLS:
        raise ConfigError(f"STORAGE_IMPL={impl!r} is not one of {', '.join(STORAGE_IMPLS)}")
    found: dict[str, Fallback] = {}
    readers: dict[str, Callable[[Mapping[str, Any], Mapping[str, str], dict[str, Fallback]], None]] = {
        "MINIO": _minio,
        "AWS_S3": _s3,
        "OSS": _oss,
        "AZURE_SAS": _azure_sas,
        "AZURE_SPN": _azure_spn,
        "GCS": _gcs,
        "OPENDAL": _opendal,
    }
    readers[impl](conf, env, found)
    return {name: Fallback(f.value, f"{f.origin} (STORAGE_IMPL={impl})") for name, f in found.items()}


def _minio(conf: Mapping[str, Any], env: Mapping[str, str], found: dict[str, Fallback]) -> None:
    minio = _Section(conf, "minio")
    secure = minio.get("secure", "false").lower() in ("true", "1", "yes")
    found["CACHETASKS_STORAGE"] = Fallback("s3", minio.origin("host"))
    found["CACHETASKS_S3_LAYOUT"] = Fallback("minio", minio.origin("host"))
    found["CACHETASKS_S3_ENDPOINT_URL"] = Fallback(
        f"{'https' if secure else 'http'}://{minio.get('host')}", minio.origin("host", "secure")
    )
    minio.put(found, "AWS_ACCESS_KEY_ID", "user")
    minio.put(found, "AWS_SECRET_ACCESS_KEY", "password")
    minio.put(found, "CACHETASKS_S3_BUCKET", "bucket")
    minio.put(found, "CACHETASKS_S3_PREFIX", "prefix_path")
    if secure and minio.get("verify", "true").lower() not in ("true", "1"):
        found["CACHETASKS_S3_VERIFY"] = Fallback("false", minio.origin("verify"))


def _s3_like(section: _Section, layout: str, found: dict[str, Fallback]) -> None:
    found["CACHETASKS_STORAGE"] = Fallback("s3", section.origin("endpoint_url"))
    found["CACHETASKS_S3_LAYOUT"] = Fallback(layout, section.origin("bucket", "prefix_path"))
    section.put(found, "CACHETASKS_S3_ENDPOINT_URL", "endpoint_url")
    section.put(found, "CACHETASKS_S3_BUCKET", "bucket")
    section.put(found, "CACHETASKS_S3_PREFIX", "prefix_path")
    section.put(found, "CACHETASKS_S3_ADDRESSING_STYLE", "addressing_style")
    if section.get("access_key") and section.get("secret_key"):  # RAGFlow passes keys only as a pair
        section.put(found, "AWS_ACCESS_KEY_ID", "access_key")
        section.put(found, "AWS_SECRET_ACCESS_KEY", "secret_key")
        section.put(found, "AWS_SESSION_TOKEN", "session_token")


def _s3(conf: Mapping[str, Any], env: Mapping[str, str], found: dict[str, Fallback]) -> None:
    s3 = _Section(conf, "s3")
    _s3_like(s3, "aws_s3", found)
    region_key = "region_name" if s3.get("region_name") else "region"
    s3.put(found, "CACHETASKS_S3_REGION", region_key)


def _oss(conf: Mapping[str, Any], env: Mapping[str, str], found: dict[str, Fallback]) -> None:
    oss = _Section(conf, "oss")
    _s3_like(oss, "oss", found)
    oss.put(found, "CACHETASKS_S3_REGION", "region")


def _azure_value(section: _Section, env: Mapping[str, str], variable: str, key: str) -> Fallback | None:
    """RAGFlow's Azure connectors take each setting from an environment variable first, then the section."""
    if variable in env:
        return Fallback(env[variable], f"RAGFlow's environment {variable}") if env[variable] else None
    value = section.get(key)
    return Fallback(value, section.origin(key)) if value else None


def _azure(
    conf: Mapping[str, Any], env: Mapping[str, str], found: dict[str, Fallback], names: dict[str, tuple[str, str]]
) -> None:
    azure = _Section(conf, "azure", required=False)
    for variable, (ragflow_variable, key) in names.items():
        value = _azure_value(azure, env, ragflow_variable, key)
        if value is not None:
            found[variable] = value


def _azure_sas(conf: Mapping[str, Any], env: Mapping[str, str], found: dict[str, Fallback]) -> None:
    found["CACHETASKS_STORAGE"] = Fallback("azure_sas", "RAGFlow")
    names = {
        "CACHETASKS_AZURE_CONTAINER_URL": ("CONTAINER_URL", "container_url"),
        "CACHETASKS_AZURE_SAS_TOKEN": ("SAS_TOKEN", "sas_token"),
    }
    _azure(conf, env, found, names)


def _azure_spn(conf: Mapping[str, Any], env: Mapping[str, str], found: dict[str, Fallback]) -> None:
    found["CACHETASKS_STORAGE"] = Fallback("azure_spn", "RAGFlow")
    names = {
        "CACHETASKS_AZURE_ACCOUNT_URL": ("ACCOUNT_URL", "account_url"),
        "CACHETASKS_AZURE_CLIENT_ID": ("CLIENT_ID", "client_id"),
        "CACHETASKS_AZURE_CLIENT_SECRET": ("SECRET", "secret"),
        "CACHETASKS_AZURE_TENANT_ID": ("TENANT_ID", "tenant_id"),
        "CACHETASKS_AZURE_CONTAINER_NAME": ("CONTAINER_NAME", "container_name"),
        "CACHETASKS_AZURE_CLOUD": ("AZURE_CLOUD", "cloud"),
    }
    _azure(conf, env, found, names)


def _gcs(conf: Mapping[str, Any], env: Mapping[str, str], found: dict[str, Fallback]) -> None:
    gcs = _Section(conf, "gcs")
    found["CACHETASKS_STORAGE"] = Fallback("gcs", gcs.origin("bucket"))
    gcs.put(found, "CACHETASKS_GCS_BUCKET", "bucket")


def _opendal(conf: Mapping[str, Any], env: Mapping[str, str], found: dict[str, Fallback]) -> None:
    import json

    opendal = _Section(conf, "opendal", required=False)
    scheme = opendal.get("scheme", "mysql")
    config = opendal.values.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{CONF_VARIABLE}: opendal.config is not a mapping")
    found["CACHETASKS_STORAGE"] = Fallback("opendal", opendal.origin("scheme"))
    found["CACHETASKS_OPENDAL_SCHEME"] = Fallback(scheme, opendal.origin("scheme"))
    if scheme == "mysql":  # RAGFlow keeps the blobs in a table of its own MySQL database
        mysql = _Section(conf, "mysql")
        user, password = quote(mysql.get("user", "root"), safe=""), quote(mysql.get("password"), safe="")
        where = f"{mysql.get('host', '127.0.0.1')}:{mysql.get('port', '3306')}/{mysql.get('name', 'test_open_dal')}"
        packet = mysql.get("max_allowed_packet", "134217728")
        options = {
            "connection_string": f"mysql://{user}:{password}@{where}?max_allowed_packet={packet}",
            "table": str(config.get("oss_table") or "opendal_storage"),
        }
        origin = mysql.origin("host", "port", "user", "password", "name") + ", opendal.config.oss_table"
    else:
        options = {str(k): str(v) for k, v in config.items()}
        origin = opendal.origin("config")
    found["CACHETASKS_OPENDAL_OPTIONS"] = Fallback(json.dumps(options), origin)
