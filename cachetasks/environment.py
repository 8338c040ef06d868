"""Typed reading of settings from the environment, with RAGFlow's configuration as a fallback.

Every value is looked up in the environment first, then in the defaults taken from RAGFlow's
`service_conf.yaml` (when `CACHETASKS_RAGFLOW_CONF` names it), and the reader remembers where
each one came from, so that `python -m cachetasks check` can say so. Every error names its
variable and never repeats a value that may hold a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError

ENVIRONMENT = "environment"

# Variables whose whole value is a secret; URLs are shown with their password masked instead.
SECRET_VARIABLES = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "CACHETASKS_AZURE_SAS_TOKEN",
        "CACHETASKS_AZURE_CLIENT_SECRET",
        "CACHETASKS_OPENDAL_OPTIONS",
        "RAGFLOW_CRYPTO_KEY",
    }
)


class Fallback(NamedTuple):
    """A value for a variable the environment leaves unset, and where it comes from."""

    value: str
    origin: str


class Source(NamedTuple):
    """Where a setting's variable came from, with its value as it may be shown."""

    variable: str
    shown: str
    origin: str


class EnvReader:
    """Typed access to the environment, then to `fallbacks`; records the origin of every value it uses."""

    def __init__(self, env: Mapping[str, str], fallbacks: Mapping[str, Fallback] | None = None) -> None:
        self.env = env
        self.fallbacks = dict(fallbacks or {})
        self.sources: dict[str, Source] = {}

    def optional(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        origin = ENVIRONMENT
        if not value and name in self.fallbacks:
            value, origin = self.fallbacks[name].value.strip(), self.fallbacks[name].origin
        if not value:
            return None
        self.sources[name] = Source(name, shown(name, value), origin)
        return value

    def raw(self, name: str) -> str | None:
        """The value as the environment has it (RAGFlow's own variables), or None when unset."""
        value = self.env.get(name)
        if value is not None:
            self.sources[name] = Source(name, shown(name, value), ENVIRONMENT)
        return value

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

    def number(self, name: str, default: float, *, zero: bool = False) -> float:
        """A finite number above 0 (or at least 0, with `zero`)."""
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not (value >= 0 if zero else value > 0) or value == float("inf"):
            raise ConfigError(f"{name}={raw!r} must be a {'non-negative' if zero else 'positive'} number")
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

    def url(self, name: str, default: str, *, schemes: tuple[str, ...]) -> str:
        return self.optional_url(name, schemes=schemes) or default

    def broker_url(self, name: str, default: str) -> str:
        url = self.url(name, default, schemes=("redis", "rediss"))
        if any(key.lower() == "password" for key, _ in parse_qsl(urlsplit(url).query)):
            # kombu fails on it at start, with a traceback rather than a reason.
            raise ConfigError(
                f"{name}: give the password in the URL's user part (redis://:PASSWORD@host), not as ?password="
            )
        return url

    def optional_url(self, name: str, *, schemes: tuple[str, ...] | None) -> str | None:
        raw = self.optional(name)
        if raw is None:
            return None
        check_url(name, raw, schemes)
        return raw

    def options(self, name: str) -> tuple[tuple[str, str], ...]:
        """A JSON object of strings, as sorted pairs (the settings object is frozen and hashable)."""
        raw = self.optional(name)
        if raw is None:
            return ()
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{name} is not a JSON object") from None  # the value may hold a password
        if not isinstance(parsed, dict) or not all(isinstance(v, str | int | bool) for v in parsed.values()):
            raise ConfigError(f"{name} must be a JSON object of strings")
        return tuple(sorted((str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in parsed.items()))


def check_url(name: str, raw: str, schemes: tuple[str, ...] | None) -> str:
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


SECRET_PARAMETERS = ("password", "passwd", "secret", "token")  # URL parameters whose value is a credential


def masked_url(url: str) -> str:
    """`url` with the password of its user part and the value of every credential parameter replaced by ***."""
    base, question, query = url.partition("?")
    try:
        parts = urlsplit(base)
        password = parts.password
    except ValueError:
        return url
    if password is not None:
        base = parts._replace(netloc=f"{parts.username or ''}:***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
    pairs = (pair.partition("=") for pair in query.split("&"))
    shown = (
        name + eq + ("***" if eq and any(word in unquote(name).lower() for word in SECRET_PARAMETERS) else value)
        for name, eq, value in pairs
    )
    return base + question + "&".join(shown)


def masked(value: object) -> object:
    """A URL masked (`masked_url`); anything else as it is."""
    return masked_url(value) if isinstance(value, str) and "://" in value else value


def shown(name: str, value: str) -> str:
    """A variable's value as logs and `check` may show it: secrets hidden, URLs without their password."""
    if name in SECRET_VARIABLES:
        return "********" if value else ""
    if "sig=" in value:  # a URL carrying a SAS signature
        return value.split("?", 1)[0] + "?********"
    return str(masked(value))
