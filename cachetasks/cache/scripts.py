"""The Lua scripts of the cache protocol, read from `lua/` and registered once per client.

A line `--#include NAME` in a script is replaced by `lua/NAME.lua`: the clock, the ledger's
`drop` and the state classification are written once and shared by every script that needs them.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import redis
from redis.commands.core import Script

_INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)


@functools.cache
def source(name: str) -> str:
    """The text of `lua/{name}.lua` with its includes expanded."""
    text = (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: source(m.group(1)), text)


class Scripts:
    """Every script of the protocol, registered on one client (redis-py loads each on first use)."""

    def __init__(self, client: redis.Redis) -> None:
        def register(name: str) -> Script:
            return client.register_script(source(name))

        self.scan = register("scan")
        self.inspect = register("inspect")
        self.begin = register("begin")
        self.hold = register("hold")
        self.publish = register("publish")
        self.allocate = register("allocate")
        self.room = register("room")
        self.queued = register("queued")
        self.waiting = register("waiting")
        self.reserve = register("reserve")
        self.settle = register("settle")
        self.confirm = register("confirm")
        self.held = register("held")
        self.forget = register("forget")
        self.prune = register("prune")
        self.lock_extend = register("lock_extend")
        self.lock_release = register("lock_release")
