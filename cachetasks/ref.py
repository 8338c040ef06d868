"""A file's storage address, the cache key readers look it up by, and the prefix no address may take."""

from __future__ import annotations

import re
from typing import NamedTuple

from .printable import printable

PREFIX = "cachetasks:"  # the service's own keys live under it; no bucket may start with it
MAX_PART_BYTES = 1024
_PARENT = re.compile(r"(^|[/\\])\.\.($|[/\\])")
_HOLLOW = re.compile(r"//|/$|(^|/)\.(/|$)")


class FileRef(NamedTuple):
    bucket: str
    location: str

    @property
    def key(self) -> str:
        return cache_key(self.bucket, self.location)

    @property
    def shown(self) -> str:
        """The cache key as a log line shows it: escaped, so that a name cannot forge or hide a line."""
        return printable(self.key)


def cache_key(bucket: str, location: str) -> str:
    """The Redis key of a cached file: a contract with every reader, built only here."""
    return f"{bucket}/{location}"


def address_problem(bucket: object, location: object) -> str | None:
    """Why (bucket, location) is not a readable address, or None when it is.

    The rules are the same for every storage backend so that an address behaves alike
    whichever one is configured: no parent-directory parts, nothing absolute, no NUL,
    and parts short enough for S3 and for a Redis key.
    """
    if not isinstance(bucket, str) or not isinstance(location, str):
        return "bucket and location must be strings"
    if not bucket.strip() or not location.strip():
        return "empty bucket or location"
    for name, part in (("bucket", bucket), ("location", location)):
        if "\x00" in part:
            return f"{name} contains a NUL byte"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES:
            return f"{name} is longer than {MAX_PART_BYTES} bytes"
        if part.startswith(("/", "\\")):
            return f"{name} is absolute"
        if _PARENT.search(part):
            return f"{name} has a '..' part"
        if _HOLLOW.search(part):
            # Folders read `a//b`, `./a` and `a/` as other names; object stores do not.
            return f"{name} has an empty or '.' part"
    if "/" in bucket or "\\" in bucket:
        return "bucket contains a path separator"
    if bucket.startswith(PREFIX):
        return f"bucket starts with {PREFIX!r}, the service's own key prefix"
    return None
